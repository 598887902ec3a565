"""A DELETE whose rewrite of the feedback log's segments failed (no room) must not bring the user's rows back at
the next start: the rows left the in-memory queue, stayed in the segment files, and were replayed and moved into
the table (until session 44), for this replica's DELETE and for another replica's applied deletion record alike."""

from __future__ import annotations

import pytest

from pluralign.store import feedback_log as feedback_log_module
from pluralign.store.failures import StoreUnavailable
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback, log_bytes, make
from tests.stores import forget_without_room, no_room_for_rewrites


def _restart(tmp_path, store):
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    ingest.flush()
    return ingest


@pytest.mark.parametrize("another_replicas", [False, True], ids=["this-replicas-delete", "another-replicas-record"])
def test_rows_of_a_delete_whose_rewrite_failed_are_not_replayed(tmp_path, monkeypatch, another_replicas):
    store, _, ingest = make(tmp_path)
    with ingest.paused():
        ingest.submit(feedback("ann", 0))
        ingest.submit(feedback("bob", 0))
        ingest.submit(feedback("ann", 1))
        ingest.flush_user("t", "ann")  # ann's first records already moved: their text is still in the segment
        ingest.submit(feedback("ann", 2))  # and one still pending
        before = None
        if another_replicas:  # a deletion record of a DELETE begun now: ann's rows sent after it stay theirs
            before = ingest.log.clock()
            ingest.submit(feedback("ann", 3))
        no_room_for_rewrites(monkeypatch)
        with pytest.raises(StoreUnavailable):
            ingest.forget_user("t", "ann", before=before)
        monkeypatch.undo()
        assert [e.rows[0].pref_id for e in ingest.log.pending_for("t", "ann")] == (["t-ann-3-0"] if before else [])
        ingest.stop()
    ingest.close()  # killed before anything retried the rewrite: only the files remain
    assert b"question 2 of ann" in log_bytes(tmp_path / "log")

    ingest = _restart(tmp_path, store)  # the rows moved before stay in the table until the DELETE's retry takes them
    assert {r.pref_id for r in store.preferences_for("t", "ann")[0]} == {"t-ann-0-0", "t-ann-1-0"} | (
        {"t-ann-3-0"} if another_replicas else set())
    assert store.count_preferences("t", "bob") == 1
    files = log_bytes(tmp_path / "log")
    assert not any(f"question {i} of ann".encode() in files for i in (0, 1, 2))
    # the DELETE's retry (the journal's, or the deletion record's next pass) finishes it; nothing comes back after
    assert ingest.forget_user("t", "ann", before=before) == 0
    if before is None:
        store.delete_user("t", "ann")
    else:
        store.delete_feedback_before("t", "ann", before)
    ingest.close()
    ingest = _restart(tmp_path, store)
    assert {r.pref_id for r in store.preferences_for("t", "ann")[0]} == ({"t-ann-3-0"} if another_replicas else set())
    ingest.close()


def test_what_a_user_sends_after_a_delete_whose_rewrite_failed_is_replayed(tmp_path, monkeypatch):
    """The note names only what the DELETE took: feedback the user sends afterwards goes to a later segment and is
    theirs at the next start (and the note, its segments rewritten at that start, goes)."""
    log = forget_without_room(tmp_path, monkeypatch)
    monkeypatch.undo()
    log.append(feedback("ann", 1))  # ann came back
    log.close()
    assert (tmp_path / feedback_log_module.FORGOTTEN).exists()
    log = FeedbackLog(tmp_path)
    assert sorted(r.pref_id for e in log.pending.values() for r in e.rows) == ["t-ann-1-0", "t-bob-0-0"]
    assert b"question 0 of ann" not in log_bytes(tmp_path) and not (tmp_path / feedback_log_module.FORGOTTEN).exists()
    log.close()
