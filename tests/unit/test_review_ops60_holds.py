"""review ops60: what a chat's hold of its adapter (`AdapterPool.holding`, from its generation's call until the
generation begins) keeps from another user's load, as the pool's docstrings and docs/operations.md say it.

- An adapter served beside the budget (its tenant's take refused) is never let go while held (`_pass_on`).
- A held adapter in the table goes after its tenant's adapters nobody holds (`FairLRU.evict`'s `busy`), as one a
  generation uses: not before them as their least recently used.
- Fairness still comes first: a hold does not keep its tenant's adapters from going when that tenant holds the most
  and has no other adapter to give up, another tenant's idle adapter staying. ops60's docs said a held adapter went
  "last", and was not evicted "while it can evict another": another tenant's idle one stayed instead.

A host that loads nothing (`tests.unit.test_fair59_adapter_takes.Host`: the pool counts the folders' bytes)."""

from __future__ import annotations

from pluralign.policy.adapters import AdapterPool, adapter_name
from tests.unit.test_fair59_adapter_takes import NAMES, OTHERS, Clock, Host, Registry

A1, A2 = adapter_name("acme", "a1"), adapter_name("acme", "a2")


def test_an_adapter_served_beside_the_budget_is_not_let_go_by_another_load_while_held(tmp_path):
    host = Host()
    pool = AdapterPool(host, Registry(tmp_path, {("acme", "big"): 6000}), "test", budget_bytes=8000, clock=Clock())
    for key in OTHERS:
        pool.adapter_for(*key)
    big = pool.adapter_for("acme", "big")  # acme's one take: three of the others' pushed out
    for key in OTHERS:
        pool.adapter_for(*key)  # they come back: big pushed out (acme holds the most)
    assert big not in host.adapters
    assert pool.adapter_for("acme", "big") == big  # its take refused: served beside the budget
    with pool.holding(big) as held:
        assert held
        pool.adapter_for("t9", "u")  # another tenant's load: `_pass_on` lets go what no chat uses or holds
        assert big in host.adapters, "a held adapter served beside the budget was let go by another tenant's load"
    pool.adapter_for("t8", "u")
    assert big not in host.adapters  # the hold ended: let go at the next load, as before
    assert set(NAMES) <= host.adapters  # served beside the budget all along: none of the others' pushed out for it


def test_a_held_adapter_goes_after_its_tenants_others_and_fairness_still_comes_first(tmp_path):
    host = Host()
    sizes = {("acme", "a1"): 2000, ("globex", "g1"): 500, ("globex", "g3"): 100}
    pool = AdapterPool(host, Registry(tmp_path, sizes), "test", budget_bytes=3500, clock=Clock())
    pool.adapter_for("acme", "a1")
    pool.adapter_for("acme", "a2")
    pool.adapter_for("globex", "g1")
    g1 = adapter_name("globex", "g1")
    with pool.holding(A1):  # a1 is acme's least recently used
        pool.adapter_for("globex", "g2")  # 4,500 bytes: acme holds the most and gives up one
        assert A1 in host.adapters and A2 not in host.adapters, "the held adapter went before its tenant's other"
        pool.adapter_for("globex", "g3")  # 3,600 bytes: acme holds the most again, with only a1 left
        assert A1 not in host.adapters and g1 in host.adapters  # fairness first: a hold is not a pin
