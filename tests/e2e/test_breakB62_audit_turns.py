"""Session 62 (breakB62): a careless admin's audits against a tenant's training, on the real runner (worker processes).

A dashboard script polling `GET /admin/audits/fairness?group_by=seg&tenant=acme&since=<a day ago>&wait=0` asks a new
audit at each poll (its `since` moves, so no queued audit is the same one). Within a tenant's turn its audits went
before its training, each of them: while one more audit arrived before the last one ended, acme's queued training never
started (its users' adapters never trained). Now a tenant's training waits behind one audit of its own at most."""

from __future__ import annotations

from tests.e2e.job_kinds import TEST_KINDS, work
from tests.stores import wait_for as _until
from training.jobs.kinds import JobKind
from training.jobs.runner import LocalJobRunner, RunnerConfig

KINDS = {**TEST_KINDS, "audit": JobKind("audit", work, priority=0)}


def test_an_audit_arriving_while_the_tenants_audit_runs_waits_for_its_queued_training(tmp_path):
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1), KINDS)
    train = runner.submit("work", {"tenant": "acme"})
    first = runner.submit("audit", {"tenant": "acme", "seconds": 120.0})  # runs until cancelled below
    runner.start()
    try:
        _until(lambda: runner.get(first.id).state == "running", 60)
        assert runner.get(train.id).state == "queued"  # the audit went first: the one worker is its
        polled = runner.submit("audit", {"tenant": "acme", "since": 1})  # the next poll's audit, while the first runs
        runner.cancel(first.id)  # the first ends (as one that finished would): the worker is free
        done = {name: runner.wait(job.id, timeout=60) for name, job in (("train", train), ("polled", polled))}
    finally:
        runner.stop()
    assert all(j.state == "succeeded" for j in done.values()), done
    # before: the polled audit started first (and each audit polled while the last ran after it: the training never)
    assert done["train"].started_at < done["polled"].started_at, done


def test_an_audit_that_went_ahead_of_no_training_puts_the_tenants_next_audit_behind_none(tmp_path):
    """review breakB62: a tenant whose last start was an audit had its next audit put behind its training, whether or
    not that last audit went ahead of any: acme's audit ran alone; its next one, asked after a training of acme's was
    queued (a caller waiting on it, `wait=60`), waited for that training, which no audit had kept waiting. Now only the
    training that waited through the tenant's last audit goes before its next one."""
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1), KINDS)
    runner.start()
    try:
        alone = runner.submit("audit", {"tenant": "acme"})
        assert runner.wait(alone.id, timeout=60).state == "succeeded"  # no training of acme's was queued: it went ahead of none
        other = runner.submit("work", {"tenant": "globex", "seconds": 120.0})  # the one worker busy until cancelled below
        _until(lambda: runner.get(other.id).state == "running", 60)
        train = runner.submit("work", {"tenant": "acme"})  # queued after acme's audit ended
        asked = runner.submit("audit", {"tenant": "acme", "since": 1})
        runner.cancel(other.id)
        done = {name: runner.wait(job.id, timeout=60) for name, job in (("train", train), ("asked", asked))}
    finally:
        runner.stop()
    assert all(j.state == "succeeded" for j in done.values()), done
    assert done["asked"].started_at < done["train"].started_at, done  # before: the training first
