"""`pluralign.cache.FairLRU` (session cache57), the tenant-fair eviction the three shared caches use, against a
reference that ranks every tenant afresh at each eviction, and its costs."""

from __future__ import annotations

import random
import time

import pytest

from pluralign.cache import FairLRU


class Reference:
    """The policy written the plain way: every tenant's bytes summed and every entry's last use compared, per eviction."""

    def __init__(self, tenant_bytes: int = 0):
        self.entries: dict[tuple[str, str], list] = {}  # (tenant, key) -> [size, last use]
        self.tenant_bytes = tenant_bytes
        self.clock = 0

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def put(self, tenant, key, size, last=True):
        self.entries.pop((tenant, key), None)
        if last:
            use = self.tick()
        else:
            use = min([u for (t, _), (_, u) in self.entries.items() if t == tenant], default=0) - 1
        self.entries[(tenant, key)] = [size, use]

    def get(self, tenant, key):
        if (tenant, key) in self.entries:
            self.entries[(tenant, key)][1] = self.tick()

    def nbytes(self):
        return sum(size for size, _ in self.entries.values()) + self.tenant_bytes * len({t for t, _ in self.entries})

    def evict(self, budget, pinned=(), busy=()):
        gone = []
        while self.nbytes() > budget:
            held: dict[str, int] = {}
            for (t, _), (size, _) in self.entries.items():
                held[t] = held.get(t, 0) + size
            oldest = {t: min(u for (t2, _), (_, u) in self.entries.items() if t2 == t) for t in held}
            for tenant in sorted(held, key=lambda t: (-held[t], oldest[t], t)):
                mine = sorted(((u, k) for (t, k), (_, u) in self.entries.items() if t == tenant and k not in pinned))
                if mine:
                    idle = [k for _, k in mine if k not in busy]
                    key = idle[0] if idle else mine[0][1]
                    del self.entries[(tenant, key)]
                    gone.append((tenant, key))
                    break
            else:
                break
        return gone


@pytest.mark.parametrize("seed", range(6))
def test_fair_lru_evicts_what_the_plain_policy_evicts(seed):
    """Random puts (at either end), reads, removals and evictions under pins and busy entries over 2-6 tenants: the
    same entries go, in the same order, and the bytes counted per tenant and in all stay true."""
    rng = random.Random(seed)
    overhead = rng.choice([0, 7])
    fair, ref = FairLRU(lambda size: size, tenant_bytes=overhead), Reference(overhead)
    tenants = [f"t{i}" for i in range(rng.randrange(2, 7))]
    for _ in range(600):
        tenant, key = rng.choice(tenants), f"k{rng.randrange(10)}"
        step = rng.random()
        if step < 0.45:
            size, last = rng.choice([1, 2, 5, 20]), rng.random() < 0.9
            fair.put(tenant, key, size, last=last)
            ref.put(tenant, key, size, last=last)
        elif step < 0.7:
            assert (fair.get(tenant, key) is None) == ((tenant, key) not in ref.entries)
            ref.get(tenant, key)
        elif step < 0.8:
            fair.pop(tenant, key)
            ref.entries.pop((tenant, key), None)
        elif step < 0.82:
            fair.pop_tenant(tenant)
            ref.entries = {k: v for k, v in ref.entries.items() if k[0] != tenant}
        else:
            budget = rng.randrange(0, 120)
            pinned = {f"k{rng.randrange(10)}" for _ in range(rng.randrange(3))}
            busy = {f"k{rng.randrange(10)}" for _ in range(rng.randrange(4))}
            assert [(t, k) for t, k, _ in fair.evict(budget, pinned, busy)] == ref.evict(budget, pinned, busy)
            assert fair.nbytes <= budget or all(k in pinned for _, k, _ in fair.items())
        assert fair.nbytes == ref.nbytes() and len(fair) == len(ref.entries)
        for name in tenants:
            assert fair.tenant_nbytes(name) == sum(s for (t, _), (s, _) in ref.entries.items() if t == name)


def test_a_tenant_alone_uses_the_whole_budget_and_a_flood_pushes_out_its_own_entries_first():
    fair = FairLRU(len)
    fair.put("globex", "pool", "x" * 30)
    for i in range(20):
        fair.put("acme", f"fresh {i}", "x" * 10)
        fair.evict(100)
    assert fair.tenant_nbytes("globex") == 30 and fair.tenant_nbytes("acme") == 70
    assert [key for _, key, _ in fair.items("acme")] == [f"fresh {i}" for i in range(13, 20)]
    fair.pop_tenant("globex")
    for i in range(3):
        fair.put("acme", f"more {i}", "x" * 10)
    assert fair.evict(100) == [] and fair.tenant_nbytes("acme") == 100  # the room freed is anyone's


def test_within_the_budget_an_operation_costs_the_same_however_many_tenants_hold_entries():
    """Puts, reads and removals within the budget rank no tenant (a ratio of times side by side, not seconds); past it,
    each entry evicted costs a rank update, not a pass over every tenant. Timed with the garbage collector off (its
    passes cost what every object of the process costs, not the policy) and the least of five runs, interleaved, so a
    run another process preempted does not count."""
    import gc

    def per_op(tenants: int, budget: int) -> float:
        fair = FairLRU(lambda size: size)
        for t in range(tenants):
            fair.put(f"t{t}", "k", 1)
        fair.evict(budget)
        gc.disable()
        try:
            started = time.perf_counter()
            for i in range(2000):
                fair.put("t0", f"x{i % 50}", 1)
                fair.get("t1", "k")
                fair.evict(budget)
            return time.perf_counter() - started
        finally:
            gc.enable()

    per_op(100, 1 << 30)  # warm
    for within in (True, False):  # within the bound; past it, every put evicting
        runs = [(per_op(100, 1 << 30 if within else 100), per_op(3000, 1 << 30 if within else 3000)) for _ in range(5)]
        few, many = min(r[0] for r in runs), min(r[1] for r in runs)
        assert many < 4 * few, f"with 3,000 tenants an operation cost {many / few:.1f}x what it cost with 100 (within: {within})"
