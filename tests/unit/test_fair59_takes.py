"""Session fair59: the takes of room from smaller tenants' histories are bounded for all tenants together, not only per
tenant (`TAKES_IN_ALL` per `TAKE_AGAIN_S`): many tenants each with one big user could each take once per window, and
together push out the others' histories at every load. In-memory histories: no store."""

from __future__ import annotations

from pluralign.store.history import TAKE_AGAIN_S, TAKES_IN_ALL, HistoryCache
from tests.unit.test_reviewtenant56_history_books import history

SMALL, BIG = history(10), history(3000)
OTHERS = [(f"t{t}", f"u{u}") for t in range(20) for u in range(4)]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def window(cache: HistoryCache, bigs: list[str]) -> list[int]:
    """Each tenant of `bigs` reads its big user (served whatever happens), then the others read their users again: how
    many of the others' histories each big user's load pushed out (each then read again from the table)."""
    pushed = []
    for tenant in bigs:
        assert cache.get((tenant, "big"), lambda: BIG) is BIG
        pushed.append(sum(cache.peek(key) is None for key in OTHERS))
        for key in OTHERS:
            cache.get(key, lambda: SMALL)
        assert cache.nbytes <= cache.budget_bytes
    return pushed


def test_many_tenants_each_with_a_big_user_take_the_others_room_at_most_takes_in_all_times_a_window():
    """30 tenants each read their one big user (larger than a tenant's share) within one `TAKE_AGAIN_S`: at most
    `TAKES_IN_ALL` of those loads push out the 20 other tenants' histories, the rest are served and not kept; past the
    window, as many may take again. Before, each of the 30 took once (its own allowance), 30 loads each pushing out
    others' histories."""
    clock = Clock()
    cache = HistoryCache(1 << 40, clock=clock)
    for key in OTHERS:
        cache.get(key, lambda: SMALL)
    cache.budget_bytes = cache.nbytes + BIG.nbytes // 2
    bigs = [f"big{i}" for i in range(30)]
    first = window(cache, bigs)
    takes = sum(n > 0 for n in first)
    assert 0 < takes <= TAKES_IN_ALL, f"{takes} of 30 big users' loads pushed out others' histories in one window: {first}"
    clock.now += TAKE_AGAIN_S
    later = window(cache, bigs[::-1])
    assert 0 < sum(n > 0 for n in later) <= TAKES_IN_ALL, later
