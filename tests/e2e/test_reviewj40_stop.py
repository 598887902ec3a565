"""A runner's stop waits for its stuck workers together, not one after another (review of jobs40).

`LocalJobRunner.stop()` SIGTERMs each running worker and SIGKILLs one still there 5 s later. It waited
for them one at a time: 4 workers that do not act on SIGTERM (a SIGTERM swallowed by C code at a worker's
start) made a shutdown take 20 s, past what a supervisor grants before its own SIGKILL."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_stop_with_four_workers_that_swallow_its_sigterm_takes_one_wait_not_four(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=4), TEST_KINDS)
    runner.start()
    try:
        jobs = [runner.submit("work", {"swallow_sigterm": True, "seconds": 60}) for _ in range(4)]
        deadline = time.monotonic() + 30
        while not all("importing" in runner.get(j.id).log_tail for j in jobs):  # each one's swallowing code runs
            assert time.monotonic() < deadline, [runner.get(j.id) for j in jobs]
            time.sleep(0.05)
    finally:
        began = time.monotonic()
        runner.stop()
        took = time.monotonic() - began
    assert took < 10, f"stop took {took:.1f} s"
    assert [runner.get(j.id).state for j in jobs] == ["queued"] * 4
