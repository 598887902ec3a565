"""retract56: with replicas, a retraction of an id in no table is recorded pending and answered 202 (the row may wait in
another replica's log; an unknown id cannot be told from one on its way). A client sending DELETEs of random ids wrote
a record each, kept 7 days, without bound: the `retractions` table, which every move and retraction of every tenant
scans, grew with one tenant's spam. Now a user holds at most `PENDING_PER_USER` such records and a tenant
`PENDING_PER_TENANT` (lowered here); past either a 429 naming `pref_id`, with `Retry-After`, nothing recorded. Another
tenant's, and a stored row's retraction (a 200), are not held up.

A real service over HTTP (replica 0 of 2, the other never started: every id not stored is one that may be on its way),
real LanceDB in a temp dir. Slow-marked (a service start, ~5-10 s): `make test-scaleout`."""

from __future__ import annotations

import uuid

import pytest

from pluralign.store import retractions
from tests.service.test_retract54 import give_rule

pytestmark = pytest.mark.usefixtures("short_read_margin")


@pytest.mark.slow
def test_pending_retractions_of_ids_never_sent_are_bounded_per_user_and_per_tenant(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from tests.service.tiny import start_service

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(retractions, "PENDING_PER_USER", 3, raising=False)
    monkeypatch.setattr(retractions, "PENDING_PER_TENANT", 5, raising=False)
    server, a = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, store_uri=str(tmp_path / "store"),
                              replicas=2, replica_index=0, store_sync_ms=50, deletion_sweep_s=3600.0)
    with server, a.client("acme") as acme, a.client("globex") as globex:
        stored = give_rule(acme, "ann", 1)[0]

        def spam(client, user: str) -> int:
            return client.delete(f"/v1/users/{user}/preferences/{uuid.uuid4().hex}").status_code

        assert [spam(acme, "ann") for _ in range(3)] == [202] * 3
        r = acme.delete(f"/v1/users/ann/preferences/{uuid.uuid4().hex}")
        assert r.status_code == 429, r.text  # was a 202, and a record more, for every one
        error = r.json()["error"]
        assert error["param"] == "pref_id" and error["code"] == "too_many_pending_retractions", r.text
        assert "this user has 3 retractions" in error["message"], r.text
        assert 6 * 86400 < int(r.headers["Retry-After"]) <= 7 * 86400  # when the oldest of them goes

        assert [spam(acme, "bob") for _ in range(3)] == [202, 202, 429]  # the tenant's 5 reached
        r = acme.delete(f"/v1/users/carl/preferences/{uuid.uuid4().hex}")
        assert r.status_code == 429 and "the tenant has 5 retractions" in r.json()["error"]["message"], r.text
        assert a.runtime.store.retractions.count_rows() == 5  # nothing recorded past the bound

        assert spam(globex, "ann") == 202  # another tenant's are its own
        r = acme.delete(f"/v1/users/ann/preferences/{stored}")  # a stored row: taken back at once, bound or not
        assert r.status_code == 200 and r.json()["retracted"] == stored, r.text
