"""`pluralign.cache.FairLRU` (session cache57), the tenant-fair eviction the three shared caches use, against a
reference that ranks every tenant afresh at each eviction, and its costs."""

from __future__ import annotations

import random
import sys

import pytest

from pluralign.cache import FairLRU


class Reference:
    """The policy written the plain way: every tenant's bytes summed and its entries' last uses compared, per eviction (a
    tie between tenants: the one whose entries were read, put or removed least recently)."""

    def __init__(self, tenant_bytes: int = 0):
        self.entries: dict[tuple[str, str], list] = {}  # (tenant, key) -> [size, last use]
        self.touched: dict[str, int] = {}  # tenant -> its last read, put or removal
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
        self.touched[tenant] = self.tick()

    def get(self, tenant, key):
        if (tenant, key) in self.entries:
            self.entries[(tenant, key)][1] = self.tick()
            self.touched[tenant] = self.tick()

    def pop(self, tenant, key):
        if self.entries.pop((tenant, key), None) is not None:
            self.touched[tenant] = self.tick()

    def nbytes(self):
        return sum(size for size, _ in self.entries.values()) + self.tenant_bytes * len({t for t, _ in self.entries})

    def evict(self, budget, pinned=(), busy=(), take=True):
        gone = []
        self.taken = 0
        while self.nbytes() > budget:
            held: dict[str, int] = {}
            for (t, _), (size, _) in self.entries.items():
                held[t] = held.get(t, 0) + size
            for tenant in sorted(held, key=lambda t: (-held[t], self.touched[t])):
                mine = sorted(((u, k) for (t, k), (_, u) in self.entries.items() if t == tenant and k not in pinned))
                if mine:
                    taking = max(held.values()) > held[tenant]  # a larger tenant left with only pinned entries
                    if taking and not take:
                        return gone
                    idle = [k for _, k in mine if k not in busy]
                    key = idle[0] if idle else mine[0][1]
                    self.taken += self.entries[(tenant, key)][0] if taking else 0
                    self.pop(tenant, key)
                    gone.append((tenant, key))
                    break
            else:
                break
        return gone


@pytest.mark.parametrize("seed", range(6))
def test_fair_lru_evicts_what_the_plain_policy_evicts(seed):
    """Random puts (at either end), reads, removals and evictions under pins and busy entries over 2-6 tenants, some
    not to take a smaller tenant's room for pinned entries (fair58): the same entries go, in the same order, the same
    bytes are counted as taken, and the bytes counted per tenant and in all stay true."""
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
            ref.pop(tenant, key)
        elif step < 0.82:
            fair.pop_tenant(tenant)
            ref.entries = {k: v for k, v in ref.entries.items() if k[0] != tenant}
        else:
            budget = rng.randrange(0, 120)
            pinned = {f"k{rng.randrange(10)}" for _ in range(rng.randrange(3))}
            busy = {f"k{rng.randrange(10)}" for _ in range(rng.randrange(4))}
            take = rng.random() < 0.7
            assert [(t, k) for t, k, _ in fair.evict(budget, pinned, busy, take)] == ref.evict(budget, pinned, busy, take)
            assert fair.taken == ref.taken
            assert fair.nbytes <= budget or not take or all(k in pinned for _, k, _ in fair.items())
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


def test_of_tenants_holding_as_much_the_least_recently_used_gives_up_an_entry():
    """Equal entries are common (every adapter of one rank is the same size, every calibration pool the same number of
    vectors): among tenants holding as much, the one least recently used goes first, whatever its name, so an idle
    tenant's entry does not outlive a busy one's."""
    fair = FairLRU(lambda size: size)
    for tenant in ["acme", "globex", "initech", "zeta"]:
        fair.put(tenant, "adapter", 10)
    fair.get("acme", "adapter")
    fair.get("globex", "adapter")
    fair.put("umbrella", "adapter", 10)
    assert [tenant for tenant, _, _ in fair.evict(40)] == ["initech"]
    fair.put("wayne", "adapter", 10)
    assert [tenant for tenant, _, _ in fair.evict(40)] == ["zeta"]


class Tenant(str):
    """A tenant name that counts each time it is hashed or compared (in `Work.touched`)."""

    def __hash__(self):
        Work.touched += 1
        return str.__hash__(self)

    def __eq__(self, other):
        Work.touched += 1
        return str.__eq__(self, other)

    def __ne__(self, other):
        Work.touched += 1
        return str.__ne__(self, other)

    def __lt__(self, other):
        Work.touched += 1
        return str.__lt__(self, other)

    def __gt__(self, other):
        Work.touched += 1
        return str.__gt__(self, other)


