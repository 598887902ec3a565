"""review late56c, of late56a's pending records whose row came (`retractions.ARRIVED`, `Store.pending_met`):

- a record whose row came counted toward no bound, but the same retraction sent again (a client retrying its DELETE,
  which docs/api.md says is a 202 again) wrote a new pending record that counted for 7 days again: the user's bound filled
  up again with rows long dropped, and their next retraction of a row on its way was a 429;
- marking a record renamed it (`pending-<hex>` to `pending-arrived-<hex>`), and every other replica's sweep, which takes
  each retraction once by its id (`DeletionSweep.drop_retracted`, `Store.retractions_since`), took it as a new one and
  rewrote that user's feedback log segments again.

Real LanceDB and a real feedback log in a temp dir (< 1 s each); the user's bound lowered to 3."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, retractions
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")


def dropped_on_their_way(tmp_path, n: int) -> tuple[Store, Ingestor, list]:
    """`n` rows of user ann in this replica's log taken back through replica 1 (pending records), then dropped by the
    mover."""
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    rows = [r for i in range(n) for r in feedback("ann", i)]
    with ingest.paused():
        ingest.submit(rows)
        time.sleep(0.01)
        for r in rows:
            store.record_retraction("t", "ann", r.pref_id, time.time(), 1, pending=True)
    ingest.flush()
    assert all(store.stored_row("t", "ann", r.pref_id) is None for r in rows)
    return store, ingest, rows


def test_a_retraction_sent_again_after_its_row_came_still_counts_toward_no_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store, ingest, rows = dropped_on_their_way(tmp_path, 3)
    try:
        for r in rows:  # each DELETE sent again (a client's retry): a 202 again, its record replacing the one before
            store.record_retraction("t", "ann", r.pref_id, time.time(), 1, pending=True)
        assert {store.retraction_recorded("t", "ann", r.pref_id) for r in rows} == {"pending"}
        assert store.retracted(rows) == {("t", "ann", r.pref_id) for r in rows}  # a late copy is still dropped
        # the user's next retraction of a row on its way (TooManyPending before: the three sent again counted)
        store.record_retraction("t", "ann", "coming", time.time(), 1, pending=True)
    finally:
        ingest.close()


def test_a_retraction_sent_again_while_a_copy_of_its_row_may_still_come_counts(tmp_path, monkeypatch):
    """The bound still holds where a record of the id is one whose row may come: sent again, it counts once."""
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    for i in range(3):
        store.record_retraction("t", "ann", f"coming{i}", time.time(), 1, pending=True)
        store.record_retraction("t", "ann", f"coming{i}", time.time(), 1, pending=True)  # sent again: not refused
    with pytest.raises(retractions.TooManyPending):
        store.record_retraction("t", "ann", "coming3", time.time(), 1, pending=True)


def test_a_record_marked_as_its_row_came_is_not_a_new_retraction_to_the_other_replicas(tmp_path):
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        rows = feedback("ann", 0)
        with ingest.paused():
            ingest.submit(rows)
            time.sleep(0.01)
            store.record_retraction("t", "ann", rows[0].pref_id, time.time(), 1, pending=True)
            seen = store.retractions_since(0.0, other_than=0)  # replica 0's sweep reads it (and rewrites ann's segments)
        ingest.flush()  # replica 0's mover drops the row: the record is marked
        assert store.retraction_recorded("t", "ann", rows[0].pref_id) == "pending"
        assert store.retractions_since(0.0, other_than=0) == seen  # the same record, not one to take again
    finally:
        ingest.close()
