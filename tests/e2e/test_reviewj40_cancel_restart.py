"""A job cancelled while it runs is not run again after the runner stops (review of jobs40).

A cancel SIGTERMs the worker and, `cancel_grace_s` later, SIGKILLs it (`LocalJobRunner._poll_one`). A
service stopped inside that grace (or killed before the worker exited) left the job `running`/`queued`
with `cancel_requested`, and the next start trained it again from the start, only to record it cancelled
at the end: a worker's time (and the tenant's quota) spent on a job its admin cancelled."""

from __future__ import annotations

import time

import msgspec

from tests.e2e.job_kinds import TEST_KINDS, wait_rounds
from training.jobs.record import Job
from training.jobs.runner import LocalJobRunner, RunnerConfig


def _swallowing_job_cancelled(runner: LocalJobRunner) -> Job:
    job = runner.submit("work", {"swallow_sigterm": True, "seconds": 60})
    deadline = time.monotonic() + 20
    while "importing" not in runner.get(job.id).log_tail:  # its handler is installed, the swallowing code runs
        assert time.monotonic() < deadline, runner.get(job.id)
        time.sleep(0.05)
    runner.cancel(job.id)
    wait_rounds(runner)  # a round has looked at it since (a sleep of 0.3 s: maybe none, on a busy machine)
    assert runner.get(job.id).state == "running"  # the SIGTERM swallowed, inside the grace
    return job


def test_a_cancelled_job_whose_runner_stops_inside_the_grace_ends_cancelled_and_is_not_run_again(tmp_path):
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, cancel_grace_s=60.0)
    runner = LocalJobRunner(config, TEST_KINDS)
    runner.start()
    try:
        job = _swallowing_job_cancelled(runner)
    finally:
        runner.stop()
    stopped = runner.get(job.id)
    assert stopped.state == "cancelled", stopped
    assert stopped.artifact is None and not (tmp_path / "jobs" / "artifacts" / job.id).exists()

    again = LocalJobRunner(config, TEST_KINDS)
    again.start()
    try:
        wait_rounds(again)  # its first rounds would have launched it again
        assert again.get(job.id).state == "cancelled" and again.get(job.id).attempts == 1
    finally:
        again.stop()


def test_a_cancelled_job_left_running_by_a_killed_service_ends_cancelled_at_the_next_start(tmp_path):
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05)
    runner = LocalJobRunner(config, TEST_KINDS)
    job = runner.submit("work", {"seconds": 60})
    # what a service killed (kill -9) after the cancel was recorded, before its worker exited, leaves
    runner.store.put(msgspec.structs.replace(job, state="running", attempts=1, cancel_requested=True, started_at=time.time(),
                                             artifact=str(tmp_path / "jobs" / "artifacts" / job.id)))
    (tmp_path / "jobs" / "artifacts" / job.id).mkdir(parents=True)
    again = LocalJobRunner(config, TEST_KINDS)
    again.start()
    try:
        wait_rounds(again)  # its first rounds would have launched it again
        recovered = again.get(job.id)
        assert (recovered.state, recovered.attempts) == ("cancelled", 1), recovered
        assert recovered.finished_at is not None and recovered.artifact is None
        assert not (tmp_path / "jobs" / "artifacts" / job.id).exists()
    finally:
        again.stop()
