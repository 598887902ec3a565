"""Session 51 (feedback51): the feedback path's leftovers, with a real feedback log (the HTTP tests of the same are in
test_backlog49.py, on its module's service)."""

from __future__ import annotations

import msgspec

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


def test_fitted_users_are_those_whose_newest_row_passes_not_an_older_one(tmp_path):
    """Two rows of a user in a replica's store (what two processes inserting the user at once leave: `Store.get_user`
    takes the newer), the newer one not fitted on any answer (no PAL logits: a refit from stated preferences only), or
    fitted against another population checkpoint, or with no model: `fitted_users` leaves the user out, as their newest
    row says,
    rather than counting them with the older row's state. Before, the filter ran before the newest row of each user was
    chosen: an older row that passed stood for the user (a stale state in a pooled prior or an onboarding population)."""
    from pluralign.store import Store
    from pluralign.store.tables import UserRecord
    from tests.service.test_feedback_log import DIM

    store = Store(str(tmp_path), "enc", DIM, sync_seconds=0.05)  # a replica's: another process may write the user too

    def both(user: str, **newer) -> None:  # two rows of the user, as two processes' inserts at once leave them
        old = UserRecord(tenant="t", user_id=user, created_at=1, updated_at=1, user_model=b"old", pal_logits=[0.5], pal_version="v1")
        for record in (old, UserRecord(**{**msgspec.structs.asdict(old), "updated_at": 2, **newer})):
            store.users.add(store._user_rows(record))

    both("stated-only", user_model=b"new", pal_logits=None)
    both("refit-on-v2", user_model=b"new", pal_version="v2")
    both("unfitted", user_model=None, pal_logits=None, pal_version=None)
    both("current", user_model=b"new")
    store.put_user(UserRecord(tenant="t", user_id="alone", created_at=1, updated_at=1, user_model=b"m", pal_logits=[0.1], pal_version="v1"))
    assert store.get_user("t", "stated-only").pal_logits is None  # the newer row is the user's
    found = {u.user_id: u.user_model for u in store.fitted_users("t", 10, pal_version="v1", answered=True)}
    assert found == {"current": b"new", "alone": b"m"}, found
    assert {u.user_id: u.user_model for u in store.fitted_users("t", 10)} == {
        "stated-only": b"new", "refit-on-v2": b"new", "current": b"new", "alone": b"m"}


def test_a_user_whose_newest_row_passes_is_kept_when_the_query_bound_left_it_out(tmp_path):
    """(review of session 51) Two rows of a user in a replica's store, both fitted on answers against the served
    checkpoint, the newer one past the first query's bound (`limit` counts rows, in storage order): the user is one
    whose newest row passes, and `fitted_users` gives them with that row. Before, the check of each user's newest row
    saw a newer row than the one the bound let in and left the user out (`fitted_users("t", 1, ...)` was [])."""
    from pluralign.store import Store
    from pluralign.store.tables import UserRecord
    from tests.service.test_feedback_log import DIM

    store = Store(str(tmp_path), "enc", DIM, sync_seconds=0.05)  # a replica's: another process may write the user too
    old = UserRecord(tenant="t", user_id="twice", created_at=1, updated_at=1, user_model=b"old", pal_logits=[0.5], pal_version="v1")
    for record in (old, UserRecord(**{**msgspec.structs.asdict(old), "updated_at": 2, "user_model": b"new"})):
        store.users.add(store._user_rows(record))  # as two processes' inserts at once leave them
    found = [(u.user_id, u.user_model) for u in store.fitted_users("t", 1, pal_version="v1", answered=True)]
    assert found == [("twice", b"new")], found
