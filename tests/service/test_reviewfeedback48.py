"""Review of session 48's dead letters (`pluralign.store.dead_letter`, `Ingestor._failed`): what the first version
left. Real feedback logs and a real LanceDB folder; the worker and the admin's calls in threads of their own."""

from __future__ import annotations

import threading

import msgspec

from pluralign.store import Store
from pluralign.store import ingest as ingest_module
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback48_dead_letter import wait_for
from tests.service.test_feedback_log import DIM, HashEncoder, feedback


def test_a_tenants_feedback_behind_a_whole_batch_of_refused_records_moves(tmp_path, monkeypatch):
    """One tenant whose oldest records (a whole batch of them) the store refuses, each on its own: its good record
    behind them is stored, and the refused ones are set aside once the store has stored others three times. Until
    review 48 every try failed each record of the batch alike, which `_move_checked` reads as not theirs (a schema,
    a bug): none was counted, the worker took the same batch for ever, and the tenant's feedback behind it (of a
    deployment with one tenant: every feedback) was never stored."""
    monkeypatch.setattr(ingest_module, "RETRY_S", 0.01)
    log = FeedbackLog(tmp_path / "log")
    for i in range(2):  # batch=2: the worker's whole first batch
        log.append([msgspec.structs.replace(r, user_id="") for r in feedback("ann", i, tenant="t1")])
    log.append(feedback("ann", 9, tenant="t1"))
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder(), batch=2)
    try:
        wait_for(lambda: store.count_preferences("t1", "ann") == 1, timeout=5.0)
        for i in (10, 11):  # each stored while the refused records wait: their failure is theirs
            ingest.submit(feedback("ann", i, tenant="t1"))
            wait_for(lambda i=i: store.count_preferences("t1", "ann") == i - 8, timeout=5.0)
        wait_for(lambda: ingest.set_aside == 2, timeout=5.0)
        assert ingest.log.backlog() == (0, 0) and len(ingest.dead_letters.names()) == 2
    finally:
        ingest.close()


def test_a_requeue_during_the_users_delete_does_not_bring_their_rows_back(tmp_path):
    """An admin requeues a letter of ann's while ann's DELETE forgets her rows (`forget_user`): the rows are not in
    the log afterwards. Until review 48 the requeue read the letter, the DELETE then forgot the log's rows and the
    letter, and the requeue appended the rows after it: a deleted user's feedback stored by the worker."""
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), HashEncoder())
    try:
        name = ingest.dead_letters.put(feedback("ann", 0, tenant="t1", n=2), "ValueError: then", 3, 0.0)
        append, reached, go = ingest.log.append, threading.Event(), threading.Event()

        def append_later(*args, **kwargs):  # the requeue between its read of the letter and its append
            reached.set()
            go.wait(5.0)
            return append(*args, **kwargs)

        ingest.log.append = append_later
        with ingest.paused():  # nothing moved meanwhile: what the log holds afterwards is what the worker would store
            requeue = threading.Thread(target=ingest.requeue, args=(name,))
            requeue.start()
            assert reached.wait(5.0)
            forget = threading.Thread(target=ingest.forget_user, args=("t1", "ann"))
            forget.start()
            forget.join(0.3)  # done at once before the fix; waits for the requeue after it
            go.set()
            requeue.join(5.0)
            forget.join(5.0)
            assert ingest.log.pending_for("t1", "ann") == [] and ingest.dead_letters.names() == []
    finally:
        ingest.close()
