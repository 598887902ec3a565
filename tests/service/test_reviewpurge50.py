"""Review of purge50 (session 50): with replicas, a purge's removal of old versions is made after the store's
maintenance turn (`Store._drop_when_due`), the lease held through its wait, while other deletes of this process take
their turns. On a real folder, a store in replica mode (`sync_seconds` 0, its lease), as tests/service/test_reviewfd44.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

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
        with pytest.raises(StoreUnavailable):
            store.delete_user("acme", "ann-gone")
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


@pytest.mark.slow  # ~2 s (before the fix ~8 s: every delete of replica a); make test-scaleout
def test_another_replicas_delete_gets_the_lease_while_this_ones_removals_of_old_versions_overlap(tmp_path, monkeypatch):
    """Replica a's deletes of two tenants run at once, one after another, each holding the store's lease through its
    removal of old versions after its turn (`_drop_when_due`): their waits overlap, and each turn of a took the lease
    again from the one still held, so the lease was never let go while a's deletes kept coming. Replica b's delete
    waited for all of them (with a stream of DELETEs: its lease wait, 10 minutes, then a 503). Before session 50 a
    released the lease after each turn. Now a turn does not take again a lease held this way for longer than
    LEASE_SHARE_S (here 0.3 s): this process's turns wait for the removals to let it go, and leave it free LEASE_YIELD_S
    (0.5 s) for another replica's poll."""
    monkeypatch.setattr(tables, "READ_MARGIN_S", 0.3)
    monkeypatch.setattr(tables, "LEASE_SHARE_S", 0.3)
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    users = {tenant: [f"{tenant}{i}" for i in range(10)] for tenant in ("acme", "globex")}
    parts = [prefs(tenant, user, 1, start=100 * len(tenant) + i) for tenant, names in users.items() for i, user in enumerate(names)]
    a.add_preferences(*([x for part in parts for x in part[0]], *(np.concatenate([part[k] for part in parts]) for k in (1, 2, 3))))
    b.add_preferences(*prefs("initech", "ivy", 1, start=999))
    stop, errors = threading.Event(), []

    def deleting(tenant: str) -> None:
        try:
            for user in users[tenant]:
                if stop.is_set():
                    return
                a.delete_user(tenant, user)
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            errors.append(exc)

    threads = [threading.Thread(target=deleting, args=(t,), name=f"deletes-{t}") for t in users]
    for thread in threads:
        thread.start()
    try:
        while not (a.lease.depth and a._dropping):  # a's deletes under way, a removal holding the lease
            time.sleep(0.01)
        b.lease.wait_s = 6.0  # before: a TimeoutError, a's removals overlapping until its deletes ran out (~8 s)
        start = time.monotonic()
        assert b.delete_user("initech", "ivy")["preferences"] == 1
        took = time.monotonic() - start
        alive = [t.name for t in threads if t.is_alive()]
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert alive, took  # a's deletes still came while b got its turn
    assert took < 5.0, took
