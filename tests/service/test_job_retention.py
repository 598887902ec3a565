"""The job folder's retention over real HTTP (`job_retention_s`): a finished job's record, log,
data snapshot and artifact go once the retention has passed, while audits, the served artifact's
job and the newest job of each lineage stay (audits: tests/unit/test_job_retention.py). Before, every job's files stayed for good: a user's
adapter trigger adds a snapshot and an artifact every `adapter_every` comparisons."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.admin.controllers import ADMIN_HANDLERS
from service.admin.retention import ORPHAN_GRACE_S
from tests.service.test_admin import wait_job
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service

RETENTION_S = 3.0


def run_job(admin, kind: str, params: dict) -> dict:
    r = admin.post("/admin/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 201, r.text
    job = wait_job(admin, r.json()["id"], timeout=180)
    assert job["state"] == "succeeded", job
    return job


def pruned(admin) -> float:
    text = admin.get("/metrics").text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "pluralign_jobs_pruned_total")


@pytest.mark.slow  # ~15 s: kept out of the default suite for its time (make test-all runs it)
def test_finished_jobs_files_go_after_the_retention_and_what_is_still_needed_stays(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                adapter_every=10_000, job_retention_s=RETENTION_S)
    jobs_folder = tmp_path / "jobs"
    population = jobs_folder / "data" / "population"
    # what no job names: a snapshot from long ago and one just written (a submit may be about to name it),
    # and an artifact folder whose job record is gone
    old_ms = int((time.time() - RETENTION_S - ORPHAN_GRACE_S - 60) * 1000)
    population.mkdir(parents=True)
    old_orphan = population / f"comparisons-{old_ms}.jsonl"
    young_orphan = population / f"comparisons-{int(time.time() * 1000) + 10**6}.jsonl"
    for path in (old_orphan, young_orphan):
        path.write_text("{}\n")
    stray = jobs_folder / "artifacts" / "no-such-job"
    stray.mkdir(parents=True)
    (stray / "weights.bin").write_bytes(b"x")
    long_ago = time.time() - RETENTION_S - ORPHAN_GRACE_S - 60
    os.utime(stray / "weights.bin", (long_ago, long_ago))
    os.utime(stray, (long_ago, long_ago))
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        for user, likes in (("ana", "tea"), ("bo", "coffee"), ("cy", "tea")):
            give_comparisons(c, user, likes, n=6)
        svc.runtime.wait_for_background()
        ems = []
        for _ in range(2):  # the same comparisons and seed: the second is as good, so it is promoted
            ems.append(run_job(admin, "em", {"k": 2, "restarts": 1}))
            snapshot = tmp_path / ems[-1]["params"]["data"]  # shown relative to the data folder (left30)
            assert snapshot.is_file() and snapshot.parent == population  # the newest job's: kept
        snapshots = {j["id"]: tmp_path / j["params"]["data"] for j in ems}
        first, second = ems
        assert second["promoted"], second
        stay, go = {second["id"]}, [first["id"]]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(admin.get(f"/admin/jobs/{i}").status_code != 404 for i in go):
            time.sleep(0.3)
        for job_id in go:
            assert admin.get(f"/admin/jobs/{job_id}").status_code == 404
            assert not snapshots[job_id].exists()
            assert not (jobs_folder / "artifacts" / job_id).exists()
            assert not any(jobs_folder.glob(f"{job_id}.*"))
        assert {j["id"] for j in admin.get("/admin/jobs?kind=em").json()["jobs"]} == stay
        for job_id in stay:
            assert snapshots[job_id].is_file() and (jobs_folder / "artifacts" / job_id / "meta.json").is_file()
        assert not old_orphan.exists() and not stray.exists()
        assert young_orphan.is_file()
        assert pruned(admin) == len(go)
        # the service still serves as before
        assert c.post("/v1/chat/completions", json={"model": "pluralign", "user": "ana",
                                                    "messages": [{"role": "user", "content": "Tea?"}]}).status_code == 200
