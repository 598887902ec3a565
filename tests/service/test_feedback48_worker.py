"""Session 48: the feedback worker never holds what the request paths wait for across its slow, nice-19 work.

`flush()` (an audit's submission, an export, `wait_for_background`), `paused()` and a DELETE's steps on the log
(`forget_user`, `held`) waited for the worker's lock, which the worker held through a whole batch at nice 19: on
busy cores a DELETE waited behind the lowest-priority thread of the process. Here a real feedback log and a real
LanceDB folder; the worker's encoder call is held on an event, so the order is the same on every run."""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, HashEncoder, feedback


class HeldInTheWorker(HashEncoder):
    """Embeds like HashEncoder; a call from the worker's side (not the test's thread) waits for `go_on` once
    `embedding` is set, and notes its thread's nice (Linux: a thread's own)."""

    def __init__(self, test_thread: int):
        super().__init__()
        self.test_thread = test_thread
        self.embedding, self.go_on, self.nice = threading.Event(), threading.Event(), []

    def encode(self, texts):
        if threading.get_ident() != self.test_thread:
            self.nice.append(os.getpriority(os.PRIO_PROCESS, 0))
            self.embedding.set()
            assert self.go_on.wait(30)
        return super().encode(texts)


def held_worker(tmp_path) -> tuple[Store, HeldInTheWorker, Ingestor]:
    """An Ingestor whose worker is embedding ann's and bob's rows (tenant t) and cannot go on until released."""
    store = Store(str(tmp_path / "db"), "hash", DIM)
    encoder = HeldInTheWorker(threading.get_ident())
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, encoder)
    ingest.submit(feedback("ann", 0))
    ingest.submit(feedback("bob", 0))
    assert encoder.embedding.wait(30)  # the worker's batch is being embedded
    return store, encoder, ingest


def test_a_flush_moves_the_rows_itself_while_the_worker_embeds(tmp_path):
    """An audit's flush (deadline 5 s) while the worker embeds its batch: it moves the rows itself, in the caller's
    thread, and the worker's late commit stores nothing twice. Before session 48 it waited for the worker's whole batch
    and raised StillMoving."""
    store, encoder, ingest = held_worker(tmp_path)
    try:
        began = time.monotonic()
        assert ingest.flush("t", deadline=time.monotonic() + 5) == 2
        assert time.monotonic() - began < 5
        assert store.count_preferences("t", "ann") == 1 and store.count_preferences("t", "bob") == 1
    finally:
        encoder.go_on.set()
    ingest.flush()  # the worker's commit has run (it holds the lock a flush takes): it found nothing left to store
    assert store.count_preferences("t", "ann") == 1 and store.count_preferences("t", "bob") == 1
    assert ingest.moved == 2
    ingest.close()


def test_a_delete_and_a_pause_do_not_wait_for_the_workers_embedding(tmp_path):
    """A DELETE's steps on the log (`held`, `forget_user`) and `paused()` while the worker embeds: each returns at
    once (a thread that would wait fails the join); the deleted user's rows are not stored by the worker's commit, the
    other user's are. Before session 48 the pause waited for the worker's whole batch (the DELETE's steps waited
    only for its commit: `test_the_worker_commits_at_the_callers_priority_and_embeds_at_nice_19`)."""
    store, encoder, ingest = held_worker(tmp_path)
    done = []

    def delete_and_pause():
        with ingest.held("t", "ann"):
            done.append(ingest.forget_user("t", "ann"))
        with ingest.paused():
            done.append("paused")

    thread = threading.Thread(target=delete_and_pause, daemon=True)
    thread.start()
    thread.join(5)
    encoder.go_on.set()
    assert done == [1, "paused"], done  # [1] before: the pause waited for the worker's whole batch
    ingest.flush()
    assert store.count_preferences("t", "ann") == 0 and store.count_preferences("t", "bob") == 1
    ingest.close()


def test_the_worker_commits_at_the_callers_priority_and_embeds_at_nice_19(tmp_path):
    """What holds the locks the request paths wait for (the commit into the table, the hooks) runs at the priority of
    the thread that opened the Ingestor; only the embedding runs at nice 19. Before, the commit ran at nice 19 too,
    holding the lock a DELETE takes (~1.5% of a busy core: seconds for one LanceDB append)."""
    store, encoder, ingest = held_worker(tmp_path)
    committed, mine = [], os.getpriority(os.PRIO_PROCESS, 0)
    add = store.add_preferences

    def noted(rows, *vectors):
        committed.append(os.getpriority(os.PRIO_PROCESS, 0))
        return add(rows, *vectors)

    store.add_preferences = noted
    encoder.go_on.set()
    deadline = time.monotonic() + 30
    while ingest.moved < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert encoder.nice and set(encoder.nice) == {max(mine, 19)}, encoder.nice
    assert committed and set(committed) == {mine}, committed  # [19] before
    assert np.isfinite(store.count_preferences("t", "ann"))
    ingest.close()


def test_the_hooks_and_the_threads_they_start_run_at_the_openers_priority(tmp_path):
    """The service's hooks (`on_moved`) take a user's lock (the adapter trigger), and start threads: a compaction,
    which holds the store's maintenance turn a DELETE waits for, and the refit worker at its first refit. Run on the
    nice-19 worker, they and every thread they started ran at nice 19 (a thread's nice is its creator's)."""
    mine, seen, started = os.getpriority(os.PRIO_PROCESS, 0), [], threading.Event()

    def hook(rows):
        seen.append(os.getpriority(os.PRIO_PROCESS, 0))

        def compaction():
            seen.append(os.getpriority(os.PRIO_PROCESS, 0))
            started.set()

        threading.Thread(target=compaction).start()

    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), HashEncoder(), on_moved=hook)
    ingest.submit(feedback("ann", 0))
    assert started.wait(30)
    ingest.close()
    assert seen == [mine, mine], seen  # [19, 19] before
