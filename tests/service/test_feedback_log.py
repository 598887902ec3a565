"""The feedback log and the ingestor on temp folders: durability, replay, forgetting, the history cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time

import numpy as np
import pytest

from pluralign.store import Store, StoredPreference
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor

DIM = 8


class HashEncoder:
    """Deterministic unit vectors from the text's hash; counts what it embedded."""

    encoder_id = "hash"
    dim = DIM

    def __init__(self):
        self.calls: list[int] = []

    def encode(self, texts):
        self.calls.append(len(texts))
        out = np.stack([np.frombuffer(hashlib.sha256(t.encode()).digest()[: DIM * 4], np.int32).astype(np.float32) for t in texts]) if texts else np.zeros((0, DIM), np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def feedback(user, i, tenant="t", n=1):
    now = time.time()
    return [
        StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tenant}-{user}-{i}-{j}", prompt=f"question {i} of {user}",
                         chosen=f"good answer {i}.{j}", rejected=f"bad answer {i}.{j}", kind="comparison", created_at=now + j * 1e-6)
        for j in range(n)
    ]


def log_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()))


def test_appends_are_replayed_after_reopen_until_done(tmp_path):
    log = FeedbackLog(tmp_path)
    entries = [log.append(feedback("ann", i, n=2)) for i in range(3)]
    assert log.backlog() == (3, 6)
    log.close()  # as after kill -9: nothing but the files remains
    log = FeedbackLog(tmp_path)
    assert [[r.pref_id for r in e.rows] for e in log.pending.values()] == [[r.pref_id for r in e.rows] for e in entries]
    log.done(list(log.pending.values()))
    log.close()
    assert FeedbackLog(tmp_path).backlog() == (0, 0)
    assert len(list(tmp_path.glob("*.log"))) == 1  # only the open segment: the replayed ones were deleted


def test_a_torn_last_record_is_skipped(tmp_path):
    log = FeedbackLog(tmp_path)
    log.append(feedback("ann", 0))
    log.append(feedback("ann", 1))
    log.close()
    (segment,) = tmp_path.glob("*.log")
    segment.write_bytes(segment.read_bytes()[:-5])  # a crash in the middle of the second write
    replayed = FeedbackLog(tmp_path)
    assert [e.rows[0].pref_id for e in replayed.pending.values()] == ["t-ann-0-0"]


