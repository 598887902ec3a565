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
