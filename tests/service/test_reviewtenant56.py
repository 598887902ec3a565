"""Review of session tenant56's fair sharing of the users' histories cache and of the adapter pool between tenants: on
the real store in a temp folder and the real adapter pool with the tiny LM."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, prefs


def test_reads_of_users_without_rows_are_bounded_by_the_history_cache(tmp_path):
    """A user with no rows (a chat's or a profile's user never seen, a deleted one) has an empty history, which held
    ~3.5 KiB (its Arrow table's and arrays' objects, the cache's entries) but counted 0 bytes against
    `PLURALIGN_HISTORY_CACHE_MB`: every id a tenant read was cached for the life of the process, even at a bound of 0, and
    the fair eviction, which takes from the tenant holding the most bytes, never took a tenant's empty histories. Now
    each cached history counts what its entry holds beside its arrays: a tenant reading ids without rows pushes out its
    own, never another tenant's, and the cache stays within its bound."""
    store = Store(str(tmp_path / "none"), "enc", DIM, history_bytes=0)
    for i in range(3):
        assert len(store.history("acme", f"ghost{i}")) == 0
    assert len(store.histories) == 0, "a bound of 0 cached users without rows"

    store = Store(str(tmp_path / "small"), "enc", DIM, history_bytes=32 << 10)
    store.add_preferences(*prefs("globex", "bea", 20))
    assert len(store.history("globex", "bea")) == 20
    for i in range(40):
        assert len(store.history("acme", f"ghost{i}")) == 0
    assert len(store.histories) < 16, f"{len(store.histories)} histories cached in a bound of 32 KiB"
    misses = store.histories.misses
    assert len(store.history("globex", "bea")) == 20
    assert store.histories.misses == misses, "acme's reads of users without rows pushed globex's history out"
