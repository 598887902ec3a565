"""Session 51 (feedback51): the feedback path's leftovers, with a real feedback log (the HTTP tests of the same are in
test_backlog49.py, on its module's service)."""

from __future__ import annotations

from pluralign.store.feedback_log import DrainRates, FeedbackLog
from tests.service.test_feedback_log import feedback


def test_the_drain_rate_of_every_tenant_counts_their_departures_together(tmp_path):
    """`DrainRates.rate(None)` (an audit of every tenant's `Retry-After`): tenant a's row done at t=100 and b's at
    t=101 and t=102, so every tenant's rate at t=104 is 2 rows after the first departure over 4 s (0.5 rows/s), while
    each tenant alone has one departure (a: not measured) or 1 row over 3 s (b); a DELETE's rows (`forget_user`) are in
    none of them."""
    now = [100.0]
    log = FeedbackLog(tmp_path, drain=DrainRates(window=60.0, clock=lambda: now[0]))
    try:
        first = log.append(feedback("ann", 0, tenant="a"))
        second, third = log.append(feedback("bob", 0, tenant="b")), log.append(feedback("bob", 1, tenant="b"))
        log.append(feedback("cid", 0, tenant="a", n=50))
        log.done([first])
        now[0] = 101.0
        log.done([second])
        now[0] = 102.0
        log.done([third])
        now[0] = 103.0
        assert log.forget_user("a", "cid") == 50
        now[0] = 104.0
        assert (log.drain_rate(None), log.drain_rate("a"), log.drain_rate("b")) == (0.5, None, 1 / 3)
    finally:
        log.close()
