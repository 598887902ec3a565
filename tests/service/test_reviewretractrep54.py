"""Review of retractrep54: a replayed log holding both the moved record of a row taken back (through another
replica) and the same id sent again after the retraction (the user's new word, acknowledged, pending at a crash).
A real LanceDB store and a real log in a temp dir (~1 s)."""

from __future__ import annotations

import time

import msgspec
import pytest

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")


def test_a_row_sent_again_after_its_retraction_survives_a_replay_next_to_its_taken_back_record(tmp_path):
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    [old] = feedback("ann", 0)
    ingest.submit([old])
    ingest.flush()
    ingest.close()  # as a kill: the moved record stays in the open segment

    store.delete_preference("t", "ann", old.pref_id)  # taken back through another replica
    store.record_retraction("t", "ann", old.pref_id, time.time(), 1)
    time.sleep(0.01)

    # the same id sent again (its new word), acknowledged, then a crash before the worker moved it
    new = msgspec.structs.replace(old, chosen="the answer I meant", created_at=time.time())
    log = FeedbackLog(tmp_path / "log")
    log.append([new])
    log.close()

    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.flush()
        row = store.stored_row("t", "ann", old.pref_id)
        assert row is not None, "the feedback sent again after the retraction was lost"
        assert row.chosen == "the answer I meant"
        assert not any(old.chosen.encode() in p.read_bytes() for p in (tmp_path / "log").glob("*.log"))
    finally:
        ingest.close()


def test_a_delete_finished_for_a_user_who_came_back_keeps_the_retractions_of_rows_sent_since(tmp_path):
    """A DELETE finished from the journal for a user who came back (`Store.delete_user` with `before`: their rows
    received since stay) deleted every retraction record of theirs: a row sent since, taken back through another
    replica, came back at the next start of the replica whose log held its moved record."""
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    began = time.time()  # the DELETE began, stopped part way (journaled)
    time.sleep(0.01)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    back, kept = feedback("ann", 0), feedback("ann", 1)  # the user came back: sent since it began
    ingest.submit(back)
    ingest.submit(kept)
    ingest.flush()
    ingest.close()  # as a kill: the moved records stay in the open segment
    store.delete_preference("t", "ann", back[0].pref_id)  # taken back through another replica
    store.record_retraction("t", "ann", back[0].pref_id, time.time(), 1)

    store.delete_user("t", "ann", before=began)  # finished from the journal: what came since is theirs
    assert store.stored_row("t", "ann", kept[0].pref_id) is not None

    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.flush()
        assert store.stored_row("t", "ann", back[0].pref_id) is None, "the row taken back came back"
    finally:
        ingest.close()
    store.delete_user("t", "ann")  # a whole DELETE: none of their records stays
    assert store.retractions.count_rows() == 0
