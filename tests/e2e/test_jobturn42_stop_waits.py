"""A job whose worker finished while the service stops is checked and recorded before the runner's `stop` returns, also
when its check outlasts `stop`'s 10 s wait for the dispatcher: the app's later shutdown steps (`close_admin` closes the
audits' members index) come after it (real worker process; slow-marked: the wait is 10 s)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig

pytestmark = pytest.mark.slow


def test_stop_returns_after_a_finishing_jobs_check_that_outlasts_its_wait(tmp_path):
    """jobturn42 looked for an audit whose check (`Admin.keep_audit_members`, the runner's `on_succeed`) meets the members
    index `close_admin` closed, after `stop`'s 10 s join timed out: `stop` then waits for the runner's lock, which the
    dispatcher holds through the check, so the check ends first and the job is recorded succeeded."""
    events: list[str] = []
    checking = threading.Event()

    def slow_check(job):
        checking.set()
        time.sleep(11)  # past stop's 10 s join
        events.append("check ended")

    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS, on_succeed=slow_check)
    runner.start()
    job = runner.submit("work", {})
    assert checking.wait(60)
    runner.stop()
    events.append("stop returned")
    assert events == ["check ended", "stop returned"]
    assert runner.get(job.id).state == "succeeded"
