"""The store's maintenance lease table (`pluralign.store.lease`) removed or damaged by an operator
while replicas run: their deletes and compactions must go on (the table made again with its one
free row), not wait 10 minutes and answer 503 for good, and the replicas must still take turns."""

from __future__ import annotations

import shutil
import threading

import pytest

from pluralign.store import Store
from pluralign.store.lease import TABLE
from tests.service.test_store import DIM, prefs

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def damage(store, how: str, tmp_path) -> None:
    if how == "table removed":
        shutil.rmtree(tmp_path / f"{TABLE}.lance")
    elif how == "row removed":
        store.lease.table.delete("true")
    else:  # two rows, as two processes that each put one back would leave
        store.lease.table.add([{"name": "store", "holder": "", "expires": 0.0}])


@pytest.mark.parametrize("how", ["table removed", "row removed", "row doubled"])
def test_replicas_go_on_taking_turns_after_the_lease_table_is_damaged(tmp_path, how):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    damage(a, how, tmp_path)
    a.lease.wait_s = b.lease.wait_s = 5.0
    assert a.delete_user("t", "u")["preferences"] == 2  # before: TimeoutError after the whole wait
    done = threading.Event()
    with a.lease:  # and they still take turns: b waits while a holds it
        worker = threading.Thread(target=lambda: (b.compact(every_table=True), done.set()))
        worker.start()
        assert not done.wait(0.5)
    assert done.wait(10)
    worker.join()
    assert a.lease.table.count_rows() == 1


def test_a_stale_replica_whose_version_was_removed_does_not_take_a_held_lease(tmp_path):
    """A replica reading a minute stale (`sync_seconds`) whose lease-table version another removed
    meets Lance "Not found": it opens the table again, and must not write over a lease that is held."""
    from datetime import timedelta

    from pluralign.store.versions import remove_old_versions

    stale = Store(str(tmp_path), "enc", DIM, sync_seconds=600)
    holder = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    assert stale.lease.table.count_rows() == 1  # its handle sits on this version for 10 minutes
    with holder.lease:
        holder.lease.table.update(where="name = 'x'", values={"expires": 0.0})  # newer versions
        remove_old_versions(holder.lease.table, timedelta(0))  # the stale one's version goes
        stale.lease.wait_s = 1.0
        with pytest.raises(TimeoutError):
            with stale.lease:
                pass
        holder.lease.confirm()  # still the holder


def test_a_lease_left_by_a_dead_holder_with_a_clock_far_ahead_is_free_after_all(tmp_path):
    """A holder whose clock ran hours ahead (a VM resumed with a wrong time) and then died leaves an
    expiry hours away: every replica's deletes and compactions waited for it (503s for hours). An
    expiry further ahead than any renewal can set (`lease.MAX_AHEAD` TTLs past now) is taken as free."""
    import time

    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    a.lease.table.update(where="name = 'store'", values={"holder": "dead-replica", "expires": time.time() + 6 * 3600})
    a.lease.wait_s = 3.0
    assert a.delete_user("t", "u")["preferences"] == 2  # before: TimeoutError after the whole wait
    live = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    live.lease.wait_s = 1.0
    with a.lease:  # a lease renewed as usual still keeps the others out
        with pytest.raises(TimeoutError):
            with live.lease:
                pass
