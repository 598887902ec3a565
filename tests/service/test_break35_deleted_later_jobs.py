"""Break session 35: a job record a later release wrote (a higher schema: kept on disk, unread, since
tidy34) that names a user is removed by that user's DELETE, with the job's log, result and artifacts.
Before: the runner never read the record, so `forget_jobs` never saw it; the DELETE answered 200 and
the record naming them, the log and the adapter trained on their comparisons stayed on disk (an
operator who rolled back after an upgrade kept a deleted user's data)."""

from __future__ import annotations

import json
import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding

GONE, KEPT = "break35-gone", "break35-kept"
THEIRS, OTHERS = "19c0ffee003-aaaaaaaa", "19c0ffee003-bbbbbbbb"


def later_record(job_id: str, tenant: str, user: str, created_at: float) -> bytes:
    """An adapter job's record as a later release (schema 3, a field this one does not know) wrote it."""
    return json.dumps({"schema_version": 3, "id": job_id, "kind": "adapter", "params": {"tenant": tenant, "user": user},
                       "state": "succeeded", "progress": 1.0, "metrics": {}, "log_tail": [f"trained {user}"], "attempts": 1,
                       "priority": 5, "created_at": created_at, "started_at": created_at + 1, "finished_at": created_at + 9}).encode()


def test_a_later_releases_job_naming_a_deleted_user_goes_with_them(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    jobs.mkdir(parents=True)
    before = time.time() - 3600
    for job_id, user in ((THEIRS, GONE), (OTHERS, KEPT)):
        (jobs / f"{job_id}.job.json").write_bytes(later_record(job_id, "acme", user, before))
        (jobs / f"{job_id}.log").write_text(f"adapter job of {user}\n")
        (jobs / f"{job_id}.result.json").write_text(json.dumps({"user": user}))
        (jobs / "artifacts" / job_id).mkdir(parents=True)
        (jobs / "artifacts" / job_id / "adapter_config.json").write_text(json.dumps({"user": user}))
    with server, svc.client("acme") as acme:
        for user in (GONE, KEPT):
            r = acme.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
            assert r.status_code == 201, r.text
        d = acme.delete(f"/v1/users/{GONE}")
        assert d.status_code == 200, d.text
        assert d.json()["deleted"]["job_files"] == 4, d.json()  # record, log, result, the artifact's file
        assert files_holding(jobs, GONE) == []
        # the other user's later record is kept, whole, for the release that wrote it
        assert (jobs / f"{OTHERS}.job.json").read_bytes() == later_record(OTHERS, "acme", KEPT, before)
        assert (jobs / "artifacts" / OTHERS / "adapter_config.json").is_file()
