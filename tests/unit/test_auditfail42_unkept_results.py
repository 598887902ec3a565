"""A job recorded failed after its worker succeeded (its result's check or its finishing failed) keeps no result:
what a removal that failed, or a release before auditfail42, left of it goes at the runner's start (`_recover`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.store import JobStore

REPORT = b'{"group_by": "segment", "groups": [{"group": "value-one-user-sent"}], "worst_group_accuracy": 0.5}'
FAILED = {"checked": "checking its result failed: [Errno 28] No space left on device",
          "finished": "finishing it failed: OSError: [Errno 28] No space left on device",
          "crashed": "exit code 1: Traceback"}  # a worker that failed


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
    # a worker that failed: its record as it was, its output (a result line it printed, never checked) gone (reviewad43)
    assert runner.get("crashed").error == FAILED["crashed"] and not store.path("crashed", "out").exists()
    again = JobStore(folder)  # on disk, not only in memory
    assert again.get("checked").metrics == {} and again.get("checked").result_path is None


def test_a_failed_check_s_result_left_by_an_earlier_release_goes_at_the_start(tmp_path):
    folder = tmp_path / "jobs"
    leave_unkept_results(folder)
    runner = LocalJobRunner(RunnerConfig(folder=folder), TEST_KINDS)  # not started: the start's pass runs here
    assert_unkept_results_removed(runner, folder)


@pytest.mark.parametrize("then_exit", [3, "SIGKILL"])
def test_a_worker_that_printed_its_result_and_then_failed_keeps_no_output(tmp_path, then_exit):
    """reviewad43: a worker that printed its result line and then failed (a crash at interpreter shutdown, the
    out-of-memory killer) ends failed with its artifact removed, but its output (`out`), the unchecked result (an
    audit's group names, an attribute's value a user sent, and figures drawn with users a DELETE cannot find
    there), stayed until the retention purged the job. Its log (stderr) stays for the error."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    runner.start()
    try:
        job = runner.wait(runner.submit("work", {"report": {"groups": ["value-one-user-sent"]}, "then_exit": then_exit}).id)
    finally:
        runner.stop()
    assert job.state == "failed" and job.metrics == {} and job.result_path is None, job
    assert "training done" in job.log_tail, job.log_tail
    assert not runner.store.path(job.id, "out").exists()
    held = [p.name for p in (tmp_path / "jobs").rglob("*") if p.is_file() and b"value-one-user-sent" in p.read_bytes()]
    assert held == [f"{job.id}.job.json"]  # only its record, whose params here hand the worker what it prints
