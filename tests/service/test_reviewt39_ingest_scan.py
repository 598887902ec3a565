"""Review of session 39's ingest turns (dd7a243): the worker's batch (`Ingestor._next_batch`) asks the log for
each tenant's oldest records (`FeedbackLog.oldest_per_tenant`). That walked every pending record, under the
log's lock (the one every acknowledged append waits on), once per batch of 64 records: a backlog of N
records (a restart replaying it, imports queued behind a slow encoder) cost N/64 walks of N records, about
30 ms a batch at 100,000 records (~24 s of walking to drain them, each append waiting behind it), where the
log's `oldest` stops after 64. Now the log keeps each tenant's pending records in order, and a batch costs
the same whatever the backlog."""

from __future__ import annotations

import time

from pluralign.store.feedback_log import FeedbackLog, frame
from tests.service.test_feedback_log import feedback

TENANTS = ("acme", "globex", "initech")


def replayed_log(folder, records: int) -> FeedbackLog:
    """A log whose folder holds `records` pending one-row records of three tenants (as after a restart)."""
    folder.mkdir()
    (folder / f"{1:012d}.log").write_bytes(b"".join(
        frame(feedback(f"u{i % 500}", i, tenant=TENANTS[i % 3])) for i in range(records)))
    return FeedbackLog(folder)


def best_seconds(fn, tries: int = 5) -> float:
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_a_batchs_turns_cost_the_same_whatever_the_backlog(tmp_path):
    small, large = replayed_log(tmp_path / "small", 300), replayed_log(tmp_path / "large", 60_000)
    try:
        for log in (small, large):  # each tenant's oldest, in order, and no user held back
            turns = log.oldest_per_tenant(64, skip={("globex", "u1")})
            assert sorted(turns) == list(TENANTS) and all(len(t) == 64 for t in turns.values())
            assert all([e.seq for e in t] == sorted(e.seq for e in t) and all(e.key[0] == name for e in t) for name, t in turns.items())
            assert ("globex", "u1") not in {e.key for e in turns["globex"]}
            assert turns["acme"][0] is next(iter(log.pending.values()))
        small_s = best_seconds(lambda: small.oldest_per_tenant(64))
        large_s = best_seconds(lambda: large.oldest_per_tenant(64))
        assert large_s < 10 * small_s + 0.002, f"one batch's turns took {large_s * 1000:.1f} ms with 60,000 records pending " \
                                               f"({small_s * 1000:.2f} ms with 300)"
    finally:
        small.close()
        large.close()


def test_moved_and_forgotten_records_leave_the_turns(tmp_path):
    log = replayed_log(tmp_path / "log", 30)
    try:
        first = log.oldest_per_tenant(64)
        log.done(first["acme"][:3])
        log.forget_user("globex", first["globex"][0].key[1])
        turns = log.oldest_per_tenant(64)
        assert [e.seq for e in turns["acme"]] == [e.seq for e in first["acme"][3:]]
        assert first["globex"][0].key not in {e.key for e in turns["globex"]}
        assert len(turns["globex"]) == len(first["globex"]) - 1  # u-keys of 30 records: one each
        log.done(turns["initech"])
        assert sorted(log.oldest_per_tenant(64)) == ["acme", "globex"]  # a tenant with nothing pending has no turn
    finally:
        log.close()
