"""A job recorded failed after its worker succeeded (its result's check or its finishing failed) keeps no result:
what a removal that failed, or a release before auditfail42, left of it goes at the runner's start (`_recover`)."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore

REPORT = b'{"group_by": "segment", "groups": [{"group": "value-one-user-sent"}], "worst_group_accuracy": 0.5}'


def test_a_failed_check_s_result_left_by_an_earlier_release_goes_at_the_start(tmp_path):
    folder = tmp_path / "jobs"
    store = JobStore(folder)
    now = time.time()
    failed = {"checked": "checking its result failed: [Errno 28] No space left on device",
              "finished": "finishing it failed: OSError: [Errno 28] No space left on device",
              "crashed": "exit code 1: Traceback"}  # a worker that failed: its output is what it printed, kept
    for job_id, error in failed.items():
        store.add(Job(id=job_id, kind="audit", params={"group_by": "segment"}, state="failed", created_at=now, finished_at=now,
                      error=error, metrics={"worst_group_accuracy": 0.5}, result_path=str(store.path(job_id, "result.json"))))
        store.path(job_id, "result.json").write_bytes(REPORT)
        store.path(job_id, "out").write_bytes(REPORT + b"\n")
    runner = LocalJobRunner(RunnerConfig(folder=folder), TEST_KINDS)  # not started: the start's pass runs here
    for job_id in ("checked", "finished"):
        job = runner.get(job_id)
        assert (job.metrics, job.result_path, job.error) == ({}, None, failed[job_id]), job
        assert not store.path(job_id, "result.json").exists() and not store.path(job_id, "out").exists()
    assert runner.get("crashed").metrics == {"worst_group_accuracy": 0.5} and store.path("crashed", "out").is_file()
    again = JobStore(folder)  # on disk, not only in memory
    assert again.get("checked").metrics == {} and again.get("checked").result_path is None
