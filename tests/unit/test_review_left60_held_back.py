"""review left60: an adapter a chat holds (`AdapterPool.holding`, from its generation's call until the generation
begins) that another load evicts leaves the pool's table at once but the host's memory only once the hold ends, with a
host that tracks its generations (whose drop then waits for the generation begun under the hold). Before, it was
dropped at once: the chat's generation found it gone, and a budget too small for the users chatting at once dropped it
again at its load anew, the chat a 503 at each try (tests/service/test_review_left60_starved.py)."""

from __future__ import annotations

from pluralign.policy.adapters import AdapterPool, adapter_name
from tests.stores import wait_for
from tests.unit.test_fair59_adapter_takes import Clock, Registry, Tracking

A1 = adapter_name("acme", "a1")


def test_a_held_adapter_evicted_by_another_load_leaves_memory_once_the_hold_ends(tmp_path):
    host = Tracking()
    sizes = {("acme", "a1"): 2000, ("globex", "g1"): 500, ("globex", "g3"): 100}
    pool = AdapterPool(host, Registry(tmp_path, sizes), "test", budget_bytes=3500, clock=Clock())
    for key in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")]:
        pool.adapter_for(*key)
    with pool.holding(A1) as held:
        assert held
        pool.adapter_for("globex", "g2")  # acme holds the most and gives up a2, then
        pool.adapter_for("globex", "g3")  # a1 (fairness first: a hold is no pin)
        assert A1 not in pool.loaded and pool.bytes_used <= pool.budget_bytes  # out of the table at once
        wait_for(lambda: adapter_name("acme", "a2") not in host.adapters)  # the drops not held back are done
        assert A1 in host.adapters, "a held adapter was dropped before the generation it was held for began"
        assert pool.bytes_evicted_in_use == 2000  # beside the budget meanwhile
    wait_for(lambda: A1 not in host.adapters and not pool.bytes_evicted_in_use)  # the hold ended: dropped
    assert pool.adapter_for("acme", "a1") == A1 and host.loads[A1] == 2  # its user's next chat loads it again