def test_concurrent_appends_share_fsyncs(tmp_path):
    log = FeedbackLog(tmp_path)
    threads = [threading.Thread(target=lambda k=k: [log.append(feedback(f"u{k}", i)) for i in range(50)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.backlog() == (400, 400)
    assert log.fsyncs < log.appends == 400


def test_forget_user_leaves_no_trace_in_any_segment(tmp_path):
    log = FeedbackLog(tmp_path, segment_bytes=600)  # a few records per segment: several segments
    for i in range(6):
        log.append(feedback("ann", i))
        log.append(feedback("bob", i))
    moved = [e for e in log.pending.values() if e.key == ("t", "ann")][:2]
    log.done(moved)  # some of ann's records already moved: their text is still in a segment file
    assert len(list(tmp_path.glob("*.log"))) > 2 and b"of ann" in log_bytes(tmp_path)
    assert log.forget_user("t", "ann") == 4
    assert b"of ann" not in log_bytes(tmp_path)
    assert {e.key for e in log.pending.values()} == {("t", "bob")} and log.backlog() == (6, 6)
    log.append(feedback("cid", 0))  # the log keeps working after the rewrite
    log.close()
    assert {e.key for e in FeedbackLog(tmp_path).pending.values()} == {("t", "bob"), ("t", "cid")}


def make(tmp_path, **kw):
    store = Store(str(tmp_path / "db"), "hash", DIM)
    encoder = HashEncoder()
    return store, encoder, Ingestor(FeedbackLog(tmp_path / "log"), store, encoder, **kw)


def test_the_worker_moves_feedback_in_batches_with_vectors(tmp_path):
    store, encoder, ingest = make(tmp_path, batch=16)
    with ingest.paused():
        for i in range(40):
            ingest.submit(feedback(f"u{i % 4}", i))
        assert store.count_preferences("t", "u0") == 0  # pending, not in the table yet
    deadline = time.time() + 30
    while ingest.log.backlog()[0] and time.time() < deadline:
        time.sleep(0.05)
    assert ingest.log.backlog() == (0, 0) and store.stats()["preferences"] == 40
    assert max(encoder.calls) > 3  # several feedbacks' texts per encoder call
    prompt, chosen, rejected = store.comparisons("t", "u1")
    assert prompt.shape == (10, DIM) and np.allclose(np.linalg.norm(chosen, axis=1), 1, atol=1e-5)
    ingest.close()


def test_closing_an_idle_worker_wakes_it_rather_than_waiting_for_its_next_look(tmp_path, monkeypatch):
    """The idle worker looked for pending rows every 0.5 s and `close()` (every service stop, every
    test's server) waited for that look: 0.2-0.3 s per stop. Stopping now wakes it. Its look is made
    an hour long here: before, `close()` gave up joining after 30 s with the worker still running."""
    real, waiting = FeedbackLog.wait, threading.Event()

    def an_hour(self, timeout, *args, **kwargs):
        waiting.set()
        return real(self, 3600, *args, **kwargs)

    monkeypatch.setattr(FeedbackLog, "wait", an_hour)
    _, _, ingest = make(tmp_path)
    waiting.wait()  # the worker is idle, waiting for rows
    ingest.close()
    assert not ingest._thread.is_alive()


def _can_raise_a_threads_priority() -> bool:
    """Whether this process may give a thread it lowered to nice 19 its priority back (root, CAP_SYS_NICE or RLIMIT_NICE)."""
    answer = []

    def probe():
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, mine)
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return answer == [True]


@pytest.mark.skipif(not hasattr(os, "setpriority") or not _can_raise_a_threads_priority(),
                    reason="a thread's priority can be raised only with CAP_SYS_NICE or RLIMIT_NICE")
def test_a_stopped_workers_batch_runs_at_the_stoppers_priority(tmp_path):
    """The worker embeds at nice 19 and `close()` (the service's stop) waits up to 30 s for its batch. On a core
    kept busy by other work a nice-19 thread gets ~1.5% of it: `pluralign serve`'s SIGTERM waited for a batch of an
    import well past 15 s, and once killed (-9) its last thread, still at nice 19, took more than 10 s more to exit
    (tests/e2e/test_break36_slow_clients.py's server, 6 of 6 runs pinned to one core beside one `yes`); a LiveServer
    gave up its 10 s wait for the stop before refits-dropped.json was written (test_refit42_backlog, 2 of 5 beside two).
    `stop()` now gives the worker the stopper's priority: what the stop waits for is no longer the last thing to run."""
    embedding, go_on, nice = threading.Event(), threading.Event(), []

    class Held(HashEncoder):
        def encode(self, texts):
            embedding.set()
            assert go_on.wait(30)
            nice.append(os.getpriority(os.PRIO_PROCESS, 0))  # on Linux, this thread's own
            return super().encode(texts)

    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), Held())
    ingest.submit(feedback("ann", 0))
    assert embedding.wait(30)  # the worker's batch is under way, at nice 19
    ingest.stop()
    go_on.set()
    ingest.close()
    assert nice == [os.getpriority(os.PRIO_PROCESS, 0)], nice  # 19 before


def test_flush_user_moves_only_that_users_rows(tmp_path):
    store, _, ingest = make(tmp_path)
    with ingest.paused():
        ingest.submit(feedback("ann", 0))
        ingest.submit(feedback("bob", 0))
        assert ingest.flush_user("t", "ann") == 1
        assert store.count_preferences("t", "ann") == 1 and store.count_preferences("t", "bob") == 0
        assert store.search("t", "ann", HashEncoder().encode(["question 0 of ann"])[0], 1)[0][1] == pytest.approx(0, abs=1e-5)
        assert ingest.log.backlog() == (1, 1)
    ingest.close()


