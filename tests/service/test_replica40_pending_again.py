"""Session replica40: a row still waiting in one replica's feedback log, imported again after another replica's
DELETE of the user began, is the user's again. Before: replica b found the row pending in its log, answered it
`already_stored` and logged nothing, so the row kept the time it first came; b, applying a's deletion record
(which removes rows received before the DELETE began, from its log and from the table), dropped it: an
acknowledged import lost. Session 39 fixed this for rows already in the table (touch39). Now the import logs the
row again, received now, and the mover keeps the latest time of one row's copies. Two real apps over HTTP on one
LanceDB folder; b's mover held until its sweep applied the record, or until it moved both copies."""

from __future__ import annotations

import json
import time

import pytest

from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

SYNC_MS = 200
USER = "again40"
ROW = json.dumps({"pref_id": "kept-1", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.",
                  "created_at": 1_700_000_000.0}).encode() + b"\n"
OTHER = json.dumps({"pref_id": "old-1", "prompt": "Rain or sun?", "chosen": "Sun.", "rejected": "Rain.",
                    "created_at": 1_700_000_000.0}).encode() + b"\n"


# moved-then-swept: slow (~1.6 CPU-s); fast: test_a_copy_received_later_moves_the_stored_rows_time_on below, and rows received
# again in the table kept from a record: tests/service/test_left27b_began.py's [True]
@pytest.mark.parametrize("moved_first", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["swept-in-the-log", "moved-then-swept"])
def test_a_pending_row_imported_again_after_a_delete_began_on_another_replica_is_kept(
        moved_first, tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=SYNC_MS, deletion_sweep_s=3600)
    with first, second, a.client("acme") as ca, b.client("acme") as cb:
        assert ca.post(f"/v1/users/{USER}/import", content=OTHER).status_code == 201
        a.runtime.ingest.flush()  # a row of theirs in the table: a's DELETE has something to delete (a 200)
        with b.runtime.ingest.paused():
            assert cb.post(f"/v1/users/{USER}/import", content=ROW).status_code == 201  # waits in b's log
            assert ca.delete(f"/v1/users/{USER}").status_code == 200  # began before the import below
            time.sleep(3 * SYNC_MS / 1000)  # past the record's slack for replicas' reads
            again = cb.post(f"/v1/users/{USER}/import", content=ROW)
            assert again.status_code == 201 and again.json()["already_stored"] == ["kept-1"], again.text
            if not moved_first:  # b applies the record while both copies wait in its log
                assert b.runtime.deletion_sweep.run_once() == 1
        b.runtime.ingest.flush()
        if moved_first:  # both copies moved into the table before b applies the record
            assert b.runtime.deletion_sweep.run_once() == 1
        page = cb.get(f"/v1/users/{USER}/preferences")
        assert page.status_code == 200, page.text  # before: 404 (nothing of theirs left: the import lost)
        assert [r["pref_id"] for r in page.json()["data"]] == ["kept-1"], page.text


def test_a_copy_received_later_moves_the_stored_rows_time_on(tmp_path):
    """The mover's side, batch by batch: a row stored with its first time, then its copy received later (an import
    logged it again) moved in another batch, or both copies in one batch: the table keeps the later time, no row
    added. Before: the first time stayed, and a DELETE begun between the two removed the row. Real LanceDB."""
    import msgspec

    from pluralign.store import Store
    from tests.service.test_store import DIM, prefs

    store = Store(str(tmp_path), "enc", DIM)
    rows, vecs, _, _ = prefs("t", "ann", 2)
    old = [msgspec.structs.replace(r, received_at=1000.0) for r in rows]
    assert store.add_preferences(old[:1], vecs[:1], vecs[:1], vecs[:1]) == 1
    began = time.time()  # a DELETE begins here
    copy = msgspec.structs.replace(old[0], received_at=time.time())
    assert store.add_preferences([copy], vecs[:1], vecs[:1], vecs[:1]) == 0
    assert store.received_since("t", "ann", began)
    both = [old[1], msgspec.structs.replace(old[1], received_at=time.time())]
    assert store.add_preferences(both, vecs[[1, 1]], vecs[[1, 1]], vecs[[1, 1]]) == 1
    assert store.count_preferences("t", "ann") == 2
    assert store.delete_feedback_before("t", "ann", began) == 0  # both received since it began: kept
    assert {p.received() >= began for p in store.preferences_for("t", "ann")[0]} == {True}
