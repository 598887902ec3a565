"""jobs43: the runner's `on_exit` (a DELETE's forget-at-exit note of what a job may embed goes then) is told also for a
job that ends or goes without a worker ever started: cancelled or purged while queued, or one that could not start.
Only the cancel had a test (tests/service/test_jobs43_forget_keys.py); the purge's and the failed start's calls could go
unseen."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_job_purged_or_cancelled_while_queued_or_that_could_not_start_is_told_to_on_exit(tmp_path):
    kinds = {**TEST_KINDS, "broken": JobKind("broken", lambda job, out: [str(tmp_path / "no-such-program")])}
    exited: list[str] = []
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.02), kinds, on_exit=exited.append)
    purged, cancelled = runner.submit("work", {}), runner.submit("work", {})
    assert runner.purge(purged.id).state == "queued" and exited == [purged.id]  # not started: still queued
    assert runner.cancel(cancelled.id).state == "cancelled" and exited == [purged.id, cancelled.id]
    broken = runner.submit("broken", {})
    runner.start()
    try:
        # the runner's thread writes the failed record, then tells on_exit: waited for both (read between the two, the
        # record said failed while `exited` still lacked it: seen with a 0.5 s pause put between them)
        deadline = time.monotonic() + 30
        while (runner.get(broken.id).state == "queued" or broken.id not in exited) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runner.get(broken.id).state == "failed" and runner.get(broken.id).error.startswith("could not start")
        assert exited == [purged.id, cancelled.id, broken.id]  # told once its record said it ended
    finally:
        runner.stop()
    assert runner.purge(broken.id) is not None and exited.count(broken.id) == 1  # a final job's was told at its end
