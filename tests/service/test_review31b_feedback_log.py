"""The feedback log after `close`: a DELETE that reaches it then (the service stopping) still removes the
user's records from its files, and touches no file descriptor; a log opened again on the same folder in
the same process (an app built again) never has a batch stored twice by the closed one's worker."""

from __future__ import annotations

import logging
import os
import threading

from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, HashEncoder, feedback, log_bytes
from tests.service.test_left30_feedback_close import HungStore


def open_files_in(folder) -> list[str]:
    """This process's descriptors open on a file in `folder`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{folder}/"):
            found.append(target)
    return found


def test_forget_user_after_close_rewrites_the_files_and_touches_no_descriptor(tmp_path):
    """Before: forget_user on a closed log opened a new segment (a file descriptor nobody closed, a file
    made in a closed log) and closed the log's old descriptor number a second time: whatever file the
    process had opened since under that number (here `other`) was closed under its owner."""
    folder = tmp_path / "log"
    log = FeedbackLog(folder)
    log.append(feedback("ann", 0))
    log.append(feedback("bob", 0))
    log.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)  # the lowest free number: the log's old one
    try:
        assert log.forget_user("t", "ann") == 1
        assert os.write(other, b"still mine") == 10  # before: EBADF (closed by forget_user)
    finally:
        os.close(other)
    assert open_files_in(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["000000000001.log"]
    assert b"ann" not in log_bytes(folder) and b"question 0 of bob" in log_bytes(folder)
    again = FeedbackLog(folder)
    assert [e.key for e in again.pending.values()] == [("t", "bob")]
    again.close()


class ReleaseWhenLogged(logging.Handler):
    """Sets `event` when a record containing `words` is logged."""

    def __init__(self, words: str, event: threading.Event):
        super().__init__()
        self.words, self.event = words, event

    def emit(self, record):
        if self.words in record.getMessage():
            self.event.set()


def test_a_log_opened_again_while_the_closed_one_s_worker_is_in_the_store_stores_the_batch_once(tmp_path):
    """The service stopped while a move into the table hung (Ingestor.close gave up on its worker), then the
    same process opened the folder again (an app built again). Before: the new open found the batch not in
    the table yet and moved it, and the old worker's call, once the store answered, stored it a second
    time (4 rows for 2). Now the new open waits for that call (saying so), then drops what it stored."""
    store = HungStore(str(tmp_path / "db"), "hash", DIM)
    store.entered, store.release = threading.Event(), threading.Event()
    folder = tmp_path / "log"
    ingest = Ingestor(FeedbackLog(folder, segment_bytes=1), store, HashEncoder())
    ingest.submit(feedback("ann", 0, n=2))
    store.entered.wait()  # the worker is in the store call, which hangs
    ingest.close(timeout=0.05)
    # the store answers once the new open says it waits for it (before the fix: never said; answered below)
    logger, handler = logging.getLogger("pluralign.store"), ReleaseWhenLogged("opened again", store.release)
    level, disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.disabled = False
    never_hang = threading.Timer(120, store.release.set)  # were the line never logged, the open would wait for good
    never_hang.start()
    try:
        again = Ingestor(FeedbackLog(folder), store, HashEncoder())
    finally:
        never_hang.cancel()
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled
    store.release.set()
    ingest._thread.join(60)
    assert not ingest._thread.is_alive()
    again.flush()
    assert store.count_preferences("t", "ann") == 2
    assert again.log.backlog() == (0, 0)
    again.close()


def test_flush_after_close_returns_with_the_batch_left_in_the_log(tmp_path, monkeypatch):
    """A request thread still flushing while the service stops (the dashboard, a population snapshot):
    once the log is closed nothing can be moved (`done` keeps it pending), so flush must end. Before: it
    asked the log for the same oldest records again and again, for ever, holding the worker's lock."""
    from pluralign.store import Store

    store = Store(str(tmp_path / "db"), "hash", DIM)
    folder = tmp_path / "log"
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    with ingest.paused():  # the worker moves nothing: the record is still pending when the service stops
        ingest.submit(feedback("ann", 0, n=2))
        ingest.stop()
    ingest.close()
    asked = []
    oldest = ingest.log.oldest

    def counted(*args, **kwargs):
        asked.append(1)
        assert len(asked) < 100, "flush asks the closed log for the same records again and again"
        return oldest(*args, **kwargs)

    monkeypatch.setattr(ingest.log, "oldest", counted)
    assert ingest.flush() == 0
    assert store.count_preferences("t", "ann") == 0
    again = Ingestor(FeedbackLog(folder), store, HashEncoder())  # the next start moves it: nothing lost
    again.flush()  # (its worker may have moved it already)
    assert store.count_preferences("t", "ann") == 2
    again.close()
