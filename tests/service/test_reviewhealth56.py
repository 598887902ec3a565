"""Review of health56 (the refactor of `Ingestor.flush`'s stop check, `stop_here`): a real feedback log and a real
LanceDB folder in a temp dir."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor, StillMoving
from tests.service.test_feedback48_worker import HeldInTheWorker
from tests.service.test_feedback_log import DIM, feedback


def test_a_flush_past_its_deadline_begins_no_further_batch_after_one_whose_records_all_failed(tmp_path):
    """`Ingestor.flush(deadline=...)` begins its first batch whatever the deadline, and no further one once the deadline
    has passed (StillMoving, rows still pending): the call overruns it by one batch at most. A log whose oldest records
    the store refuses on their own (a blank owner: a damaged or hand-edited log; likewise texts a remote encoder refuses)
    fails batch after batch, each moving nothing. Before the fix the check before a further batch counted the deadline
    only once some row had moved, so such a flush went on through every failing batch past its deadline (an audit's
    POST with a `wait` held its request thread and the feedback worker's lock for as long): here all four batches,
    the good record of the last one moved, and no StillMoving."""
    log = FeedbackLog(tmp_path / "log")
    for i in range(6):  # three batches of two records the store refuses, then one good record
        log.append([msgspec.structs.replace(r, user_id="") for r in feedback("ann", i, tenant="t1")])
    log.append(feedback("bob", 0, tenant="t2"))
    log.close()  # as after a crash: only the files remain
    store = Store(str(tmp_path / "db"), "hash", DIM)
    encoder = HeldInTheWorker(threading.get_ident())  # the worker held in its first embedding: the flush alone moves
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, encoder, batch=2, tries=10)
    tried: list[int] = []
    move_checked = ingest._move_checked

    def counted(entries, *args, **kwargs):
        if threading.get_ident() == encoder.test_thread:
            tried.append(len(entries))
        return move_checked(entries, *args, **kwargs)

    ingest._move_checked = counted
    try:
        assert encoder.embedding.wait(30)
        with pytest.raises(StillMoving) as still:
            ingest.flush(deadline=time.monotonic())
        assert tried == [2], tried  # the first batch only
        assert still.value.rows == 7  # every row still waiting in the log
        assert store.count_preferences("t2", "bob") == 0
    finally:
        encoder.go_on.set()
        ingest.close()
