"""Review of break58: a worker thread waiting for its next task holds nothing of the tasks it took before."""

from __future__ import annotations

import threading
import weakref

from service.scheduler import DaemonWorker
from tests.service.test_delete_journal import wait_until


class _Rows:
    """Stands for what a task's arguments hold (a user's rows): weakly referable, so its release can be seen."""


def test_a_daemon_workers_task_cancelled_while_waiting_is_not_held_by_its_thread():
    """`DaemonWorker._run` dropped a task it ran (break58), but one cancelled while it waited (`continue`) stayed bound
    to the thread's locals, its arguments with it, until the next task came: for good on a quiet service."""
    worker = DaemonWorker("review-break58")
    go = threading.Event()
    first = worker.submit(go.wait)  # the thread is busy with it while the next one is cancelled
    rows = _Rows()
    held = weakref.ref(rows)
    second = worker.submit(lambda r: None, rows)
    del rows
    assert second.cancel()
    go.set()
    assert first.result(timeout=30)
    del second  # the caller's own reference: only the worker's could keep it now
    assert wait_until(lambda: held() is None, timeout=10), "the cancelled task's arguments are still held"


def test_the_features_cache_keeps_digests_of_the_texts_not_the_texts():
    """`text_features` is cached by a 16-byte digest of each text (bounded by FEATURES_CACHED; each tenant's own since
    fair59): a text read twice is a hit, and none is kept (a cache keyed by the texts kept up to 65,536 of 80 KB each)."""
    from pluralign.user import features
    from pluralign.user.features import FEATURES_CACHED, text_features

    text = "Review break58: " + "\U0001f600" * 5_000
    first = text_features(text)
    assert text_features("".join([text[:8], text[8:]])) is first  # the same text, another str object: a hit
    cache = features._cached
    assert len(cache) <= FEATURES_CACHED
    assert all(isinstance(key, bytes) and len(key) == 16 for _, key, _ in cache.items())


def test_records_passed_over_are_not_held_once_their_user_is_deleted(tmp_path, monkeypatch):
    """The ingest worker passes over records that all failed while the encoder failed every text too (`_pass_over`:
    not theirs, tried again later). Once their user's DELETE dropped them and nothing else waited, no batch came to
    drop them from the worker's `_passed_over`: their rows stayed in memory for good."""
    import gc
    import logging
    import uuid

    import msgspec
    import numpy as np

    from tests.holders import assert_none_hold
    from tests.service.test_feedback_log import HashEncoder, feedback
    from tests.stores import ingesting, wait_for

    class Broken(HashEncoder):  # every text embedded as NaN: the encoder's fault, not a record's
        def encode(self, texts):
            return np.full((len(texts), self.dim), np.nan, np.float32)

    # pytest's log capture keeps each record, and a logged failure's traceback keeps its frames (the rows): not here
    monkeypatch.setattr(logging.getLogger("pluralign.store"), "propagate", False)
    marker = uuid.uuid4().hex
    records = [[msgspec.structs.replace(r, prompt=f"{r.prompt} {marker}") for r in feedback("ann", i)] for i in range(2)]
    with ingesting(tmp_path, Broken(), batch=2) as (store, ingest):
        for record in records:
            ingest.submit(record)
        del records, record
        wait_for(lambda: len(ingest._passed_over) == 2, timeout=60.0)
        ingest.forget_user("t", "ann")
        # the worker drops them at its next idle look (up to 0.5 s on): each search for holders reads every object of
        # the process (~5 s of CPU here), so the search runs once that look came, not once before it and again after
        wait_until(lambda: not ingest._passed_over, timeout=30)
        gc.collect()
        assert_none_hold([marker], timeout=120)  # a scan takes 5-20 s at load 10-30


def test_a_stopped_daemon_workers_thread_ends_and_a_later_task_still_runs():
    """`DaemonWorker.stop` (a service's stop: `Runtime.stop_refits`): its thread ends once what was submitted before has
    run, rather than waiting for a next task for the rest of the process (a test's process runs a service per test: one
    'refit' thread parked apiece, review speed60b); a task submitted after still runs, on a thread of its own."""
    worker = DaemonWorker("review-speed60b")
    go = threading.Event()
    before = worker.submit(go.wait)
    thread = next(t for t in threading.enumerate() if t.name == "review-speed60b")
    worker.stop()
    queued = worker.submit(lambda: "queued")  # behind the stop: run by the same thread, which ends after it
    go.set()
    assert before.result(timeout=30) and queued.result(timeout=30) == "queued"
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert worker.submit(lambda: "after").result(timeout=30) == "after"
    worker.stop()
