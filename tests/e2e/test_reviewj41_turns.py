"""Turns across tenants read from the job records at a restart (real worker processes): what counts as a tenant's
last start. Records a previous process left are written into the folder before the restart, as it left them."""

from __future__ import annotations

import time

import msgspec

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.runner import LocalJobRunner, RunnerConfig


def _started_order(runner: LocalJobRunner, queued: dict) -> list[str]:
    runner.start()
    try:
        done = {name: runner.wait(job.id, timeout=60) for name, job in queued.items()}
    finally:
        runner.stop()
    assert all(job.state == "succeeded" for job in done.values()), done
    return sorted(done, key=lambda name: done[name].started_at)


def test_a_tenants_latest_start_is_its_turn_at_a_restart_not_its_first(tmp_path):
    """reviewj41: acme started a job before globex's last one and another after it: at the restart globex's turn comes
    first (acme had the later turn), though acme's job was queued first. Ranked by a tenant's earliest start instead,
    acme went first (no test guarded the `max`)."""
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1)
    before = LocalJobRunner(config, TEST_KINDS)
    now = time.time()
    for tenant, started in (("acme", now - 100), ("globex", now - 50), ("acme", now - 10)):
        job = before.submit("work", {"tenant": tenant})
        before.store.put(msgspec.structs.replace(job, state="succeeded", attempts=1, started_at=started, finished_at=started + 1))
    queued = {name: before.submit("work", {"tenant": tenant}) for name, tenant in (("a1", "acme"), ("g1", "globex"))}
    assert _started_order(LocalJobRunner(config, TEST_KINDS), queued) == ["g1", "a1"]


def test_a_job_a_restart_queued_again_takes_a_new_turn_when_it_starts_again(tmp_path):
    """reviewj41: acme's job a1 was cut short by a restart (queued again, its start kept: acme's turn taken, so globex
    goes first). When a1 starts again that is acme's next turn: globex's b2 goes before acme's a2. Were only a job's
    first start counted, acme's turn stayed the one before the restart and a2 went before b2."""
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1)
    before = LocalJobRunner(config, TEST_KINDS)
    a1 = before.submit("work", {"tenant": "acme"})
    # as `_recover` leaves a job whose worker the restart stopped: queued again, its start and attempt kept
    before.store.put(msgspec.structs.replace(a1, state="queued", attempts=1, started_at=time.time() - 10,
                                             log_tail=["runner restarted during attempt 1; queued again"]))
    queued = {"a1": a1, **{name: before.submit("work", {"tenant": tenant}) for name, tenant in (("b1", "globex"), ("b2", "globex"), ("a2", "acme"))}}
    assert _started_order(LocalJobRunner(config, TEST_KINDS), queued) == ["b1", "a1", "b2", "a2"]
