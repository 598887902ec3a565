"""Tenant-fair LRU eviction for the caches several tenants share: max-min fair shares of one byte budget.

Past the budget, the entry evicted is the least recently used of the tenant holding the most bytes, one at a time, so
one tenant's flood of new entries pushes out its own once it holds more than any other, never a smaller tenant's (one
LRU over every tenant's entries would push out every tenant's), and a tenant alone uses the whole budget. The service's
three shared caches use it: the embedded texts' vectors (`pluralign.embed.cache.ScopedVectors`), the users' histories
(`pluralign.store.history.HistoryCache`) and the loaded LoRA adapters (`pluralign.policy.adapters.AdapterPool`).

No installed library does this: cachetools' caches (`LRUCache` and the rest) evict over one key space, with no notion
of whose entry it is; `sortedcontainers.SortedList` keeps the tenants ranked by bytes.

Costs, for T tenants holding entries: a `get`, `put` or `pop` within the budget is O(1) (the ranking is not touched:
the tenants changed since the last eviction are noted, and ranked again at the next one, O(log T) each); each entry
evicted costs O(log T) (plus the entries passed over as pinned or busy: an entry just put that must stay, the adapters
chats are generating with). Not thread-safe: the cache using it holds its own lock around every call.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Container, Hashable, Iterator
from typing import Generic, TypeVar

from sortedcontainers import SortedList

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FairLRU(Generic[K, V]):
    """Entries (key -> value) of several tenants, each tenant's least recently used first, and the bytes they count:
    each entry `getsizeof(value)` (computed once, when it is put), each tenant holding one `tenant_bytes` beside them
    (its own bookkeeping). Keys are a tenant's own: the same key under two tenants is two entries.

    `evict(budget_bytes)` brings `nbytes` within `budget_bytes`, taking from the tenant holding the most (a tie: the
    tenant whose least recently used entry is the oldest)."""

    def __init__(self, getsizeof: Callable[[V], int], tenant_bytes: int = 0):
        self.getsizeof = getsizeof
        self.tenant_bytes = tenant_bytes
        self._tenants: dict[str, OrderedDict[K, list]] = {}  # tenant -> key -> [value, bytes, last use]
        self._held: dict[str, int] = {}  # tenant -> its entries' bytes
        self._bytes = 0  # every entry's bytes (the tenants' own not among them)
        self._count = 0  # entries
        self._ranked = SortedList()  # (-held bytes, its oldest entry's last use, tenant), as of `_rank_keys`
        self._rank_keys: dict[str, tuple[int, int, str]] = {}  # tenant -> its key in `_ranked`
        self._changed: set[str] = set()  # tenants whose place in `_ranked` is stale
        self._clock = itertools.count()

    @property
    def nbytes(self) -> int:
        """The bytes counted against a budget: every entry's, and `tenant_bytes` for each tenant holding one."""
        return self._bytes + self.tenant_bytes * len(self._tenants)

    def tenant_nbytes(self, tenant: str) -> int:
        """The bytes of `tenant`'s entries (0 for none; its `tenant_bytes` not among them)."""
        return self._held.get(tenant, 0)

    def __len__(self) -> int:
        return self._count

    def tenant_len(self, tenant: str) -> int:
        entries = self._tenants.get(tenant)
        return 0 if entries is None else len(entries)

    def tenants(self) -> list[str]:
        return list(self._tenants)

    def items(self, tenant: str | None = None) -> Iterator[tuple[str, K, V]]:
        """(tenant, key, value) of `tenant`'s entries (every tenant's when None), each tenant's least recently used
        first. Not while the cache changes."""
        for name in [tenant] if tenant is not None else list(self._tenants):
            for key, (value, _, _) in self._tenants.get(name, {}).items():
                yield name, key, value

    def peek(self, tenant: str, key: K) -> V | None:
        """The value, or None; its entry stays where it is in the order."""
        found = self._tenants.get(tenant, {}).get(key)
        return None if found is None else found[0]

    def get(self, tenant: str, key: K) -> V | None:
        """The value, or None; its entry becomes its tenant's most recently used."""
        entries = self._tenants.get(tenant)
        found = None if entries is None else entries.get(key)
        if found is None:
            return None
        found[2] = next(self._clock)
        entries.move_to_end(key)
        self._changed.add(tenant)
        return found[0]

    def put(self, tenant: str, key: K, value: V, last: bool = True) -> None:
        """`value` under `key` (in place of one there), its tenant's most recently used (`last=False`: its least)."""
        size = self.getsizeof(value)
        self.pop(tenant, key)
        entries = self._tenants.setdefault(tenant, OrderedDict())
        if last:
            entries[key] = [value, size, next(self._clock)]
        else:  # older than every entry of the tenant's
            oldest = next(iter(entries.values()), None)
            entries[key] = [value, size, -1 if oldest is None else oldest[2] - 1]
            entries.move_to_end(key, last=False)
        self._held[tenant] = self._held.get(tenant, 0) + size
        self._bytes += size
        self._count += 1
        self._changed.add(tenant)

    def pop(self, tenant: str, key: K) -> V | None:
        """The value removed, or None when there was none."""
        entries = self._tenants.get(tenant)
        found = None if entries is None else entries.pop(key, None)
        if found is None:
            return None
        self._held[tenant] -= found[1]
        self._bytes -= found[1]
        self._count -= 1
        if not entries:
            del self._tenants[tenant], self._held[tenant]
        self._note(tenant)
        return found[0]

    def pop_tenant(self, tenant: str) -> list[tuple[K, V]]:
        """Every entry of `tenant`'s, removed: (key, value), least recently used first."""
        entries = self._tenants.pop(tenant, None)
        if entries is None:
            return []
        self._bytes -= self._held.pop(tenant)
        self._count -= len(entries)
        self._note(tenant)
        return [(key, value) for key, (value, _, _) in entries.items()]

    def evict(self, budget_bytes: int, pinned: Container[K] = (), busy: Container[K] = ()) -> list[tuple[str, K, V]]:
        """Remove entries until `nbytes` is within `budget_bytes`, each the least recently used of the tenant holding
        the most bytes among the tenants with an entry not `pinned`; of that tenant's, the least recently used not
        `busy` goes first, else its least recently used. `pinned` entries never go: this may stop above the budget (nothing
        left but them). Returns (tenant, key, value) of those removed, in order; within the budget, [] at once."""
        evicted: list[tuple[str, K, V]] = []
        while self.nbytes > budget_bytes:
            self._rerank()
            found = self._first(pinned)
            if found is None:
                break
            tenant, rival = found
            while self.nbytes > budget_bytes:  # from this tenant while it still ranks before the next one
                key = self._oldest(tenant, pinned, busy)
                if key is None:
                    break
                evicted.append((tenant, key, self.pop(tenant, key)))
                if tenant not in self._tenants or (rival is not None and self._rank_key(tenant) > rival):
                    break
        return evicted

    def _first(self, pinned: Container[K]) -> tuple[str, tuple | None] | None:
        """The tenant holding the most with an entry not `pinned`, and the rank of the tenant after it (None: none)."""
        for i, (_, _, tenant) in enumerate(self._ranked):
            if any(key not in pinned for key in self._tenants[tenant]):
                return tenant, self._ranked[i + 1] if i + 1 < len(self._ranked) else None
        return None

    def _oldest(self, tenant: str, pinned: Container[K], busy: Container[K]) -> K | None:
        """`tenant`'s least recently used entry neither `pinned` nor `busy`, else its least recently used not
        `pinned` (None: every entry of its is pinned)."""
        first = None
        for key in self._tenants[tenant]:
            if key in pinned:
                continue
            if key not in busy:
                return key
            first = key if first is None else first
        return first

    def _rank_key(self, tenant: str) -> tuple[int, int, str]:
        """Where `tenant` ranks: the most bytes first, then the oldest least recently used entry, then by name."""
        return -self._held[tenant], next(iter(self._tenants[tenant].values()))[2], tenant

    def _note(self, tenant: str) -> None:
        """`tenant` changed: ranked again at the next eviction (one that holds nothing now and was not ranked, never:
        tenants come and go without an eviction between, and none is remembered)."""
        if tenant in self._tenants or tenant in self._rank_keys:
            self._changed.add(tenant)
        else:
            self._changed.discard(tenant)

    def _rerank(self) -> None:
        """The tenants changed since the last ranking put in their place in `_ranked`."""
        for tenant in self._changed:
            old = self._rank_keys.pop(tenant, None)
            if old is not None:
                self._ranked.remove(old)
            if tenant in self._tenants:
                key = self._rank_key(tenant)
                self._ranked.add(key)
                self._rank_keys[tenant] = key
        self._changed.clear()
