"""A page of a tenant's users read on one replica shows what another replica committed a moment ago: the listing
looks at the tables' newest versions first (`Store.tenant_users`, `Store.tenant_user_ids`). Before session 49 it read
the versions the process last looked at, up to `store_sync_ms` old: a user whose first rows another replica had just
stored was not listed (nor found by a tenant removal's look until then)."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, prefs


def test_a_page_of_a_tenants_users_shows_another_replicas_commit_at_once(tmp_path):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=3600.0)  # replicas that look for newer versions once an hour
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=3600.0)
    a.add_preferences(*prefs("acme", "ann", 1))
    assert [u.user for u in a.tenant_users("acme")[0]] == ["ann"]
    b.add_preferences(*prefs("acme", "bob", 2))
    page, more = a.tenant_users("acme")
    assert [(u.user, u.preferences) for u in page] == [("ann", 1), ("bob", 2)] and not more, page
    b.add_stated_changes("acme", "cat", [{"version": 1, "at": 1.0, "feature": "length", "direction": "less"}])
    assert a.tenant_user_ids("acme") == {"ann", "bob", "cat"}
