"""Queued jobs start in turns per tenant over every kind of job, audits first within a tenant's turn, then arrival order (real worker processes)."""

from __future__ import annotations

import time

from tests.e2e.job_kinds import TEST_KINDS
from training.jobs.record import Job
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


def _wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def test_turns_taken_before_a_restart_still_count_after_it(tmp_path):
    """jobs41: the turns lived in memory, so after a restart every tenant counted as never having started a job: acme's
    job the restart cut short (queued again) went first again, before globex's job queued while it ran. Now a tenant's
    turn is its jobs' stored start, read again at a start: acme had its turn, globex's job goes first."""
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1)
    runner = LocalJobRunner(config, TEST_KINDS)
    runner.start()
    try:
        a1 = runner.submit("work", {"tenant": "acme", "seconds": 4.0})
        _wait_until(lambda: runner.get(a1.id).state == "running")
        b1 = runner.submit("work", {"tenant": "globex"})  # waits for the one worker
    finally:
        runner.stop()  # a1 cut short: queued again
    assert [runner.get(j.id).state for j in (a1, b1)] == ["queued", "queued"]
    again = LocalJobRunner(config, TEST_KINDS)
    again.start()
    try:
        assert again.wait(b1.id, timeout=60).state == "succeeded"
        _wait_until(lambda: again.get(a1.id).state != "queued")  # started again
        assert again.get(b1.id).started_at < again.get(a1.id).started_at  # globex's turn first, then acme's job again
    finally:
        again.stop()


def test_audits_go_first_within_their_tenants_turn_not_before_every_tenants_training(tmp_path):
    """jobs41: kind priority came before turns, so acme's three audits all started before globex's training. Now each
    turn is one tenant's: its audit first (among tenants that never had a turn too), then the next tenant's job. An
    audit goes ahead of its tenant's training for one start in a row (breakB62): acme's next turn is its training."""
    from tests.e2e.job_kinds import work
    from training.jobs.kinds import JobKind

    kinds = {**TEST_KINDS, "audit": JobKind("audit", work, priority=0)}
    runner = LocalJobRunner(RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1), kinds)
    arrivals = [("a_train", "work", "acme"), ("a_audit1", "audit", "acme"), ("a_audit2", "audit", "acme"),
                ("a_audit3", "audit", "acme"), ("g_train1", "work", "globex"), ("g_train2", "work", "globex")]
    jobs = {name: runner.submit(kind, {"tenant": tenant}) for name, kind, tenant in arrivals}
    runner.start()  # all queued before the first starts
    try:
        done = {name: runner.wait(job.id, timeout=60) for name, job in jobs.items()}
    finally:
        runner.stop()
    assert sorted(done, key=lambda name: done[name].started_at) == ["a_audit1", "g_train1", "a_train", "g_train2", "a_audit2", "a_audit3"]


def test_a_start_stamped_ahead_of_the_clock_puts_off_no_tenants_turn(tmp_path):
    """jobs41: a record whose `started_at` is later than now (the clock set back since, a data folder from a machine
    whose clock ran ahead) must not keep its tenant waiting until the clock catches up: the stored starts order the
    tenants' first turns after a restart, and every start of this process comes after them all."""
    import msgspec

    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1)
    before = LocalJobRunner(config, TEST_KINDS)
    now = time.time()
    for tenant, started in (("acme", now + 3600), ("globex", now - 60)):  # acme's stamped an hour ahead
        job = before.submit("work", {"tenant": tenant})
        before.store.put(msgspec.structs.replace(job, state="succeeded", started_at=started, finished_at=started + 1))
    queued = {name: before.submit("work", {"tenant": tenant}) for name, tenant in (("g1", "globex"), ("g2", "globex"), ("a1", "acme"))}
    runner = LocalJobRunner(config, TEST_KINDS)  # the restart
    runner.start()
    try:
        done = {name: runner.wait(job.id, timeout=60) for name, job in queued.items()}
    finally:
        runner.stop()
    assert sorted(done, key=lambda name: done[name].started_at) == ["g1", "a1", "g2"]  # not g1, g2, then a1


