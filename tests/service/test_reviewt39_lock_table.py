"""Review of session 39's per-tenant locks (f988948): the runtime's user locks and Idempotency-Key locks were
stripes made per tenant at its first use (64 RLocks and 256 asyncio locks, ~31 KB) and kept for good: every
tenant name the process ever saw (keys created and revoked, an admin's job for any tenant name) held them.
Now the tables hold a lock per (tenant, id) only while it is held or waited for. What the lock is for is
unchanged: one tenant's requests for one user (or one key), whichever of the tenant's API keys sent them,
share a lock; two tenants never do."""

from __future__ import annotations

import gc
import threading
import tracemalloc

from service.runtime import Runtime

# tenants seen once each; the stripes kept ~31 KB a tenant, the bound is 1 KB a tenant (store61: 1,000 tenants cost ~3 CPU-s
# under tracemalloc, checking no more)
TENANTS = 200


def runtime_tables():
    """The user-lock and Idempotency-Key-lock tables, as `Runtime` makes them."""
    fields = Runtime.__dataclass_fields__
    return fields["_user_locks"].default_factory(), fields["_idempotency_locks"].default_factory()


def test_the_lock_tables_do_not_grow_with_every_tenant_seen(tmp_path):
    user_locks, key_locks = runtime_tables()
    user_locks("warm", "u"), key_locks("warm", "k")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(TENANTS):  # tenants come and go (keys created, used, revoked)
            with user_locks(f"tenant{i}", "ann"):
                pass
            key_locks(f"tenant{i}", "key-1")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < TENANTS * 1_000, f"the lock tables grew {grown / 1e6:.1f} MB for {TENANTS} tenants that used one lock each"
    # counted: no lock kept once none holds it (a plain dict keeping each, ~500 B a tenant, passes the bound above)
    assert [len(table._locks) for table in (user_locks, key_locks)] == [0, 0]


def test_one_tenants_requests_share_a_lock_and_two_tenants_never_do():
    user_locks, key_locks = runtime_tables()
    for table in (user_locks, key_locks):
        held = table("acme", "ann")  # held by one request (a DELETE of ann, an import with a key)...
        assert table("acme", "ann") is held  # ...another request of acme's for ann, with any of acme's keys, waits on it
        assert table("globex", "ann") is not held  # globex's ann is another user
        assert table("acme", "bob") is not held  # and acme's bob another
    waited = threading.Event()
    with user_locks("acme", "ann"):  # the RLock itself: another thread waits while it is held
        waiter = threading.Thread(target=lambda: user_locks("acme", "ann").acquire(timeout=0.2) or waited.set())
        waiter.start()
        waiter.join()
    assert waited.is_set()  # it timed out waiting: the lock was shared
