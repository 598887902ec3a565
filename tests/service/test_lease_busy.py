"""With replicas, a DELETE waits for the store's maintenance lease (`pluralign.store.lease`); when
another replica keeps it past the wait, the client is told to come back (503 with Retry-After), not
given a 500, and the DELETE sent again goes through."""

from __future__ import annotations

from pluralign.store.lease import Lease
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service


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
