"""Review fair58: the users' histories cache's books of the tenants that took room from smaller tenants' histories (one
take per `TAKE_AGAIN_S`): no take costs a pass over them, none is forgotten within its `TAKE_AGAIN_S`, and those past it
go. In-memory histories: no store."""

from __future__ import annotations

from pluralign.store.history import HISTORY_ENTRY_BYTES, TAKE_AGAIN_S, HistoryCache
from tests.unit.test_cache57_fair_lru import Tenant, Work
from tests.unit.test_reviewtenant56_history_books import history

BIG, SMALL = history(3000), history(10)
FILLER = ("filler", "u")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bare() -> tuple[HistoryCache, Clock]:
    """A cache with room for one big history and not quite a small one beside it, the small one held by a tenant of
    its own. Its takes of all tenants together are not bounded (`takes_in_all`): these tests read each tenant's own
    books, with hundreds of tenants taking in one `TAKE_AGAIN_S` (the bound of all, `tests/unit/test_fair59_takes.py`)."""
    clock = Clock()
    cache = HistoryCache(2 * HISTORY_ENTRY_BYTES + BIG.nbytes + SMALL.nbytes - 1, clock=clock, takes_in_all=1 << 20)
    cache.get(FILLER, lambda: SMALL)
    return cache, clock


def take(cache: HistoryCache, tenant: str) -> None:
    """`tenant`'s big user loaded: it takes the small one's room (that of a smaller tenant)."""
    key = (Tenant(tenant), "big")
    cache.get(key, lambda: BIG)
    assert cache.peek(key) is BIG and cache.peek(FILLER) is None, f"{tenant} took no room"


def refill(cache: HistoryCache, tenant: str) -> None:
    """`tenant`'s big user written elsewhere (dropped), the small one read again (kept in the room freed)."""
    cache.invalidate([(tenant, "big")])
    cache.get(FILLER, lambda: SMALL)


def test_a_take_works_as_much_however_many_tenants_took_room_before():
    """Each of 100 or 3,000 tenants takes room once, then (`TAKE_AGAIN_S` later) as many new ones: the most work one take
    costs is the same (counted, not timed: `Work`). Before, the take that found the books grown past a bound went
    through all of them under the cache's lock (the tenants within `TAKE_AGAIN_S` kept, the rest forgotten)."""

    def most(tenants: int) -> int:
        cache, clock = bare()
        works = []
        for i in range(2 * tenants):
            if i == tenants:
                clock.now += TAKE_AGAIN_S  # the first ones' takes are past: their books may go
            works.append(Work.of(lambda i=i: take(cache, f"t{i}")))
            refill(cache, f"t{i}")
        return max(works)

    few, many = most(100), most(3000)
    assert many < 2 * few, f"with 3,000 tenants that took room, the costliest take cost {many / few:.1f}x that of 100"


def test_no_take_is_forgotten_within_take_again_s_and_those_past_it_go():
    """300 tenants take room in turn: within `TAKE_AGAIN_S` none of them may take again (a load of their big user is
    served, not kept, and the small one stays); past it each may, and the books of the takes past it do not stay (so `_took` holds about the tenants that took
    within a `TAKE_AGAIN_S`)."""
    tenants = 300
    cache, clock = bare()
    for i in range(tenants):
        take(cache, f"t{i}")
        refill(cache, f"t{i}")
        clock.now += 1
    for i in range(tenants):
        assert cache.get((f"t{i}", "big"), lambda: BIG) is BIG
        assert cache.peek((f"t{i}", "big")) is None, f"t{i}'s take {tenants - i} s ago was forgotten: it took again"
        assert cache.peek(FILLER) is SMALL
    clock.now += TAKE_AGAIN_S
    take(cache, "t0")  # its take is past: it may take again
    refill(cache, "t0")
    for i in range(tenants):
        take(cache, f"n{i}")
        refill(cache, f"n{i}")
    assert len(cache._took) <= tenants + 1, "the books of takes past TAKE_AGAIN_S stayed"


