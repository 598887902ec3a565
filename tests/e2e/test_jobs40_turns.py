"""Queued jobs start in turns per tenant, in arrival order within one (real worker processes)."""

from __future__ import annotations

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def test_queued_jobs_start_round_robin_over_tenants_oldest_first_within_each(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05), TEST_KINDS)
    names = ["a1", "a2", "a3", "b1", "b2", "c1", "p1"]  # arrival order; p1 names no tenant (a job for the whole service)
    jobs = {n: runner.submit("work", {"tenant": n[0]} if n[0] != "p" else {}) for n in names}
    runner.start()  # all queued before the first starts
    try:
        done = {n: runner.wait(job.id, timeout=60) for n, job in jobs.items()}
    finally:
        runner.stop()
    assert all(j.state == "succeeded" for j in done.values())
    assert sorted(names, key=lambda n: done[n].started_at) == ["a1", "b1", "c1", "p1", "a2", "b2", "a3"]
