"""A cancel ends a running job even when its worker never acts on SIGTERM.

`pluralign`'s CLI raises SIGTERM as an exception where the worker is; at a worker's start that may be
inside torch's C import of numpy, which swallows it, and the worker trained on: a job cancelled a
moment after it started stayed `running` for its whole training (test_main34_trigger_quota, once in
a full-suite run). The runner now kills such a worker `cancel_grace_s` after the SIGTERM."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_worker_that_swallows_the_cancels_sigterm_is_killed_after_the_grace_and_the_job_is_cancelled(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, cancel_grace_s=1.0), TEST_KINDS)
    runner.start()
    try:
        job = runner.submit("work", {"swallow_sigterm": True, "seconds": 60})  # then it trains for a minute
        deadline = time.monotonic() + 20
        while "importing" not in runner.get(job.id).log_tail:  # its handler is installed, the swallowing code runs
            assert time.monotonic() < deadline, runner.get(job.id)
            time.sleep(0.05)
        asked = time.monotonic()
        runner.cancel(job.id)
        cancelled = runner.wait(job.id, timeout=15)
        assert cancelled.state == "cancelled" and time.monotonic() - asked < 10
        assert cancelled.log_tail[-1] == "still running 1 s after the cancel's SIGTERM: killed (SIGKILL)"
        assert "imported; training on" in cancelled.log_tail  # it did swallow it
        assert cancelled.artifact is None and not (tmp_path / "jobs" / "artifacts" / job.id).exists()
    finally:
        runner.stop()


def test_the_cancel_grace_is_checked():
    import pytest

    with pytest.raises(ValueError, match="cancel_grace_s"):
        RunnerConfig(folder="jobs", cancel_grace_s=-1)