def test_a_big_user_chatting_while_the_others_hold_still_is_read_from_the_cache_after_its_one_take():
    """acme's big user chats every 30 s (a read, a feedback write of 50 rows, two reads) while five other tenants hold
    their histories and read none: its first load takes their room (its tenant's one take), and each write's rows then
    grow it into as much of their room again, no more; its reads within `TAKE_AGAIN_S` are served from the cache. Before,
    the first write that needed room dropped it (its tenant had taken within `TAKE_AGAIN_S`), and each later read went
    to the table for the rest of that time: the others had given their room for it all the same."""
    from tests.unit.test_fair58_big_history import OTHERS, filled

    clock = Clock()
    cache, big = filled(clock=clock)
    rows, loads = history(50), []

    def load():
        loads.append(1)
        return big

    def others_bytes() -> int:
        return sum(cache.tenant_nbytes(tenant) for tenant in {tenant for tenant, _ in OTHERS})

    held = others_bytes()
    cache.get(("acme", "big"), load)
    taken = held - others_bytes()
    assert taken > 0 and cache.peek(("acme", "big")) is big
    held = others_bytes()
    for _ in range(int(TAKE_AGAIN_S) // 30 - 1):
        clock.now += 30
        cache.get(("acme", "big"), load)
        big = big.extended(rows)
        cache.extend(("acme", "big"), lambda: rows)
        for _ in range(2):
            cache.get(("acme", "big"), load)
        assert cache.nbytes <= cache.budget_bytes
    assert len(loads) == 1, f"acme's big user was read from the table {len(loads)} times in {TAKE_AGAIN_S:g} s"
    grown = (int(TAKE_AGAIN_S) // 30 - 1) * rows.nbytes
    assert held - others_bytes() <= grown + HISTORY_ENTRY_BYTES + SMALL.nbytes, "its writes took more than they grew"


def test_only_the_history_that_took_grows_into_the_others_room_and_its_growth_puts_off_no_take():
    """Within `TAKE_AGAIN_S` of acme's take, the rows written to the big user that took grow it into the other tenants'
    room; those written to another user of acme's, which would grow into it too, drop that user's history. The growth
    does not start `TAKE_AGAIN_S` again: once past the take, acme's next big user may take room."""
    from tests.unit.test_fair58_big_history import filled

    clock = Clock()
    cache, big = filled(clock=clock)
    cache.get(("acme", "big"), lambda: big)  # the take
    clock.now += TAKE_AGAIN_S - 10
    cache.extend(("acme", "big"), lambda: history(500))
    assert len(cache.peek(("acme", "big")) or ()) == len(big) + 500, "the big user's rows, written: no longer cached"
    cache.invalidate([("acme", "big")])  # written elsewhere: its room is free
    cache.get(("acme", "s0"), lambda: SMALL)
    cache.extend(("acme", "s0"), lambda: history(5000))
    assert cache.peek(("acme", "s0")) is None, "another user of acme's grew into the others' room within TAKE_AGAIN_S"
    assert cache.nbytes <= cache.budget_bytes
    clock.now += 10
    cache.get(("acme", "big2"), lambda: history(6000))
    assert len(cache.peek(("acme", "big2")) or ()) == 6000, "the big user's growth put off acme's next take"


def test_the_user_whose_history_took_room_is_kept_in_mind_only_while_it_is_cached():
    """The users' histories cache keeps which user's history took room (its growth goes on with the take) only while
    that history is cached: once pushed out, or dropped (its user deleted), nothing of the user is kept."""
    from tests.unit.test_fair58_big_history import ACME_SMALL, filled

    for drop in ("deleted", "pushed out"):
        cache, big = filled(clock=Clock())
        cache.get(("acme", "big"), lambda big=big: big)  # the take
        assert cache.peek(("acme", "big")) is big
        if drop == "deleted":
            cache.invalidate([("acme", "big")])
        else:
            for key in ACME_SMALL:  # acme holds the most: its small ones push its big one out
                cache.get(key, lambda: SMALL)
        assert cache.peek(("acme", "big")) is None
        cached = {key for _, key, _ in cache._cached.items()}
        assert cache.tracked() == len(cached), f"acme's big user, {drop}, is still kept in mind"
