"""Session fair58: a user's history larger than their tenant's share of the users' histories cache, read again and again
on the real store in a temp folder while other tenants read theirs, takes the others' room once, not at each load."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_store import DIM, prefs


def test_a_big_user_read_in_a_loop_pushes_out_other_tenants_histories_once(tmp_path):
    """Each cycle acme reads its big user (larger than its share), then its small ones (acme holds the most: they push
    it out), then five other tenants read their users again. Before, each cycle's load of the big user pushed out some
    of the others' histories again, each then read from the table again; now only the first does, and every read of the
    big user still returns all its rows."""
    store = Store(str(tmp_path / "store"), "enc", DIM, history_bytes=1 << 30)
    others = [(f"t{t}", f"u{u}") for t in range(5) for u in range(3)]
    acme = [("acme", f"s{u}") for u in range(2)]
    for n, (tenant, user) in enumerate(others + acme):
        store.add_preferences(*prefs(tenant, user, 20, start=100 * n))
    store.add_preferences(*prefs("acme", "big", 600, start=20_000))
    store.history("acme", "big")
    big = store.histories.nbytes
    store.histories.invalidate([("acme", "big")])
    for tenant, user in others + acme:
        store.history(tenant, user)
    store.histories.budget_bytes = store.histories.nbytes + big // 2

    pushed_out = []
    for _ in range(5):
        assert len(store.history("acme", "big")) == 600
        for tenant, user in acme:
            store.history(tenant, user)
        misses = store.histories.misses
        for tenant, user in others:
            store.history(tenant, user)
        pushed_out.append(store.histories.misses - misses)  # the others' reads that went to the table
        assert store.histories.nbytes <= store.histories.budget_bytes
    assert pushed_out[0] > 0 and pushed_out[1:] == [0] * 4, f"others' histories read from the table each cycle: {pushed_out}"


def test_review_fair58_a_big_user_giving_feedback_while_the_others_hold_still_is_read_from_the_cache(tmp_path):
    """Review fair58: acme's big user (larger than its share) reads its history, then gives feedback and reads it again,
    five times, while the other tenants read nothing: after its first load took their room, each of its reads is served
    from the cache (its feedback's rows grow it into the room they need). Before, the first feedback that needed room
    dropped it, and each read after went to the table: the others had given their room for two reads."""
    store = Store(str(tmp_path / "store"), "enc", DIM, history_bytes=1 << 30)
    others = [(f"t{t}", f"u{u}") for t in range(5) for u in range(3)]
    for n, (tenant, user) in enumerate(others):
        store.add_preferences(*prefs(tenant, user, 20, start=100 * n))
    store.add_preferences(*prefs("acme", "big", 600, start=20_000))
    store.history("acme", "big")
    big = store.histories.nbytes
    store.histories.invalidate([("acme", "big")])
    for tenant, user in others:
        store.history(tenant, user)
    store.histories.budget_bytes = store.histories.nbytes + big // 2

    assert len(store.history("acme", "big")) == 600
    misses = store.histories.misses
    for n in range(5):
        store.add_preferences(*prefs("acme", "big", 100, start=30_000 + 100 * n))
        assert len(store.history("acme", "big")) == 700 + 100 * n
        assert store.histories.nbytes <= store.histories.budget_bytes
    assert store.histories.misses == misses, f"acme's big user missed the cache {store.histories.misses - misses} times in 5 feedbacks and reads"
