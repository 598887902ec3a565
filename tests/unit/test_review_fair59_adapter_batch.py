"""Review fair59: a batch of chats whose adapters together exceed the adapter pool's budget is refused alike
(AdapterError "exceed the pool's budget") whether their tenants may take smaller tenants' room or not. fair59 served
such a batch beside the budget when the takes were refused (each adapter `_passing`, 12,000 bytes held for an 8,000-byte
budget) and refused it when they were allowed: the same chats answered or not by the books of other tenants' takes."""

from __future__ import annotations

import pytest

from pluralign.cache import TAKES_IN_ALL
from pluralign.policy.adapters import AdapterError, AdapterPool, adapter_name
from tests.unit.test_fair59_adapter_takes import OTHERS, Clock, Host, Registry

BATCH = [("acme", "big"), ("globex", "big")]


def pool_of(tmp_path, spent: bool) -> tuple[AdapterPool, Host]:
    """Five tenants' 1,000-byte adapters loaded, an 8,000-byte budget; acme's and globex's are 6,000 bytes each.
    `spent`: four other tenants' big adapters took room first, so no take is allowed in this window."""
    clock, host = Clock(), Host()
    sizes = {key: 6000 for key in BATCH} | {(f"big{i}", "u"): 6000 for i in range(TAKES_IN_ALL)}
    pool = AdapterPool(host, Registry(tmp_path, sizes), "test", budget_bytes=8000, clock=clock)
    for key in OTHERS:
        pool.adapter_for(*key)
    if spent:
        for i in range(TAKES_IN_ALL):
            pool.adapter_for(f"big{i}", "u")
            for key in OTHERS:
                pool.adapter_for(*key)
    return pool, host


@pytest.mark.parametrize("spent", [False, True], ids=["takes allowed", "takes refused"])
def test_a_batch_whose_adapters_exceed_the_budget_is_refused_whatever_the_takes(tmp_path, spent):
    pool, host = pool_of(tmp_path, spent)
    with pytest.raises(AdapterError, match="exceed the pool's budget"):
        pool.adapters_for(BATCH)
    assert adapter_name(*BATCH[1]) not in host.adapters, "the row that did not fit is still held"
    assert pool.adapter_for(*BATCH[0]) in host.adapters, "acme's own chat, alone, is served after"
