"""Session 62 (breakB62): a careless admin's audits against a tenant's training, on the real runner (worker processes).

A dashboard script polling `GET /admin/audits/fairness?group_by=seg&tenant=acme&since=<a day ago>&wait=0` asks a new
audit at each poll (its `since` moves, so no queued audit is the same one). Within a tenant's turn its audits went
before its training, each of them: while one more audit arrived before the last one ended, acme's queued training never
started (its users' adapters never trained). Now a tenant's training waits behind one audit of its own at most."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS, work
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig

KINDS = {**TEST_KINDS, "audit": JobKind("audit", work, priority=0)}


def _until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def test_an_audit_arriving_while_the_tenants_audit_runs_waits_for_its_queued_training(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1), KINDS)
    train = runner.submit("work", {"tenant": "acme"})
    first = runner.submit("audit", {"tenant": "acme", "seconds": 120.0})  # runs until cancelled below
    runner.start()
    try:
        _until(lambda: runner.get(first.id).state == "running")
        assert runner.get(train.id).state == "queued"  # the audit went first: the one worker is its
        polled = runner.submit("audit", {"tenant": "acme", "since": 1})  # the next poll's audit, while the first runs
        runner.cancel(first.id)  # the first ends (as one that finished would): the worker is free
        done = {name: runner.wait(job.id, timeout=60) for name, job in (("train", train), ("polled", polled))}
    finally:
        runner.stop()
    assert all(j.state == "succeeded" for j in done.values()), done
    # before: the polled audit started first (and each audit polled while the last ran after it: the training never)
    assert done["train"].started_at < done["polled"].started_at, done
