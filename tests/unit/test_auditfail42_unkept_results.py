"""A job recorded failed after its worker succeeded (its result's check or its finishing failed) keeps no result:
what a removal that failed, or a release before auditfail42, left of it goes at the runner's start (`_recover`)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore

REPORT = b'{"group_by": "segment", "groups": [{"group": "value-one-user-sent"}], "worst_group_accuracy": 0.5}'
FAILED = {"checked": "checking its result failed: [Errno 28] No space left on device",
          "finished": "finishing it failed: OSError: [Errno 28] No space left on device",
          "crashed": "exit code 1: Traceback"}  # a worker that failed: its output is what it printed, kept


def leave_unkept_results(folder: Path) -> None:
    """Records and files as a release before auditfail42 left them: each job of FAILED with its result."""
    store = JobStore(folder)
    now = time.time()
    for job_id, error in FAILED.items():
        store.add(Job(id=job_id, kind="audit", params={"group_by": "segment"}, state="failed", created_at=now, finished_at=now,
                      error=error, metrics={"worst_group_accuracy": 0.5}, result_path=str(store.path(job_id, "result.json"))))
        store.path(job_id, "result.json").write_bytes(REPORT)
        store.path(job_id, "out").write_bytes(REPORT + b"\n")


def assert_unkept_results_removed(runner, folder: Path) -> None:
    """What `leave_unkept_results` left, after `runner`'s start: the results of jobs whose worker succeeded went."""
    store = JobStore(folder)
    for job_id in ("checked", "finished"):
        job = runner.get(job_id)
        assert (job.metrics, job.result_path, job.error) == ({}, None, FAILED[job_id]), job
        assert not store.path(job_id, "result.json").exists() and not store.path(job_id, "out").exists()
    assert runner.get("crashed").metrics == {"worst_group_accuracy": 0.5} and store.path("crashed", "out").is_file()
    again = JobStore(folder)  # on disk, not only in memory
    assert again.get("checked").metrics == {} and again.get("checked").result_path is None


def test_a_failed_check_s_result_left_by_an_earlier_release_goes_at_the_start(tmp_path):
    folder = tmp_path / "jobs"
    leave_unkept_results(folder)
    runner = LocalJobRunner(RunnerConfig(folder=folder), TEST_KINDS)  # not started: the start's pass runs here
    assert_unkept_results_removed(runner, folder)
