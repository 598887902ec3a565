"""review late56a: with replicas, a pending retraction's record (`Store.record_retraction(..., pending=True)`, the 202)
counts toward the user's and the tenant's bound (`PENDING_PER_USER`, `PENDING_PER_TENANT`) only while its row may still
come. Before, a record whose row arrived and was dropped by the mover (`Ingestor._not_retracted`), or was found stored
and taken back (`service.users.retractions._recorded_pending`'s read after its record), counted for 7 days
(`PENDING_KEEP_S`): a user who sent 101 rows through one replica and took each back through another at once was
refused every pending retraction for a week (429), though every row was gone.

Real LanceDB and a real feedback log in a temp dir (~1 s); bounds lowered to 3."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, retractions
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM

pytestmark = pytest.mark.usefixtures("short_read_margin")


def test_pending_records_whose_rows_the_mover_dropped_leave_the_bound_and_still_drop_their_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        rows = [r for i in range(3) for r in feedback("ann", i)]
        with ingest.paused():  # each row still in this replica's log as another replica takes it back
            ingest.submit(rows)
            time.sleep(0.01)
            for r in rows:
                store.record_retraction("t", "ann", r.pref_id, time.time(), 1, pending=True)
        ingest.flush()  # the mover drops all three
        assert all(store.stored_row("t", "ann", r.pref_id) is None for r in rows)
        # the records still answer and still drop: the same DELETE sent again is a 202 again, and a copy of a row
        # received before the retraction (a replay after a crash, another replica's copy) is still dropped
        assert {store.retraction_recorded("t", "ann", r.pref_id) for r in rows} == {"pending"}
        assert store.retracted(rows) == {("t", "ann", r.pref_id) for r in rows}
        for i in range(3):  # three more ids on their way: room for them (TooManyPending at the first before)
            store.record_retraction("t", "ann", f"coming{i}", time.time(), 1, pending=True)
        with pytest.raises(retractions.TooManyPending):  # the bound still holds for records whose row may come
            store.record_retraction("t", "ann", "coming3", time.time(), 1, pending=True)
        store.record_retraction("t", "ann", rows[0].pref_id, time.time(), 1, pending=True)  # sent again: not refused
    finally:
        ingest.close()


def test_a_pending_record_whose_row_was_then_found_stored_and_taken_back_leaves_the_bound(tmp_path, monkeypatch):
    """`_recorded_pending` records first and reads the table again: a row another replica stored meanwhile is taken back
    as any (a record not pending). Its pending record counted on, 7 days."""
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    now = time.time()
    for i in range(3):
        store.record_retraction("t", "ann", f"stored{i}", now, 1, pending=True)
        store.record_retraction("t", "ann", f"stored{i}", now + 1, 1)  # found stored on the read after: taken back
    assert store.retraction_recorded("t", "ann", "stored0") == "done"
    store.record_retraction("t", "ann", "coming", now + 2, 1, pending=True)  # TooManyPending before


def test_pending_records_whose_rows_a_replay_dropped_leave_the_bound(tmp_path, monkeypatch):
    """The rows still in the log at a crash, taken back through another replica meanwhile: the replay drops them
    (`Ingestor._drop_retracted`), and their records count no more."""
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    rows = [r for i in range(3) for r in feedback("ann", i)]
    log = FeedbackLog(tmp_path / "log")
    log.append(rows)
    log.close()  # as a kill before the worker moved them
    time.sleep(0.01)
    for r in rows:
        store.record_retraction("t", "ann", r.pref_id, time.time(), 1, pending=True)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.flush()
        assert all(store.stored_row("t", "ann", r.pref_id) is None for r in rows)
        store.record_retraction("t", "ann", "coming", time.time(), 1, pending=True)  # TooManyPending before
    finally:
        ingest.close()


@pytest.mark.slow
def test_a_user_taking_back_rows_on_their_way_through_another_replica_is_not_refused_once_they_came(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """The reproducer over HTTP: two replicas on one store (slow, two service starts: `make test-scaleout`). A user sends
    rows through a and takes each back through b while it waits in a's log (202); a drops them. The next one taken back
    so was a 429 with ~7 days of Retry-After (the user's bound, lowered to 3, held by records whose rows were gone)."""
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3)
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=50, deletion_sweep_s=3600.0)
    with first, a.client("acme") as acme_a, second, b.client("acme") as acme_b:

        def sent_and_taken_back(i: int):
            with a.runtime.ingest.paused():  # acknowledged by a, still in a's log
                r = acme_a.post("/v1/feedback", json={"type": "comparison", "user": "ria", "prompt": f"Undo {i}?",
                                                      "chosen": f"yes {i}", "rejected": f"no {i}"})
                assert r.status_code == 201, r.text
                pref_id = r.json()["stored"][0]
                return pref_id, acme_b.delete(f"/v1/users/ria/preferences/{pref_id}")

        for i in range(3):
            pref_id, r = sent_and_taken_back(i)
            assert r.status_code == 202, r.text
            a.runtime.ingest.flush()  # a drops it
            assert pref_id not in acme_a.get("/v1/users/ria/preferences").text  # never stored
        pref_id, r = sent_and_taken_back(3)
        assert r.status_code == 202, (r.status_code, r.headers.get("Retry-After"), r.text)  # a 429 for ~7 days before
        a.runtime.ingest.flush()
        assert pref_id not in acme_a.get("/v1/users/ria/preferences").text
        assert acme_b.delete(f"/v1/users/ria/preferences/{pref_id}").status_code == 202  # sent again: a 202 again
