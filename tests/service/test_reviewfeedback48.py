"""Review of session 48's dead letters (`pluralign.store.dead_letter`, `Ingestor._failed`): what the first version
left. Real feedback logs and a real LanceDB folder; the worker and the admin's calls in threads of their own."""

from __future__ import annotations

import threading

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import DIM, HashEncoder, feedback


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
