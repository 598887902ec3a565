"""A feedback log's replay against the store's retraction records (`pluralign.store.retractions`): rows taken back
through another replica are not moved in again, the others of their record are; what the table lacks for another
reason (a crash between a commit and the log's update, a row of the same id sent again after its retraction) still is.
A real LanceDB store and a real log in a temp dir (~1 s)."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a purge's wait for other replicas' reads: tests/service/conftest.py


def held(store: Store, rows) -> set[str]:
    return {r.pref_id for r in rows if store.stored_row(r.tenant, r.user_id, r.pref_id) is not None}


def test_a_replayed_log_skips_rows_taken_back_after_they_arrived_and_drops_them_from_its_files(tmp_path):
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    imported, single, later = feedback("ann", 0, n=3), feedback("ann", 1), feedback("bob", 2)
    for rows in (imported, single, later):
        ingest.submit(rows)
    ingest.flush()
    ingest.close()  # as a kill: the moved records stay in the open segment
    everything = [*imported, *single, *later]
    assert held(store, everything) == {r.pref_id for r in everything}

    taken, lost = imported[1], single[0]
    store.delete_preference("t", "ann", taken.pref_id)
    store.record_retraction("t", "ann", taken.pref_id, time.time(), 1)  # through another replica
    store.delete_preference("t", "ann", lost.pref_id)  # no retraction: the table lost it, the replay brings it back
    store.delete_preference("t", "bob", later[0].pref_id)
    store.record_retraction("t", "bob", later[0].pref_id, 1.0, 1)  # before the row arrived: it is the user's new word

    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.flush()
        assert held(store, everything) == {r.pref_id for r in everything} - {taken.pref_id}
        assert not any(taken.chosen.encode() in p.read_bytes() for p in (tmp_path / "log").glob("*.log"))
        assert ingest.log.backlog() == (0, 0)
    finally:
        ingest.close()
    assert store.retracted(everything) == {("t", "ann", taken.pref_id)}
    store.delete_user("t", "ann")
    assert store.retractions.count_rows() == 1  # bob's: the DELETE of ann took hers
    store.compact()  # merged, its old versions gone with the others'
    assert store.forget_retractions("t") == 1 and store.retractions.count_rows() == 0  # a tenant's removal: none left