def test_rows_moved_before_a_crash_are_not_moved_twice(tmp_path):
    store, encoder, ingest = make(tmp_path)
    with ingest.paused():
        entry = ingest.log.append(feedback("ann", 0, n=2))
        vectors = encoder.encode(["x", "y"])
        store.add_preferences(entry.rows, vectors, vectors, vectors)  # moved; the crash comes before log.done
        ingest.log.append(feedback("ann", 1))
        ingest.stop()
    ingest.close()
    store, _, ingest = make(tmp_path)
    ingest.flush()
    assert ingest.moved == 1  # only the record that never reached the table was moved
    assert store.count_preferences("t", "ann") == 3
    ingest.close()


def test_forgotten_rows_are_never_moved(tmp_path):
    store, _, ingest = make(tmp_path)
    with ingest.paused():
        ingest.submit(feedback("ann", 0))
        assert ingest.forget_user("t", "ann") == 1
    assert ingest.flush() == 0 and store.count_preferences("t", "ann") == 0
    ingest.close()


def test_cached_history_follows_writes_and_deletes(tmp_path):
    store = Store(str(tmp_path), "hash", DIM)
    encoder = HashEncoder()

    def add(user, i):
        rows = feedback(user, i)
        v = encoder.encode([rows[0].prompt])
        store.add_preferences(rows, v, v, v)

    for i in range(5):
        add("ann", i)
    query = encoder.encode(["question 3 of ann"])[0]
    assert store.search("t", "ann", query, 1)[0][0].pref_id == "t-ann-3-0"  # a LanceDB vector search
    store.wait_warm()  # meanwhile the user's history was loaded into the cache
    assert len(store.histories) == 1
    misses = store.histories.misses
    add("ann", 5)  # write-through: the cached history takes the new row
    hits = store.search("t", "ann", encoder.encode(["question 5 of ann"])[0], 2)
    assert hits[0][0].pref_id == "t-ann-5-0" and store.histories.misses == misses
    lance = store.preferences.search(query, vector_column_name="prompt_vec").distance_type("cosine").where("user_id = 'ann'", prefilter=True).limit(3).to_arrow()
    assert [h.pref_id for h, _ in store.search("t", "ann", query, 3)] == lance.column("pref_id").to_pylist()
    store.delete_user("t", "ann")
    assert store.search("t", "ann", query, 3) == [] and store.count_comparisons("t", "ann") == 0
    store.wait_warm()  # the empty history is cached now: searching it finds nothing, without error
    assert store.search("t", "ann", query, 3) == [] and len(store.histories) == 1


def test_asyncio_appends_are_durable_and_share_rounds(tmp_path):
    log = FeedbackLog(tmp_path)

    async def many():
        return await asyncio.gather(*(log.append_async(feedback(f"u{i}", i)) for i in range(50)))

    entries = asyncio.run(many())
    assert sorted(e.rows[0].pref_id for e in entries) == sorted(f"t-u{i}-{i}-0" for i in range(50))
    assert log.fsyncs < 50  # the 50 queued at once went out in a few rounds
    log.close()
    assert FeedbackLog(tmp_path).backlog() == (50, 50)


def test_oldest_filters_by_tenant_and_stops_at_a_seq(tmp_path):
    """What `Ingestor.flush(tenant)` moves: that tenant's entries pending when it was called."""
    log = FeedbackLog(tmp_path)
    assert log.last_seq() is None
    a1, b1, a2 = log.append(feedback("ann", 1, "a")), log.append(feedback("bob", 1, "b")), log.append(feedback("ann", 2, "a"))
    upto = log.last_seq()
    assert upto == a2.seq
    a3 = log.append(feedback("ann", 3, "a"))  # acknowledged after the call: left to the worker
    assert log.oldest(10, "a", upto) == [a1, a2]
    assert log.oldest(1, "a", upto) == [a1]
    assert log.oldest(10, None, upto) == [a1, b1, a2]
    assert log.oldest(10, "a") == [a1, a2, a3] and log.oldest(10, "c") == []
    log.close()
