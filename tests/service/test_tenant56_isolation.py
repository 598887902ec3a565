"""Session tenant56's hostile tenant: what one tenant's flood of allowed work does to another tenant's requests, on
the real store in a temp folder (and the real app over HTTP where the route is what is probed)."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, prefs


def test_one_tenants_reads_of_many_users_never_push_another_tenants_history_out_of_the_cache(tmp_path):
    """The users' histories cached for retrieval, refits and profiles (`PLURALIGN_HISTORY_CACHE_MB`) are shared fairly
    between tenants: acme reading many big users in turn pushes out its own, never globex's smaller share. Before, one
    LRU over every tenant's: each of acme's reads past the bound pushed out globex's least recently used users, whose
    next chat or profile read their whole history from the table again (27 ms for 20 rows of 8-d here; seconds for a
    user of thousands of 384-d rows)."""
    store = Store(str(tmp_path / "store"), "enc", DIM, history_bytes=64 << 10)
    store.add_preferences(*prefs("globex", "bea", 20))
    for i in range(6):  # ~18 KB each: more than the bound in all
        store.add_preferences(*prefs("acme", f"a{i}", 100, start=1000 * (i + 1)))
    assert len(store.history("globex", "bea")) == 20
    for _ in range(2):
        for i in range(6):
            assert len(store.history("acme", f"a{i}")) == 100
    misses = store.histories.misses
    assert len(store.history("globex", "bea")) == 20
    assert store.histories.misses == misses, "globex's history was pushed out by acme's reads"
    # acme alone past its share keeps as much of its own as the bound leaves it
    assert store.histories.nbytes <= 64 << 10
    assert store.histories.nbytes > (64 << 10) - 2 * store.history("acme", "a0").nbytes
