"""`Ingestor.close()` while its worker is stuck in a store call (an object store that hangs): close gives
up joining it after its timeout and closes the log; the worker, once the store answers, leaves the
closed log alone, and what it had moved is dropped at the next open as already in the table.

Before: the worker went on to `log.done` on the closed log, removing segment files of a log that was
closed (and that a restart in the same process may have opened again by then)."""

from __future__ import annotations

import threading

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, HashEncoder, feedback


class HungStore(Store):
    """A store whose first append of preferences waits until `release` is set (a store that hangs)."""

    entered: threading.Event
    release: threading.Event

    def add_preferences(self, *args, **kwargs):
        if not self.release.is_set():
            self.entered.set()
            self.release.wait()
        return super().add_preferences(*args, **kwargs)


def test_a_worker_outliving_close_leaves_the_closed_log_alone_and_nothing_is_lost(tmp_path):
    store = HungStore(str(tmp_path / "db"), "hash", DIM)
    store.entered, store.release = threading.Event(), threading.Event()
    folder = tmp_path / "log"
    # one record a segment: the record being moved is in a segment of its own, not the one written to
    ingest = Ingestor(FeedbackLog(folder, segment_bytes=1), store, HashEncoder())
    ingest.submit(feedback("ann", 0, n=2))  # acknowledged: on disk
    store.entered.wait()  # the worker is in the store call, which hangs
    ingest.close(timeout=0.05)  # the service stops: close does not wait for the hung call for ever
    assert ingest._thread.is_alive()
    files = sorted(p.name for p in folder.iterdir())
    pending = dict(ingest.log.pending)
    store.release.set()  # the store answers: the worker's append lands in the table
    ingest._thread.join(60)
    assert not ingest._thread.is_alive()
    assert store.count_preferences("t", "ann") == 2
    assert sorted(p.name for p in folder.iterdir()) == files  # the closed log's files are as close left them
    assert ingest.log.pending == pending
    # the next start replays the record and drops it as already in the table: nothing lost, nothing twice
    again = Ingestor(FeedbackLog(folder), store, HashEncoder())
    assert again.log.backlog() == (0, 0) and again.flush() == 0
    assert store.count_preferences("t", "ann") == 2
    again.close()
