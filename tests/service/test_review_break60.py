"""Review of break60: what its tests left unexercised. A users page's pruning to its first `limit + 1` users per table
(`pluralign.store.tenants._per_user`) never ran in any test (its rows came in id order), and `Store.stated_since`,
which a DELETE finished from the journal asks, was never asked of a user who did state something since."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, tenants
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_store import DIM, prefs
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("review-break60-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    adapter_every=1_000_000)
    with server:
        yield service


def test_pages_of_users_stored_in_reverse_id_order_keep_only_the_first_users_of_each_table(tmp_path, monkeypatch):
    """Users whose rows reach the table last-id first: each read of 2 rows brings a user before those kept, so the
    page drops the last one kept (the path rows in id order never take). Every page is the one the ids give, with
    every row of its user counted, and no table's read keeps more than `limit + 1` users however many the tenant has."""
    store = Store(str(tmp_path), "enc", DIM)
    users = {f"u{i:02d}": 1 + i % 3 for i in range(12)}  # rows each: 1, 2 or 3
    for user in sorted(users, reverse=True):
        store.add_preferences(*prefs("acme", user, users[user]))
    monkeypatch.setattr(tenants, "LISTING_ROWS_PER_READ", 2)
    real, kept = tenants._per_user, []

    def counted(*args, **kwargs):
        found = real(*args, **kwargs)
        kept.append(len(found))
        return found

    monkeypatch.setattr(tenants, "_per_user", counted)
    pages, after = [], None
    while True:
        page, more = store.tenant_users("acme", after, limit=2)
        pages.append([(u.user, u.preferences) for u in page])
        if not more:
            break
        after = page[-1].user
    assert pages == [list(users.items())[i:i + 2] for i in range(0, len(users), 2)]
    assert max(kept) <= 3, f"users kept by a table's read for a page of 2: {kept}"


def _stated(client, user: str, value: str) -> int:
    r = client.patch(f"/v1/users/{user}/stated-preferences", json={"preferences": {"length": value}})
    assert r.status_code == 200, r.text
    return r.json()["version"]


def _finish_stopped_delete(svc, tenant: str, user: str, began: float) -> None:
    """A DELETE of `user` begun at `began` whose process stopped before any step, finished from the journal."""
    rt = svc.runtime
    rt.delete_journal.release(rt.delete_journal.begin(tenant, user, began))
    assert svc.server.server.config.app.state.unfinished_deletes.run_once() == 1
    deadline = time.monotonic() + 120
    while rt.delete_journal.unfinished(tenant, user) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the DELETEs' thread finished it
    assert rt.delete_journal.unfinished(tenant, user) is None


def test_a_stopped_delete_finished_keeps_what_the_user_stated_after_it_began(svc):
    """The user PATCHed their stated preferences after the DELETE began (it was stopped): they came back, so the
    finish deletes only what they sent before, and what they stated stays (`came_back`: `Store.stated_since`)."""
    user = "stated-back-rb60"
    with svc.client("globex") as c:
        assert _stated(c, user, "less") == 1
        began = time.time()
        assert _stated(c, user, "more") == 2  # after the DELETE began
        _finish_stopped_delete(svc, "globex", user, began)
        page = c.get(f"/v1/users/{user}/stated-preferences").json()
    assert (page["version"], page["preferences"]) == (2, {"length": "more"}), page


def test_another_tenants_user_of_the_same_id_stating_after_a_stopped_delete_is_not_the_user_coming_back(svc):
    """acme's user of the same id states something after globex's user's DELETE began: globex's user sent nothing
    since, so the finish deletes everything of theirs, and acme's user keeps theirs."""
    user = "stated-other-rb60"
    with svc.client("globex") as globex, svc.client("acme") as acme:
        assert _stated(globex, user, "less") == 1
        began = time.time()
        assert _stated(acme, user, "more") == 1
        _finish_stopped_delete(svc, "globex", user, began)
        assert globex.get(f"/v1/users/{user}/stated-preferences").json()["version"] == 0
        assert acme.get(f"/v1/users/{user}/stated-preferences").json()["preferences"] == {"length": "more"}
