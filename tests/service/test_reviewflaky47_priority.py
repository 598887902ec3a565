"""Review of flaky47: a stop gives the feedback worker and the start's sweep of claims the stopper's priority
(`Ingestor.stop`), so that what the stop waits for does not run at nice 19 beside busy cores. Here the sweep: a real
folder store with claims an earlier release left, a real feedback log."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pluralign.store import Store
from pluralign.store import ingest as ingest_module
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, HashEncoder, _can_raise_a_threads_priority, feedback
from tests.stores import claimed_store, claims_left_by_an_earlier_release

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority") or not _can_raise_a_threads_priority(),
                                reason="a thread's priority can be raised only with CAP_SYS_NICE or RLIMIT_NICE")


def sweep_priorities(tmp_path, held: threading.Event | None = None) -> tuple[Ingestor, list[int], threading.Event]:
    """An Ingestor on a store with claims an earlier release left (its start sweeps them). Returns it, the list the
    sweep's thread appends its nice to as it lists the table's users, and an event set once it is listing. `held`:
    the listing waits for it first (a long listing: a big table)."""
    store, _, folder = claimed_store(tmp_path)
    claims_left_by_an_earlier_release(store, ["old"])
    owners, listing, nice = store.preference_owners, threading.Event(), []

    def listed():
        listing.set()
        if held is not None:
            assert held.wait(30)
        nice.append(os.getpriority(os.PRIO_PROCESS, 0))  # on Linux, this thread's own
        return owners()

    store.preference_owners = listed
    return Ingestor(FeedbackLog(folder), store, HashEncoder()), nice, listing


def test_a_stopped_sweep_of_claims_goes_on_at_the_stoppers_priority(tmp_path):
    """`close()` waits for the start's sweep as it waits for the worker's batch: the sweep's listing under way (at
    nice 19) when the stop comes goes on at the stopper's priority. Before this test nothing checked the sweep's half
    of `stop` (removing `_priority_of_caller(self._sweeping)` failed no test)."""
    go_on = threading.Event()
    ingest, nice, listing = sweep_priorities(tmp_path, held=go_on)
    try:
        assert listing.wait(30)  # the sweep lowered itself and lists the table's users
        ingest.stop()
    finally:
        go_on.set()
        ingest.close()
    assert nice == [os.getpriority(os.PRIO_PROCESS, 0)], nice  # [19] without the sweep's raise


def test_a_sweep_the_stop_came_to_before_it_lowered_itself_runs_at_the_stoppers_priority(tmp_path, monkeypatch):
    """The worker and the sweep lower themselves to nice 19 as their thread begins. A stop right after the start (a
    start undone, a SIGTERM during it) can raise a thread's priority before the thread lowered it: the thread then
    lowered itself after, and the sweep listed the table's users at nice 19 while the stop waited for it. Here the
    sweep's thread lowers itself only once the stop has returned."""
    stopped, run_at = threading.Event(), ingest_module._run_at

    def late(nice: int) -> None:
        if threading.current_thread().name == "claims-sweep":
            assert stopped.wait(30)
        run_at(nice)

    monkeypatch.setattr(ingest_module, "_run_at", late)
    ingest, nice, _ = sweep_priorities(tmp_path)
    try:
        ingest.stop()
    finally:
        stopped.set()
        ingest.close()
    assert nice == [os.getpriority(os.PRIO_PROCESS, 0)], nice  # [19] before: lowered after the stop's raise


def test_the_threads_the_workers_encoder_started_go_on_at_the_stoppers_priority(tmp_path):
    """An encoder may hand its work to threads it starts at its first call: the real MiniLM's tokenizer (Hugging Face
    tokenizers' pool) made 2 threads on the worker's first encode, born at the worker's nice 19 (measured: the
    worker's task and two new ones at 19 in /proc/self/task). `stop()` raised the worker alone: the batch's work on
    those threads went on at nice 19 while the stop waited for it. Here the encoder's own pool, made at its first call,
    embeds the texts."""
    embedding, go_on, nice = threading.Event(), threading.Event(), []

    class Pooled(HashEncoder):
        pool = None

        def encode(self, texts):
            if self.pool is None:  # started by its first caller, as a tokenizer's pool is
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="encoder-pool")
            return self.pool.submit(self.on_the_pool, texts).result()

        def on_the_pool(self, texts):
            embedding.set()
            assert go_on.wait(30)
            nice.append(os.getpriority(os.PRIO_PROCESS, 0))  # the pool thread's own
            return HashEncoder.encode(self, texts)

    encoder = Pooled()
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder)
    try:
        ingest.submit(feedback("ann", 0))
        assert embedding.wait(30)  # the batch is being embedded on the pool's thread, born at the worker's nice 19
        ingest.stop()
    finally:
        go_on.set()
        ingest.close()
        if encoder.pool is not None:
            encoder.pool.shutdown()
    assert nice == [os.getpriority(os.PRIO_PROCESS, 0)], nice  # [19] before: the worker alone was raised
