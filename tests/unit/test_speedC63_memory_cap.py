"""The job runner's memory cap (`RunnerConfig.memory_mb`, the service's `job_memory_mb`) on a worker of a few lines of
Python (tests/e2e/job_kinds.py), without a service: the checks of test_admin.py's slow-marked
`test_a_job_over_the_memory_cap_is_killed_...` (a service of its own and an EM job's worker: ~14 CPU-s) on the runner,
which is where the worker is measured, killed and its job failed with the figure."""

from __future__ import annotations

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_a_worker_over_the_memory_cap_is_killed_and_its_job_failed_with_the_figure(tmp_path):
    """A cap of 1 MB, below what any Python interpreter holds: the worker (told to run 30 s) is killed at the first poll
    that reads it, its job failed naming what it held, the cap and the setting, that line last in its log tail; its
    artifact folder goes as any failed job's. A worker under the cap (none set) succeeds on the same runner's kind."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, memory_mb=1), TEST_KINDS)
    runner.start()
    try:
        job = runner.wait(runner.submit("work", {"seconds": 30, "save": "weights"}).id, timeout=60)
    finally:
        runner.stop()
    assert job.state == "failed", job
    assert "memory cap exceeded" in job.error and "over the cap of 1 MB (setting job_memory_mb)" in job.error, job.error
    held = float(job.error.split("held ")[1].split(" MB")[0])
    assert held >= 1, job.error
    assert job.log_tail[-1] == job.error, job.log_tail
    assert "training done" not in job.log_tail, job.log_tail  # killed, not run to its end
    assert job.artifact is None and not (tmp_path / "jobs" / "artifacts" / job.id).exists(), job
    uncapped = LocalJobRunner(RunnerConfig(folder=tmp_path / "uncapped", poll_seconds=0.05), TEST_KINDS)
    uncapped.start()
    try:
        assert uncapped.wait(uncapped.submit("work", {}).id).state == "succeeded"
    finally:
        uncapped.stop()
