"""Review of purge50 (session 50): with replicas, a purge's removal of old versions is made after the store's
maintenance turn (`Store._drop_when_due`), the lease held through its wait, while other deletes of this process take
their turns. On a real folder, a store in replica mode (`sync_seconds` 0, its lease), as tests/service/test_reviewfd44.py."""

from __future__ import annotations

import threading

from pluralign.store import Store, tables
from pluralign.store.failures import StoreUnavailable
from tests.files import files_holding
from tests.service.test_store import DIM, prefs

WAIT_S = 0.2  # READ_MARGIN_S here: how long a purge's removal of old versions waits after its turn


def _waiting_removal(store: Store) -> tuple[threading.Event, threading.Event]:
    """`store._drop_when_due` made to say when it begins (`began`) and to wait for `go` before it removes anything: a
    removal of old versions owed by another tenant's delete, under way while the test runs its turns."""
    drop, began, go = store._drop_when_due, threading.Event(), threading.Event()

    def held(owed):
        if threading.current_thread().name == "other-tenant":
            began.set()
            assert go.wait(30)
        drop(owed)

    store._drop_when_due = held
    return began, go


def test_a_purge_a_failed_delete_left_is_finished_by_the_next_turn_while_another_removal_waits(tmp_path, monkeypatch):
    """A delete whose purge failed (no room) left the preferences table marked, its rows deleted but in the table's
    files. Sent again (the DELETE again, or the journal's pass) while another tenant's delete waited for its removal of
    old versions (the lease held by that wait), its turn did not finish the purge: `_maintenance` finished marks only
    when the lease's depth was 1 (never while a removal held it), and skipped tables with a removal owed. It found
    no rows, purged nothing, and returned (the DELETE's journal entry done, answered 404) with the user's text still
    in the files. Now it purges them before it returns."""
    monkeypatch.setattr(tables, "READ_MARGIN_S", WAIT_S)
    store = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    store.add_preferences(*prefs("acme", "ann-gone", 3))
    store.add_preferences(*prefs("globex", "gus", 3, start=10))
    began, go = _waiting_removal(store)
    other = threading.Thread(target=lambda: store.delete_user("globex", "gus"), name="other-tenant")
    other.start()
    try:
        assert began.wait(30)  # globex's delete is past its turn, its removal under way (the lease held)
        purge = store._purge

        def no_room(name):
            raise StoreUnavailable(f"table `{name}`", str(tmp_path), "written", "full", "No space left on device")

        monkeypatch.setattr(store, "_purge", no_room)
        try:
            store.delete_user("acme", "ann-gone")
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("the purge did not fail")
        monkeypatch.setattr(store, "_purge", purge)
        assert "preferences" in store.purges_left()
        assert store.delete_user("acme", "ann-gone")["preferences"] == 0  # sent again: no row left to delete
        # before: still marked, the text in the files (the fragment the failed purge did not rewrite)
        assert files_holding(tmp_path, "acme-ann-gone-") == []
    finally:
        go.set()
        other.join(30)
    assert store.purges_left() == set()
    assert files_holding(tmp_path, "globex-gus-") == []
