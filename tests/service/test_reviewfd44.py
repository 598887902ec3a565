"""Review of flakydj44 (session 44): the note a withdrawn users row's purge leaves for the next start
(`Store.withdrawn_note`, `service.runtime.WITHDRAWN_NOTE`)."""

from __future__ import annotations

import threading

import pytest

from pluralign.store import Store, tables
from tests.files import files_holding
from tests.service.test_store import DIM
from tests.stores import user_row, withdrawn_purge_given_up

GONE = "zed-r4v"


@pytest.fixture
def given_up(tmp_path, monkeypatch):
    """Replica b withdrew a row whose purge gave up waiting for the lease (its stop's wait over): the row is in
    the users table's files, and b's note says a purge is owed. Returns (store folder, note)."""
    return withdrawn_purge_given_up(tmp_path, monkeypatch, GONE)


def test_a_purge_owed_by_a_replica_is_finished_when_its_folder_serves_the_store_alone(given_up):
    """docs/operations.md, 'Changing the replica count': after scaling down to one process it starts with
    PLURALIGN_REPLICAS=1 (no `sync_seconds`), on a data folder a replica kept. The note that replica left was read
    only with `sync_seconds`: alone, the withdrawn row stayed in the users table's files, and the note for good."""
    store, note = given_up
    alone = Store(str(store), "enc", DIM, withdrawn_note=note)  # the one process, on b's folder
    assert alone.finish_withdrawn() and alone.wait_withdrawn(30)
    assert files_holding(store, GONE) == [] and not note.exists()
    assert alone.get_user("t", "ann") is not None


def test_a_row_withdrawn_after_a_running_purges_rewrite_keeps_the_note_until_its_own_purge(tmp_path, monkeypatch):
    """A refit withdraws a row while the purge of an earlier withdrawal is past its rewrite: that purge does not
    hold the new row's deletion, so the note must stay until the purge queued for it is done (killed before it,
    the next start purges). Guards `_purge_withdrawn`'s check of `_withdrawing` and `_purge_queued`: without it the
    first purge removed the note, and a kill then left the second row in the files with nothing saying so."""
    monkeypatch.setattr(tables, "READ_MARGIN_S", 0.0)
    store, note = tmp_path / "store", tmp_path / "b" / "withdrawn-purge-owed"
    note.parent.mkdir()
    b = Store(str(store), "enc", DIM, sync_seconds=0, withdrawn_note=note)
    for user_id in ("first-w1", GONE):
        b.put_user(user_row(user_id, 2.0))
    purge_tables, purge_withdrawn, gate, reached, purges = b._purge_tables, b._purge_withdrawn, threading.Event(), threading.Event(), []

    def purge_then_withdraw(names):
        purges.append(names)
        purge_tables(names)
        if len(purges) == 1:
            b.withdraw_user("t", GONE, 2.0)  # after this purge's rewrite: a second purge is queued for it

    def held_before_its_turn():
        if purges:  # the second purge, held before its turn as if the process were killed before it (session 50:
            reached.set()  # held in its turn, it kept the first from its removal of old versions, made after the turn)
            assert gate.wait(30)
        purge_withdrawn()

    monkeypatch.setattr(b, "_purge_tables", purge_then_withdraw)
    monkeypatch.setattr(b, "_purge_withdrawn", held_before_its_turn)
    b.withdraw_user("t", "first-w1", 2.0)
    first = b._purging[0]
    first.join(30)
    assert not first.is_alive() and reached.wait(30)
    assert files_holding(store, "first-w1") == [] and files_holding(store, GONE)
    assert note.exists()  # the second row's purge is still owed
    gate.set()
    assert b.wait_withdrawn(30)
    assert files_holding(store, GONE) == [] and not note.exists()


def test_a_start_refused_for_its_replica_settings_leaves_the_owed_purge_to_a_start_that_serves(tmp_path, given_up):
    """Replica b stopped with a withdrawn row's purge owed (its note), and starts again with another
    PLURALIGN_REPLICAS than the live replica 0: `open_store` refuses it (exit 2; Kubernetes starts it again and
    again). The Store it opened to look at the clock rows had already started the owed purge, which takes the store's
    lease: the refused process then exits holding it, and every live replica's DELETE waits the lease's 30 s TTL, at
    each restart. A refused start must act on nothing; the next start that serves purges."""
    import types

    from service.runtime import WITHDRAWN_NOTE, open_store
    from service.settings import Settings
    from tests.service.test_replicas43_counts import write_row

    store, note = given_up
    assert note.name == WITHDRAWN_NOTE
    write_row(str(store), 0, 2, "d:" + "a" * 32 + ":" + "1" * 32)  # replica 0 of 2, live
    encoder = types.SimpleNamespace(encoder_id="enc", dim=DIM)

    def settings(replicas: int) -> Settings:
        return Settings(data_dir=str(tmp_path / "b"), store_uri=str(store), replicas=replicas, replica_index=1, store_sync_ms=0)

    started = len([t for t in threading.enumerate() if t.name == "withdrawn-purge"])
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS=3"):
        open_store(settings(3), encoder)
    purging = [t for t in threading.enumerate() if t.name == "withdrawn-purge"]
    for thread in purging:
        thread.join(30)
    assert len(purging) == started and note.exists() and files_holding(store, GONE)  # nothing done
    served = open_store(settings(2), encoder)  # started again with the live replicas' count
    assert served.wait_withdrawn(30)
    assert files_holding(store, GONE) == [] and not note.exists()
