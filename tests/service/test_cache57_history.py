"""Session cache57: a user's history larger than their tenant's fair share of the users' histories cache, on the real
store in a temp folder."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, prefs


def test_a_history_larger_than_its_tenants_share_is_cached_while_it_fits_the_whole_bound(tmp_path):
    """With the cache full of five other tenants' histories, acme's big user (larger than acme's share, a sixth of the
    bound, but well within the bound) was never kept: each read of it went to the table (each chat reads a user's
    history up to three times). Now it is kept: what goes for it is acme's own other histories first, then the least
    recently used of the tenants holding the most, only as much as it needs; acme then holds the most, so the next
    history that needs room pushes the big one out first."""
    store = Store(str(tmp_path / "store"), "enc", DIM, history_bytes=1 << 30)
    others = [(f"t{t}", f"u{u}") for t in range(5) for u in range(3)]
    for n, (tenant, user) in enumerate(others):
        store.add_preferences(*prefs(tenant, user, 20, start=100 * n))
    for u in range(2):
        store.add_preferences(*prefs("acme", f"s{u}", 20, start=10_000 + 100 * u))
    store.add_preferences(*prefs("acme", "big", 600, start=20_000))
    store.add_preferences(*prefs("t0", "late", 20, start=30_000))
    store.history("acme", "big")
    big = store.histories.nbytes
    store.histories.invalidate([("acme", "big")])
    for tenant, user in [*others, ("acme", "s0"), ("acme", "s1")]:
        store.history(tenant, user)
    smalls = store.histories.nbytes
    store.histories.budget_bytes = smalls + big // 2  # full once the big one comes: acme's share is about a sixth of it
    assert big > store.histories.budget_bytes / 6

    assert len(store.history("acme", "big")) == 600
    misses = store.histories.misses
    for _ in range(3):  # a chat's reads
        assert len(store.history("acme", "big")) == 600
    assert store.histories.misses == misses, "acme's big user, larger than acme's share, was read from the table each time"
    assert store.histories.nbytes <= store.histories.budget_bytes
    assert store.histories.tenant_nbytes("acme") == big  # its tenant's others went first

    kept = [key for key in others if store.histories.peek(key) is not None]
    assert len(kept) >= len(others) - 4, f"{len(others) - len(kept)} of the other tenants' histories went for it"

    store.history("t0", "late")  # a load that needs room: acme holds the most, so its big one goes
    assert store.histories.peek(("acme", "big")) is None
    assert store.histories.peek(("t0", "late")) is not None
    assert store.histories.nbytes <= store.histories.budget_bytes