class Bytes(int):
    """A byte count that counts each sum, difference, negation and comparison it takes part in (in `Work.touched`);
    sums and differences stay `Bytes`, so the totals a cache keeps per tenant count too."""

    def _count(self, result):
        Work.touched += 1
        return Bytes(result) if isinstance(result, int) and not isinstance(result, bool) else result

    def __add__(self, other): return self._count(int(self) + int(other))
    def __radd__(self, other): return self._count(int(other) + int(self))
    def __sub__(self, other): return self._count(int(self) - int(other))
    def __rsub__(self, other): return self._count(int(other) - int(self))
    def __mul__(self, other): return self._count(int(self) * int(other))
    def __rmul__(self, other): return self._count(int(other) * int(self))
    def __neg__(self): return self._count(-int(self))
    def __eq__(self, other): return self._count(int.__eq__(self, other))
    def __ne__(self, other): return self._count(int.__ne__(self, other))
    def __lt__(self, other): return self._count(int.__lt__(self, other))
    def __le__(self, other): return self._count(int.__le__(self, other))
    def __gt__(self, other): return self._count(int.__gt__(self, other))
    def __ge__(self, other): return self._count(int.__ge__(self, other))
    __hash__ = int.__hash__


class Work:
    """The work `op()` does, counted rather than timed (a count is the same on an idle machine and a loaded one): the
    lines of Python it runs (each pass of a loop is one more) and the times it hashes, compares or adds a `Tenant` name
    or a `Bytes` count (the loops in C: a `max`, `sum`, `heapify` or `sorted` over the tenants touch each one)."""

    touched = 0

    @classmethod
    def of(cls, op) -> int:
        lines = 0

        def trace(frame, event, arg):
            nonlocal lines
            lines += event == "line"
            return trace

        cls.touched = 0
        sys.settrace(trace)
        try:
            op()
        finally:
            sys.settrace(None)
        return lines + cls.touched


def filled(tenants: int, evicted: bool = True) -> FairLRU:
    """`tenants` tenants holding three one-byte entries each, then (`evicted`) one entry evicted."""
    fair = FairLRU(Bytes)
    for t in range(tenants):
        for k in range(3):
            fair.put(Tenant(f"t{t}"), f"k{k}", 1)
    if evicted:
        fair.evict(fair.nbytes - 1)
    return fair


def test_an_operation_works_as_much_however_many_tenants_hold_entries():
    """Puts, reads and removals within the budget, and each entry evicted past it, cost the same work with 3,000 tenants
    as with 100 (a log of the tenants at most: a pass over every tenant would be 30 times the work), counted, not timed.
    That holds too for the first eviction after a read of every tenant's least recently used entry, and for the first
    eviction of a cache that filled up without one: those reads and puts left their tenants to be ranked again at the
    next eviction, which did 3,000 tenants' worth of work under the lock every tenant's reads take (13-65 ms in
    benchmarks/fair_caches.py; review cache57)."""

    def within(fair: FairLRU) -> None:
        for i in range(20):
            fair.put(Tenant("t0"), f"x{i}", 1)
            fair.get(Tenant("t1"), "k0")
            fair.pop(Tenant("t2"), f"gone{i}")
            fair.evict(1 << 40)

    def past(fair: FairLRU) -> None:
        for i in range(20):
            fair.put(Tenant(f"t{i}"), f"x{i}", 1)
            fair.evict(fair.nbytes - 1)

    def after_reads(fair: FairLRU):
        for t in range(len(fair.tenants())):  # every tenant's least recently used read (not counted)
            fair.get(Tenant(f"t{t}"), "k0")
        fair.put(Tenant("t5"), "new", 1)
        return lambda: fair.evict(fair.nbytes - 1)

    for name, op in [("within the budget", within), ("past the budget", past)]:
        few, many = (Work.of(lambda f=filled(n), op=op: op(f)) for n in (100, 3000))
        assert many < 2 * few, f"{name}, 3,000 tenants cost {many / few:.1f}x the work of 100"
    few, many = (Work.of(after_reads(filled(n))) for n in (100, 3000))
    assert many < 2 * few, f"an eviction after a read of every tenant's, 3,000 tenants cost {many / few:.1f}x the work of 100"
    few, many = (Work.of(lambda f=filled(n, evicted=False): f.evict(f.nbytes - 1)) for n in (100, 3000))
    assert many < 2 * few, f"the first eviction of a cache filled, 3,000 tenants cost {many / few:.1f}x the work of 100"
