"""Review cache57: how much of other tenants' histories one tenant's history larger than its share pushes out of the
users' histories cache, which keeps it while it fits the whole bound. In-memory histories: no store."""

from __future__ import annotations

from pluralign.store.history import HistoryCache
from tests.unit.test_reviewtenant56_history_books import history


def test_a_tenant_alternating_two_big_users_pushes_out_other_tenants_histories_once():
    """acme reads two users in turn, each larger than acme's share: the first load pushes out what it needs of the
    other tenants' histories; every later load pushes out acme's other big one (acme holds the most), never theirs."""
    small, big = history(10), history(3000)
    cache = HistoryCache(1 << 40)
    others = [(f"t{t}", f"u{u}") for t in range(5) for u in range(4)]
    for key in others:
        cache.get(key, lambda: small)
    cache.budget_bytes = cache.nbytes + big.nbytes // 2
    cache.get(("acme", "big0"), lambda: big)
    kept = [key for key in others if cache.peek(key) is not None]
    assert len(others) - len(kept) > 0 and cache.tenant_nbytes("acme") > cache.budget_bytes / 6
    for turn in range(1, 7):
        cache.get(("acme", f"big{turn % 2}"), lambda: big)
        assert cache.peek(("acme", f"big{turn % 2}")) is not None and cache.peek(("acme", f"big{(turn + 1) % 2}")) is None
        assert [key for key in others if cache.peek(key) is not None] == kept, f"load {turn + 1} pushed out others again"
        assert cache.nbytes <= cache.budget_bytes
