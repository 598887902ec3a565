"""Tenant-fair LRU eviction for the caches several tenants share: max-min fair shares of one byte budget.

Past the budget, the entry evicted is the least recently used of the tenant holding the most bytes, one at a time, so
one tenant's flood of new entries pushes out its own once it holds more than any other, never a smaller tenant's (one
LRU over every tenant's entries would push out every tenant's), and a tenant alone uses the whole budget. The service's
four shared caches use it: the embedded texts' vectors (`pluralign.embed.cache.ScopedVectors`), the users' histories
(`pluralign.store.history.HistoryCache`), the loaded LoRA adapters (`pluralign.policy.adapters.AdapterPool`) and the
answers' named features (`pluralign.user.features`, counting entries, not bytes).

Pinned entries (a history just loaded or grown by a write's rows; an adapter just loaded and the others its batch of
chats needs) can make a tenant hold more than any other with nothing of its own left to give: the entries evicted then
are room taken from smaller tenants. `evict` counts those bytes (`taken`) and, with `take=False`, stops before taking
any. The caches that pin allow takes as `Takes` does: each tenant once per `TAKE_AGAIN_S` (ten minutes), all tenants
together `TAKES_IN_ALL` (four) times in any ten minutes. What a cache does with a take refused is its own policy: the
users' histories cache serves the history without keeping it (and lets the history that took grow into the room its
writes' rows need: `pluralign.store.history.HistoryCache`); the adapter pool serves the adapter beside its budget
without keeping it, a chat cannot generate without its adapter loaded (`AdapterPool._make_room`; the adapters chats
are generating with are `busy`, not pinned: they may go). Without the limit, a tenant reading such a big entry in a
loop took the others' room at every load: it then held the most, so the others' next loads pushed it out, and its
next load took their room again. The vectors and features caches pin nothing.

No installed library does this: cachetools' caches (`LRUCache` and the rest) evict over one key space, with no notion
of whose entry it is; `sortedcontainers.SortedList` keeps in order the levels of bytes the tenants hold.

Costs, for T tenants holding entries: a `get` is O(1) (its tenant becomes the most recently used of those holding as
much: ties go to the least recently used tenant); a `put` or `pop` moves its tenant to the level of what it holds now,
O(log T) at most (a level is created or emptied), once for a run of one tenant's (the move of one tenant waits, until
another tenant's operation or an eviction); an eviction costs as much per tenant it takes from, and takes from one
tenant while it holds more than any other (plus the tenants and entries passed over as pinned or busy: an entry just
put that must stay, the adapters chats are generating with). No operation costs a pass over the tenants, so none stalls
the others behind the lock of the cache using it. Not thread-safe: that cache holds its own lock around every call.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Hashable, Iterator
from typing import Generic, TypeVar

from sortedcontainers import SortedList

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# how long after a tenant's entry took room from smaller tenants' (`FairLRU.evict`'s `taken`) none of its may again
TAKE_AGAIN_S = 600.0
# how many takes of all tenants together any `TAKE_AGAIN_S` allows (`Takes`): each tenant's own allowance alone let many
# tenants, each with one big user, take once each per window, and together push out the others' entries at nearly every
# load (30 such tenants' histories: 90 takes and 900 of 80 others' histories pushed out in three windows, 12 and 120
# with the bound: `benchmarks/fair_caches.py --big-tenants 30`)
TAKES_IN_ALL = 4


class Takes:
    """The books of the room taken from smaller tenants (`FairLRU.evict`'s `taken`), one policy for the caches that
    allow it: a tenant may take once per `TAKE_AGAIN_S`, and all tenants together `in_all` times in any `TAKE_AGAIN_S`.
    What a cache does with a take refused is its own (the histories cache serves the history without keeping it, the
    adapter pool serves the adapter beside its budget). O(1) a call; not thread-safe (the cache's lock is held).

    `took`: tenant -> (`clock()`, the key of the entry that took: None once it left the cache), the earliest first;
    the two earliest past `TAKE_AGAIN_S` are forgotten at each take, so it holds about the tenants that took within a
    `TAKE_AGAIN_S` (no pass over it: that would hold every tenant's reads behind the cache's lock as long)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, in_all: int = TAKES_IN_ALL):
        self.clock = clock
        self.took: OrderedDict[str, tuple[float, Hashable | None]] = OrderedDict()
        self._all: deque[float] = deque(maxlen=in_all)  # `clock()` of the last `in_all` takes of all tenants, earliest first

    def may(self, tenant: str) -> bool:
        """Whether an entry of `tenant`'s may take room now: none of its took within `TAKE_AGAIN_S`, and fewer than
        `in_all` of all tenants' did."""
        now = self.clock()
        took = self.took.get(tenant)
        if took is not None and now - took[0] < TAKE_AGAIN_S:
            return False
        return len(self._all) < (self._all.maxlen or 0) or (bool(self._all) and now - self._all[0] >= TAKE_AGAIN_S)

    def taker(self, tenant: str) -> Hashable | None:
        """The key of `tenant`'s entry that took room last (None: none, or it left the cache)."""
        took = self.took.get(tenant)
        return None if took is None else took[1]

    def took_now(self, tenant: str, key: Hashable) -> None:
        """`tenant`'s entry `key` took room from smaller tenants' now."""
        now = self.clock()
        self._all.append(now)  # the earliest of the last `in_all` goes
        self.took.pop(tenant, None)
        self.took[tenant] = (now, key)
        for name, (at, _) in list(itertools.islice(self.took.items(), 2)):
            if now - at < TAKE_AGAIN_S:
                break
            del self.took[name]

    def left(self, tenant: str, key: Hashable) -> None:
        """`tenant`'s entry `key` left the cache: its take stays counted, but goes on with no entry of theirs."""
        took = self.took.get(tenant)
        if took is not None and took[1] == key:
            self.took[tenant] = (took[0], None)


class FairLRU(Generic[K, V]):
    """Entries (key -> value) of several tenants, each tenant's least recently used first, and the bytes they count:
    each entry `getsizeof(value)` (computed once, when it is put), each tenant holding one `tenant_bytes` beside them
    (its own bookkeeping). Keys are a tenant's own: the same key under two tenants is two entries.

    `evict(budget_bytes)` brings `nbytes` within `budget_bytes`, taking from the tenant holding the most (a tie: the
    tenant least recently used: whose entries were read, put or removed, an eviction's included, least recently)."""

    def __init__(self, getsizeof: Callable[[V], int], tenant_bytes: int = 0):
        self.getsizeof = getsizeof
        self.tenant_bytes = tenant_bytes
        self._tenants: dict[str, OrderedDict[K, tuple[V, int]]] = {}  # tenant -> key -> (value, bytes)
        self._held: dict[str, int] = {}  # tenant -> its entries' bytes
        self._bytes = 0  # every entry's bytes (the tenants' own not among them)
        self._count = 0  # entries
        self._levels = SortedList()  # every distinct `_held` value of the tenants, ascending
        self._at: dict[int, OrderedDict[str, None]] = {}  # held bytes -> the tenants holding that much, least recently used first
        # the one tenant whose move to the level of what it holds now waits (a run of one tenant's puts or removals, a
        # call of new vectors or an eviction of its own entries, moves it once), and the level it is filed at (None: none)
        self._deferred: str | None = None
        self._filed: int | None = None
        self.taken = 0  # the bytes the last `evict` took from smaller tenants for pinned entries

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
            for key, (value, _) in self._tenants.get(name, {}).items():
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
        entries.move_to_end(key)
        if tenant != self._deferred:  # (the deferred one goes last in its level when it moves)
            self._settle()
            self._at[self._held[tenant]].move_to_end(tenant)
        return found[0]

    def put(self, tenant: str, key: K, value: V, last: bool = True) -> None:
        """`value` under `key` (in place of one there), its tenant's most recently used (`last=False`: its least)."""
        size = self.getsizeof(value)
        entries = self._tenants.get(tenant)
        if entries is None:
            entries, held = self._tenants.setdefault(tenant, OrderedDict()), None
        else:
            held = self._held[tenant]
        replaced = entries.pop(key, None)
        entries[key] = (value, size)
        if not last:
            entries.move_to_end(key, last=False)
        if replaced is not None:
            self._bytes -= replaced[1]
            self._count -= 1
        self._held[tenant] = (0 if held is None else held) - (0 if replaced is None else replaced[1]) + size
        self._bytes += size
        self._count += 1
        self._changed(tenant, held)

    def pop(self, tenant: str, key: K) -> V | None:
        """The value removed, or None when there was none."""
        entries = self._tenants.get(tenant)
        found = None if entries is None else entries.pop(key, None)
        if found is None:
            return None
        held = self._held[tenant]
        self._held[tenant] = held - found[1]
        self._bytes -= found[1]
        self._count -= 1
        if not entries:
            del self._tenants[tenant], self._held[tenant]
        self._changed(tenant, held)
        return found[0]

    def pop_tenant(self, tenant: str) -> list[tuple[K, V]]:
        """Every entry of `tenant`'s, removed: (key, value), least recently used first."""
        entries = self._tenants.pop(tenant, None)
        if entries is None:
            return []
        held = self._held.pop(tenant)
        self._bytes -= held
        self._count -= len(entries)
        self._changed(tenant, held)
        return [(key, value) for key, (value, _) in entries.items()]

    def evict(self, budget_bytes: int, pinned: Container[K] = (), busy: Container[K] = (), take: bool = True) -> list[tuple[str, K, V]]:
        """Remove entries until `nbytes` is within `budget_bytes`, each the least recently used of the tenant holding
        the most bytes among the tenants with an entry not `pinned`; of that tenant's, the least recently used not
        `busy` goes first, else its least recently used. `pinned` entries never go: this may stop above the budget (nothing
        left but them). Returns (tenant, key, value) of those removed, in order; within the budget, [] at once.

        An entry removed while a tenant left with only `pinned` entries holds more than the entry's tenant is room taken
        from a smaller tenant for those pinned entries: `taken` counts its bytes (0 when none was). `take=False`: none
        is taken, this stops above the budget instead."""
        evicted: list[tuple[str, K, V]] = []
        self.taken = 0
        while self.nbytes > budget_bytes:
            self._settle()
            tenant = self._first(pinned)
            if tenant is None:
                break
            taking = self._levels[-1] > self._held[tenant]  # a tenant above it holds only pinned entries
            if taking and not take:
                break
            rival = self._rival(tenant)
            while (key := self._oldest(tenant, pinned, busy)) is not None:  # while it holds more than any other
                if taking:
                    self.taken += self._tenants[tenant][key][1]
                evicted.append((tenant, key, self.pop(tenant, key)))
                if self.nbytes <= budget_bytes or tenant not in self._tenants or self._held[tenant] <= rival:
                    break
        return evicted

    def _rival(self, tenant: str) -> int:
        """The most bytes another tenant holds at or below `tenant`'s level (-1: none); levels settled."""
        level = self._held[tenant]
        if len(self._at[level]) > 1:
            return level
        below = self._levels.index(level)
        return self._levels[below - 1] if below > 0 else -1

    def _first(self, pinned: Container[K]) -> str | None:
        """The tenant holding the most with an entry not `pinned`, the least recently used of those holding as much
        (None: none)."""
        for level in reversed(self._levels):
            for tenant in self._at[level]:
                if any(key not in pinned for key in self._tenants[tenant]):
                    return tenant
        return None

    def _oldest(self, tenant: str, pinned: Container[K], busy: Container[K]) -> K | None:
        """`tenant`'s least recently used entry neither `pinned` nor `busy`, else its least recently used not `pinned`
        (None: none)."""
        first = None
        for key in self._tenants.get(tenant, ()):
            if key in pinned:
                continue
            if key not in busy:
                return key
            first = key if first is None else first
        return first

    def _changed(self, tenant: str, held: int | None) -> None:
        """`tenant`, which held `held` bytes (None: nothing), changed what it holds: moved to its level at the next
        `_settle` (the one tenant deferred before it, another, moved now)."""
        if tenant == self._deferred:
            return  # filed where it was before its first change
        self._settle()
        self._deferred, self._filed = tenant, held

    def _settle(self) -> None:
        """The tenant deferred moved to the level of what it holds now, its most recently used tenant."""
        if self._deferred is not None:
            tenant, held = self._deferred, self._filed
            self._deferred = self._filed = None
            self._move(tenant, held)

    def _move(self, tenant: str, held: int | None) -> None:
        """`tenant`, filed at level `held` (None: none), moved to the level of what it holds now, as its most recently
        used tenant."""
        if held is not None:
            level = self._at[held]
            del level[tenant]
            if not level:
                del self._at[held]
                self._levels.remove(held)
        if tenant in self._tenants:
            now = self._held[tenant]
            level = self._at.get(now)
            if level is None:
                level = self._at[now] = OrderedDict()
                self._levels.add(now)
            level[tenant] = None
