"""The users' histories cache's books under a random run of loads, writes' rows added and invalidations across tenants
(review tenant56): the bytes it counts are its histories', per tenant and in all, within its bound, and each tenant's
order holds exactly its cached users. Pure in-memory histories: no store."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa

from pluralign.store.history import HISTORY_ENTRY_BYTES, History, HistoryCache
from tests.unit.test_cache57_fair_lru import Tenant, Work


def history(rows: int) -> History:
    vectors = np.zeros((rows, 4), np.float32)
    meta = pa.Table.from_arrays([pa.array([False] * rows, pa.bool_()), pa.array(["no"] * rows, pa.string())], names=["tie", "rejected"])
    return History(meta, vectors, vectors.copy(), vectors.copy(), np.zeros(rows, bool))


def test_the_history_caches_books_stay_true_and_within_its_bound():
    rng = random.Random(56)
    made = {rows: history(rows) for rows in (0, 1, 10, 50, 100, 500, 1000)}
    for budget in (0, 3 * HISTORY_ENTRY_BYTES, 20_000, 60_000, 200_000):
        cache = HistoryCache(budget)
        for _ in range(200):
            key = (f"t{rng.randrange(4)}", f"u{rng.randrange(12)}")
            step = rng.random()
            if step < 0.6:
                cache.get(key, lambda: made[rng.choice([0, 1, 10, 100, 1000])])
            elif step < 0.85:
                cache.extend(key, lambda: made[rng.choice([1, 50, 500])])
            else:
                cache.invalidate([key])
            cached = {key: h for tenant, key, h in cache._cached.items() if key[0] == tenant}
            cost = {key: h.nbytes + HISTORY_ENTRY_BYTES for key, h in cached.items()}
            per_tenant: dict[str, int] = {}
            for (tenant, _), size in cost.items():
                per_tenant[tenant] = per_tenant.get(tenant, 0) + size
            assert cache.nbytes == sum(cost.values()) <= budget
            assert {tenant: cache.tenant_nbytes(tenant) for tenant in cache._cached.tenants()} == per_tenant
            assert len(cache) == len(cached) == sum(1 for _ in cache._cached.items())


def test_a_write_or_load_within_the_bound_works_as_much_however_many_tenants_are_cached():
    """Each load kept, write's rows added and invalidation planned the fair eviction's drops (a heap of every tenant's
    bytes, an iterator per tenant) under the cache's lock, whether or not the cache was past its bound: with 3,000
    tenants cached each cost ~2 ms, which every tenant's reads waited for (30x what it cost with 100). Within the bound
    nothing is planned: the same work whatever the number of tenants (counted, not timed: lines of Python run and
    tenant names hashed or compared, `Work`; a pass over every tenant would be 30 times the work)."""
    one = history(1)

    def cached(tenants: int) -> HistoryCache:
        cache = HistoryCache(1 << 40)
        for t in range(tenants):
            cache.get((Tenant(f"t{t}"), "u"), lambda: one)
        return cache

    def writes(cache: HistoryCache) -> None:
        for i in range(30):
            cache.extend((Tenant("t0"), "u"), lambda: history(0))
            cache.invalidate([(Tenant("t0"), "nobody")])
            cache.get((Tenant("t1"), f"new {i}"), lambda: one)

    few, many = (Work.of(lambda c=cached(n): writes(c)) for n in (100, 3000))
    assert many < 2 * few, f"with 3,000 tenants cached a write or load cost {many / few:.1f}x the work of 100"
