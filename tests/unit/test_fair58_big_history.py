"""Session fair58: a user's history larger than their tenant's share of the users' histories cache, read again and
again, takes room from the other tenants' histories at most once per `TAKE_AGAIN_S` (review cache57 found that each of
its loads pushed out the other tenants' histories again, as many as it needed). In-memory histories: no store."""

from __future__ import annotations

from pluralign.store.history import HISTORY_ENTRY_BYTES, HistoryCache
from tests.unit.test_cache57_fair_lru import Tenant, Work
from tests.unit.test_reviewtenant56_history_books import history

OTHERS = [(f"t{t}", f"u{u}") for t in range(5) for u in range(4)]
ACME_SMALL = [("acme", f"s{u}") for u in range(4)]


def filled(big_rows: int = 3000, clock=None) -> tuple[HistoryCache, object]:
    """Five tenants' four small histories and acme's four, then a bound that leaves room for half of acme's big one."""
    small, big = history(10), history(big_rows)
    cache = HistoryCache(1 << 40) if clock is None else HistoryCache(1 << 40, clock=clock)
    for key in OTHERS + ACME_SMALL:
        cache.get(key, lambda: small)
    cache.budget_bytes = cache.nbytes + big.nbytes // 2
    return cache, big


def cycle(cache: HistoryCache, big) -> int:
    """acme reads its big user, then its small ones (which push the big one out: acme holds the most), then each other
    tenant reads its users again: how many of those had been pushed out (each such read goes to LanceDB)."""
    small = history(10)
    cache.get(("acme", "big"), lambda: big)
    for key in ACME_SMALL:
        cache.get(key, lambda: small)
    gone = sum(cache.peek(key) is None for key in OTHERS)
    for key in OTHERS:
        cache.get(key, lambda: small)
    assert cache.nbytes <= cache.budget_bytes
    return gone


def test_a_big_user_read_again_and_again_pushes_out_other_tenants_histories_once():
    """Before, each cycle pushed out as many of the other tenants' histories again (2 of 20 here, each cycle: 16 in 8
    cycles); now only the first load of the big user takes their room, the later ones are served and not kept."""
    cache, big = filled()
    first = cycle(cache, big)
    assert first > 0  # the first load took room from the others: it was kept
    later = [cycle(cache, big) for _ in range(7)]
    assert sum(later) == 0, f"each later load of acme's big user pushed out others' histories again: {later}"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached(cache: HistoryCache) -> list:
    """Every cached user, each tenant's least recently used first (peeked: the order stays)."""
    return [key for _, key, _ in cache._cached.items()]


def test_a_tenant_alone_keeps_its_big_user_each_time_it_reads_it():
    """No other tenant needs the room: each load of acme's big user is kept (its own small ones make room for it), and
    acme uses the whole bound."""
    small, big = history(10), history(3000)
    cache = HistoryCache(1 << 40)
    for key in ACME_SMALL:
        cache.get(key, lambda: small)
    one = cache.nbytes // len(ACME_SMALL)
    cache.budget_bytes = big.nbytes + HISTORY_ENTRY_BYTES + 2 * one  # the big one and two small ones
    for _ in range(5):
        cache.get(("acme", "big"), lambda: big)
        assert cache.peek(("acme", "big")) is big
        assert cache.budget_bytes - one < cache.tenant_nbytes("acme") == cache.nbytes <= cache.budget_bytes
        for key in ACME_SMALL:
            cache.get(key, lambda: small)
        assert cache.peek(("acme", "big")) is None  # pushed out by acme's own small ones


def test_a_load_that_may_not_take_room_is_served_and_pushes_out_nothing():
    """Once acme's big user took the others' room, a load of it that would take some again is returned but not kept,
    and every history pushed out for it meanwhile (acme's own small ones first) is back in its place."""
    cache, big = filled()
    cycle(cache, big)  # the one take
    before = cached(cache)
    assert cache.get(("acme", "big"), lambda: big) is big
    assert cached(cache) == before and cache.peek(("acme", "big")) is None
    assert cache.nbytes <= cache.budget_bytes and ("acme", "big") not in cache._checked


def test_a_big_history_is_kept_where_it_takes_no_smaller_tenants_room_and_takes_again_after_take_again_s():
    """After its one take, acme's big user is still kept where the room is free, or held by a tenant holding more than
    it would; `TAKE_AGAIN_S` after that take, a load of it may take the smaller tenants' room once more."""
    from pluralign.store.history import TAKE_AGAIN_S

    clock = Clock()
    cache, big = filled(clock=clock)
    cycle(cache, big)
    cache.invalidate(OTHERS[:8])  # two tenants' histories written elsewhere: their room is free
    cache.get(("acme", "big"), lambda: big)
    assert cache.peek(("acme", "big")) is big, "kept in free room"
    cache.invalidate([("acme", "big")])
    cache.get(("globex", "huge"), lambda: history(6000))  # globex now holds more than acme's big user would
    others = [key for key in cached(cache) if key[0] not in ("acme", "globex")]
    cache.get(("acme", "big"), lambda: big)
    assert cache.peek(("acme", "big")) is big and cache.peek(("globex", "huge")) is None, "kept in globex's room"
    assert [key for key in cached(cache) if key[0] not in ("acme", "globex")] == others
    for key in ACME_SMALL:  # acme's big user pushed out again, the others' room filled again
        cache.get(key, lambda: history(10))
    for key in OTHERS:
        cache.get(key, lambda: history(10))
    clock.now += TAKE_AGAIN_S - 1
    assert cycle(cache, big) == 0
    clock.now += 1
    assert cycle(cache, big) > 0 and cycle(cache, big) == 0


def test_a_big_users_load_taken_or_not_kept_works_as_much_however_many_tenants_are_cached():
    """A load of a big user that takes smaller tenants' room, and one that may not (served, what went for it put back),
    cost the same work with 3,000 tenants cached as with 100 (counted, not timed: `Work`; a pass over the tenants would
    be 30 times the work)."""
    small, big = history(1), history(3000)

    def big_loads(tenants: int):
        cache = HistoryCache(1 << 40)
        for t in range(tenants):
            cache.get((Tenant(f"t{t}"), "u"), lambda: small)
        for u in range(3):
            cache.get((Tenant("acme"), f"s{u}"), lambda: small)
        cache.budget_bytes = cache.nbytes + big.nbytes // 2

        def run() -> None:
            cache.get((Tenant("acme"), "big"), lambda: big)  # taken
            assert cache.peek((Tenant("acme"), "big")) is big
            for u in range(3):
                cache.get((Tenant("acme"), f"s{u}"), lambda: small)
            for i in range(20):  # other tenants' new users push it out and fill the room again
                cache.get((Tenant(f"t{i}"), "new"), lambda: small)
            cache.get((Tenant("acme"), "big"), lambda: big)  # may not take: put back
            assert cache.peek((Tenant("acme"), "big")) is None

        return run

    few, many = (Work.of(big_loads(n)) for n in (100, 3000))
    assert many < 2 * few, f"with 3,000 tenants cached a big user's loads cost {many / few:.1f}x the work of 100"
