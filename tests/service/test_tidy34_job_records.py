"""Job records across releases (`training.jobs.record`, schema 2 since a job records the request that
caused it): a record an earlier release wrote (schema 1, no `request_id`) is read; one a later release
wrote (a higher schema, with fields this one does not know) is left on disk and named as such in the
log, not as a damaged file."""

from __future__ import annotations

import json
import logging
import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

OLD, NEW = "19c0ffee001-aaaaaaaa", "19c0ffee003-bbbbbbbb"


def record(job_id: str, **fields) -> bytes:
    now = time.time()
    return json.dumps({"id": job_id, "kind": "audit", "params": {}, "state": "succeeded", "progress": 1.0, "metrics": {},
                       "log_tail": ["done"], "attempts": 1, "created_at": now - 60, "started_at": now - 59,
                       "finished_at": now - 30, **fields}).encode()


def test_an_earlier_releases_job_is_read_and_a_later_releases_is_named_and_kept(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                              caplog, monkeypatch):
    """Before: `request_id` joined the record without a new schema number, so a later field read as
    "Object contains unknown field" (what a damaged file says), and a release before `request_id`
    (edae3b2) skipped every record this one wrote, saying the same."""
    jobs = tmp_path / "data" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / f"{OLD}.job.json").write_bytes(record(OLD, schema_version=1))  # as edae3b2 wrote it
    later = record(NEW, schema_version=3, request_id="req_later", priority=5)
    (jobs / f"{NEW}.job.json").write_bytes(later)
    monkeypatch.setattr(logging.getLogger("training.jobs.store"), "handlers", [caplog.handler])  # the app's logging set-up takes root's
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("admin") as admin:
        listed = admin.get("/admin/jobs").json()
        assert [j["id"] for j in listed["jobs"]] == [OLD], listed
        shown = admin.get(f"/admin/jobs/{OLD}").json()
        assert shown["state"] == "succeeded" and shown["request_id"] is None, shown
        assert admin.get(f"/admin/jobs/{NEW}").status_code == 404
    said = [r.getMessage() for r in caplog.records if NEW in r.getMessage()]
    assert said and "job record schema 3, written by a later release of pluralign (this one reads schemas 1-2)" in said[0], said
    assert "unknown field" not in said[0], said
    assert (jobs / f"{NEW}.job.json").read_bytes() == later  # kept for the release that wrote it
