"""A tenant's removal at scale (`service.tenants`, `service.users.services.delete_batch`): its users are deleted a
batch at a time, each batch's rows with one predicate per table and one purge of the store, with the guarantees a
user's DELETE gives (nothing of the tenant left, another tenant's rows byte for byte). Session 48 deleted them one
by one through the user DELETE (~0.9 s a user, nearly all of it one purge of every table per user)."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_tenant48_removal import rows_of, wait_removed
from tests.service.tiny import start_service

pytestmark = pytest.mark.usefixtures("short_read_margin")

USERS = 8


def removed_total(client) -> float:
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    return sum(s.value for s in families["pluralign_tenants_removed"].samples if s.name.endswith("_total"))


@pytest.mark.slow  # 2.2-3.7 s at load 7-10 (a real purge of the store): make test-tenant-removal
def test_a_tenant_of_many_users_is_removed_a_batch_at_a_time_and_one_that_holds_nothing_is_not_counted(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """acme's 8 users (a stated preference each) go in one batch: the store is purged once,
    not once a user; nothing of acme is left and globex's rows are the same byte for byte. The removal
    counts in `pluralign_tenants_removed_total`; a removal of a tenant that holds nothing does not (before session 49
    every removal that reached `done` was counted)."""
    from pluralign.store.tables import Store

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt = svc.runtime
    change = [{"version": 1, "at": time.time(), "feature": "length", "direction": "less"}]
    for i in range(USERS):
        rt.store.add_stated_changes("acme", f"u{i:02d}", change)
    rt.store.add_stated_changes("globex", "bea", change)
    kept_rows = rows_of(rt, "globex")
    purges = []
    purge = Store._purge_tables
    monkeypatch.setattr(Store, "_purge_tables", lambda self, names: (purges.append(list(names)), purge(self, names))[1])
    with server, svc.client("admin") as admin:
        assert admin.post("/admin/tenants/acme/removal").status_code == 202
        removal = wait_removed(admin, "acme", timeout=60)
        assert removal["users_removed"] == USERS and removal["counts"]["stated_changes"] == USERS, removal
        assert removal["error"] is None, removal
        assert len([p for p in purges if p]) <= 2, purges  # one a batch (one user at a time: 8)
        assert all(rows == [] for rows in rows_of(rt, "acme").values())
        assert list((rt.settings.data_path / "deletes-in-progress").glob("*.json")) == []
        assert rows_of(rt, "globex") == kept_rows
        assert removed_total(admin) == 1

        assert admin.post("/admin/tenants/initech/removal").status_code == 404  # shows nowhere: a typo (since session 51)
        assert admin.post("/admin/tenants/initech/removal?even_if_unseen=true").status_code == 202  # a tenant that holds nothing
        assert wait_removed(admin, "initech")["users_removed"] == 0
        assert removed_total(admin) == 1


def test_a_removal_on_a_full_disk_is_a_507_and_a_tenant_that_holds_nothing_is_an_empty_page(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                          monkeypatch):
    """No room for the removal's record: a 507 `insufficient_storage`, as every route answers a full disk (before
    session 49 a 503 with Retry-After, which tells a client the service is down), with nothing removed (no record, the
    tenant's key still answers). The listing of a tenant that holds nothing is an empty page, not a 404 (the route
    declared a 404 of its own it never answered; the schema keeps the 404 every keyed route declares, for a path the
    router matches to none)."""
    import errno

    from service import tenants

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)

    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    with server, svc.client("admin") as admin, svc.client("acme") as acme:
        with monkeypatch.context() as m:
            m.setattr(tenants, "write_atomic", full)
            r = admin.post("/admin/tenants/acme/removal")
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        assert "nothing of the tenant was removed" in r.json()["error"]["message"], r.text
        assert admin.get("/admin/tenants/acme/removal").status_code == 404
        assert acme.get("/v1/users").status_code == 200  # its key was not revoked
        paths = admin.get("/schema/openapi.json").json()["paths"]
        assert "507" in paths["/admin/tenants/{tenant}/removal"]["post"]["responses"]
        assert admin.get("/admin/tenants/nobody/users").json() == {"tenant": "nobody", "users": [], "pending": {}, "next": None}

        # a removal done before: sent again on a full disk, the 507 leaves it the tenant's record (review of session 49:
        # it had been moved aside for the new one, and GET answered 404 until a removal was sent again with room)
        assert admin.post("/admin/tenants/initech/removal?even_if_unseen=true").status_code == 202  # it shows nowhere
        done = wait_removed(admin, "initech")
        with monkeypatch.context() as m:
            m.setattr(tenants, "write_atomic", full)
            assert admin.post("/admin/tenants/initech/removal").status_code == 507
        assert admin.get("/admin/tenants/initech/removal").json() == done
        assert [p.name for p in (svc.runtime.settings.data_path / tenants.REMOVALS_FOLDER).iterdir()] == [
            tenants.removal_path(svc.runtime.settings.data_path, "initech").name]

        # room for the record, none left to note the keys it revoked in it: the removal is begun (its keys are refused
        # and it runs), so a 202, not a 507 saying nothing was removed (review of session 49)
        written = []
        write_atomic = tenants.write_atomic

        def full_once_written(path, payload):
            written.append(path)
            if len(written) > 1:
                full(path, payload)
            write_atomic(path, payload)

        with monkeypatch.context() as m:
            m.setattr(tenants, "write_atomic", full_once_written)
            r = admin.post("/admin/tenants/acme/removal")
        assert r.status_code == 202, r.text
        assert acme.get("/v1/users").status_code == 401
        assert wait_removed(admin, "acme")["error"] is None
