"""With replicas, a DELETE waits for the store's maintenance lease (`pluralign.store.lease`); when
another replica keeps it past the wait, the client is told to come back (503 with Retry-After), not
given a 500, and the DELETE sent again goes through."""

from __future__ import annotations

import pytest

from pluralign.store.lease import Lease
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service


@pytest.mark.usefixtures("short_read_margin")  # its purge's wait for readers: tests/service/conftest.py
def test_a_delete_while_another_replica_holds_the_lease_is_a_503_then_goes_through(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, store_sync_ms=0)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        svc.runtime.wait_for_background()
        svc.runtime.store.lease.wait_s = 0.5
        other = Lease(svc.runtime.store.lease.table)  # another replica's turn
        with other:
            r = acme.delete("/v1/users/ann")
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "30" and "another replica" in r.text
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 2  # nothing of hers deleted yet
        r = acme.delete("/v1/users/ann")
        assert r.status_code == 200, r.text
        assert r.json()["deleted"]["preferences"] == 2


@pytest.mark.usefixtures("short_read_margin")  # its purge's wait for readers: tests/service/conftest.py
def test_a_delete_whose_lease_another_replica_took_meanwhile_is_a_503_and_the_next_turn_purges(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Mid-DELETE (rows gone, old versions not yet removed) another replica takes the lease, as it does
    when this one was paused past the TTL: the DELETE stops before its next step with a 503 and
    Retry-After, and the next turn on the store finishes the purge, so no file keeps her text."""
    import threading
    import time

    from tests.service.test_break20_delete import files_holding

    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, store_sync_ms=0)
    store = svc.runtime.store
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", marker="okapi-marker", n=2)
        svc.runtime.wait_for_background()
        answer = {}
        deleting = threading.Thread(target=lambda: answer.update(r=acme.delete("/v1/users/ann")))
        deleting.start()
        began = time.monotonic()
        # her rows are gone and the lease is held: the DELETE is in its purge (its tables' rewrites, then READ_MARGIN_S, here
        # 0.1 s, before the old versions go); any later step that finds the lease taken answers the 503 (reviewsuite45: with
        # no check before the old versions' removal it was a 503 still, 3 runs of 3 at 0.1 s and 2 of 2 at 2 s)
        while store.lease.table.count_rows("holder != ''") == 0 or store.tables["preferences"].count_rows("user_id = 'ann'"):
            assert time.monotonic() - began < 30 and deleting.is_alive(), answer
            time.sleep(0.01)
        store.lease.table.update(where="name = 'store'", values={"holder": "other-replica", "expires": time.time() + 60})
        deleting.join(30)
        r = answer["r"]
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "30" and "another process" in r.text
        store.lease.table.update(where="name = 'store'", values={"holder": "", "expires": 0.0})  # that replica's turn ends
        r = acme.delete("/v1/users/ann")  # the DELETE sent again: her rows were already gone
        assert r.status_code in (200, 404), r.text
        assert files_holding(tmp_path / "data", "okapi-marker") == []


def test_a_delete_of_no_one_does_not_hold_the_replicas_lease(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """A DELETE of a user with no rows (a 404) has nothing to purge: before, with replicas, it still
    slept `store_sync_ms` + READ_MARGIN_S (2 s) holding the store-wide lease, so a client sending such
    DELETEs kept every replica's deletes and compactions waiting. The margin is made 30 s here, so the
    wait, had it happened, is told apart from a loaded machine's slow DELETE (1.1 s of the 2 s bound seen
    with the test on one core beside six CPU hogs)."""
    import time

    from pluralign.store import tables

    monkeypatch.setattr(tables, "READ_MARGIN_S", 30.0)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, store_sync_ms=0)
    with server, svc.client("acme") as acme:
        acme.delete("/v1/users/nobody-yet")  # the first request's one-off costs
        began = time.monotonic()
        r = acme.delete("/v1/users/nobody", timeout=60)
        took = time.monotonic() - began
        assert r.status_code == 404, r.text
        assert took < tables.READ_MARGIN_S / 2, took