def test_a_job_purged_no_longer_counts_as_its_tenants_turn(tmp_path):
    """jobturn42: a job removed (a DELETE's purge, retention) counted as its tenant's turn until the next restart, which
    reads the turns from the records left: globex's g1 went before acme's a1 because of acme's job a0 that was no longer
    there, and after a restart a1 went first. Now the turns are those the held records give, with or without a restart."""
    config = RunnerConfig(folder=tmp_path / "jobs", poll_seconds=0.05, workers=1)
    runner = LocalJobRunner(config, TEST_KINDS)
    runner.start()
    try:
        g0 = runner.submit("work", {"tenant": "globex", "user": "gil"})
        assert runner.wait(g0.id, timeout=60).state == "succeeded"
        a0 = runner.submit("work", {"tenant": "acme", "user": "ann"})  # acme's turn after globex's
        assert runner.wait(a0.id, timeout=60).state == "succeeded"
    finally:
        runner.stop()
    runner.purge(a0.id)  # as ann's DELETE does
    assert LocalJobRunner(config, TEST_KINDS).store.turn("acme") == 0  # what a restart reads: acme never started a job
    g1 = runner.submit("work", {"tenant": "globex", "user": "gil"})
    a1 = runner.submit("work", {"tenant": "acme", "user": "bob"})
    runner.start()  # both queued before either starts
    try:
        done = {name: runner.wait(job.id, timeout=60) for name, job in (("g1", g1), ("a1", a1))}
    finally:
        runner.stop()
    assert sorted(done, key=lambda name: done[name].started_at) == ["a1", "g1"]  # was g1 first: a0's turn kept


def test_a_start_undone_gives_its_tenant_the_turn_it_had_before(tmp_path):
    """jobturn42: a launch whose worker never ran (the Ray runner's job it could not place, put back to the `started_at`
    it had before) kept its tenant's turn. Now the tenant's turn is what it was: none before a first start, the earlier
    start's for a job that had run before (queued again by a restart), and the same as a restart reads."""
    import msgspec

    from training.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs")
    now = time.time()
    g = store.add(Job(id="g", kind="work", params={"tenant": "globex"}, created_at=now))
    store.put(msgspec.structs.replace(g, state="succeeded", attempts=1, started_at=now, finished_at=now))
    a = store.add(Job(id="a", kind="work", params={"tenant": "acme"}, created_at=now))
    store.put(msgspec.structs.replace(a, state="running", attempts=1, started_at=now + 1))  # sent to the cluster
    assert store.turn("acme") > store.turn("globex") > 0
    store.put(msgspec.structs.replace(a, state="failed", attempts=1, started_at=None))  # never placed: never ran
    assert store.turn("acme") == 0 == JobStore(tmp_path / "jobs").turn("acme")
    b = store.add(Job(id="b", kind="work", params={"tenant": "acme"}, state="queued", created_at=now, started_at=now - 60))
    store = JobStore(tmp_path / "jobs")  # a restart: b had run before it (queued again), before globex's job
    assert store.turn("acme") < store.turn("globex")
    store.put(msgspec.structs.replace(b, state="running", started_at=now + 2))
    store.put(msgspec.structs.replace(b, state="running", started_at=now + 3))  # placed: stamped again
    assert store.turn("acme") > store.turn("globex")
    store.put(msgspec.structs.replace(b, state="failed", started_at=now - 60))  # its worker could not start
    assert store.turn("acme") < store.turn("globex")
    assert JobStore(tmp_path / "jobs").turn("acme") < JobStore(tmp_path / "jobs").turn("globex")


def test_removing_a_tenants_older_job_keeps_its_turn_and_its_latest_gives_the_one_before(tmp_path):
    """reviewj42: the turn is drawn again only when the removed job was the tenant's latest start (retention removes the
    oldest first; each draw reads all the tenant's jobs: 20,000 removes took 14 s under the store's lock, now 0.4 s)."""
    import msgspec

    from training.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs")
    now = time.time()
    for job_id, tenant, at in (("a1", "acme", now), ("g1", "globex", now + 1), ("a2", "acme", now + 2), ("a3", "acme", now + 3)):
        job = store.add(Job(id=job_id, kind="work", params={"tenant": tenant}, created_at=now))
        store.put(msgspec.structs.replace(job, state="succeeded", attempts=1, started_at=at, finished_at=at))
    latest = store.turn("acme")
    store.remove("a1")
    assert store.turn("acme") == latest > store.turn("globex")
    store.remove("a3")
    assert store.turn("acme") > store.turn("globex")  # a2's start, after globex's
    store.remove("a2")
    assert store.turn("acme") == 0 < store.turn("globex")
