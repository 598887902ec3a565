"""A tenant's users as the store holds them (`pluralign.store.tenants`, `Store.tenant_users`): every table counts,
pages are in id order and never shift, another tenant's users never appear, and a page read while a DELETE removes
old versions is read again (a tenant's removal purges user after user while an operator pages)."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, UserRecord
from tests.service.test_store import DIM, prefs


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("acme", "bob", 3))
    store.add_preferences(*prefs("acme", "ann", 2))
    store.add_preferences(*prefs("globex", "bea", 2))
    store.put_user(UserRecord(tenant="acme", user_id="cat", created_at=1, updated_at=time.time() + 5))
    store.add_stated_changes("acme", "cat", [{"version": 1, "at": 1.0, "feature": "length", "direction": "less"}])
    return store


def test_pages_of_a_tenants_users_count_every_table_and_never_another_tenants(store):
    page, more = store.tenant_users("acme", limit=2)
    assert [(u.user, u.preferences, u.has_profile) for u in page] == [("ann", 2, False), ("bob", 3, False)] and more
    rest, more = store.tenant_users("acme", after="bob")
    assert [(u.user, u.preferences, u.stated_changes, u.has_profile) for u in rest] == [("cat", 0, 1, True)] and not more
    assert rest[0].last_activity > time.time()  # the users row's updated_at, the latest of their rows
    assert store.tenant_user_ids("acme") == {"ann", "bob", "cat"}
    assert [u.user for u in store.tenant_users("globex")[0]] == ["bea"]
    assert store.tenant_users("initech") == ([], False)
    with pytest.raises(ValueError, match="limit"):
        store.tenant_users("acme", limit=0)


def test_a_page_that_meets_a_purges_removal_of_old_versions_is_read_again(store, monkeypatch):
    from pluralign.store import tenants

    real, calls = tenants.tenant_users, []

    def removed_meanwhile(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("LanceError(IO): Not found: preferences.lance/data/x.lance")
        return real(*args, **kwargs)

    monkeypatch.setattr(tenants, "tenant_users", removed_meanwhile)
    assert [u.user for u in store.tenant_users("acme")[0]] == ["ann", "bob", "cat"] and len(calls) == 2


def test_the_cli_lists_the_users_of_the_store_the_service_is_set_to_with_a_data_dir_given(store, tmp_path, monkeypatch, capsys):
    """Replicas keep their store apart from each one's data folder (PLURALIGN_STORE_URI, deploy/README.md): `pluralign
    tenants users --data-dir` reads that store, as the command's docstring says, not a `lancedb/` the data folder never
    held. Before session 48's review it printed `{"users":0,"next":null}`: no users, before a removal of them all."""
    from training.cli import main

    data = tmp_path / "replica-a"
    data.mkdir()
    monkeypatch.setenv("PLURALIGN_STORE_URI", str(tmp_path))
    assert main(["tenants", "users", "--tenant", "acme", "--data-dir", str(data), "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ['{"user":"ann"', '{"user":"bob"', '{"users":2']
    assert lines[-1] == '{"users":2,"next":"bob"}' and not (data / "lancedb").exists()
