"""review left60: a user whose adapter other users' steady cold loads evict from the pool (its tenant holding the
most, or its own tenant's loads: a hold is no pin) is answered, not refused again and again while the others are served.

left60 made a chat whose adapter was dropped twice before its generation began a 503 with `Retry-After`. Under
its own tenant's steady traffic of cold loads (other users' adapters each loaded anew), every try of the user was
dropped twice again: a client following `Retry-After` got the 503 at each try, for as long as that traffic lasted,
while the others' chats were served (another tenant's loads: the second try was served beside the budget, acme's take
of globex's room refused, but only until acme may take again, `TAKE_AGAIN_S`). Now an adapter a chat holds (`AdapterPool.holding`, from its generation's
call until the generation begins) that another load evicts leaves the pool's table at once, as before, but its
weights leave memory once the hold ends (the drop then waits for the generation, as for an adapter in use): the chat's
generation finds it loaded. The live service, the tiny LM, real LoRA adapters; the other users' chats stand in by
their loads, two cold ones run where each try's generation is about to begin (as test_left60_adapter_thrash)."""

from __future__ import annotations

import itertools

import pytest

from pluralign.policy.adapters import AdapterRegistry, adapter_name
from tests.service.test_generation_turns import wait_until
from tests.service.test_ops60_adapter_held import GREEDY, saved
from tests.service.tiny import start_service

BIG = adapter_name("acme", "big")
TRIES = 4


@pytest.mark.parametrize("tenant", ["acme", "globex"], ids=["its-own-tenants", "another-tenants"])
def test_a_client_following_retry_after_gets_its_own_adapters_answer_under_steady_cold_loads(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, tenant):
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    users = ["u1", "u2", "u3", "u4"]  # two fit beside nothing else: each load below is a cold one
    saved(registry, tiny_generator_dir, tenant, users, rank=4)
    saved(registry, tiny_generator_dir, "acme", ["big"], rank=8)  # twice a globex adapter's bytes
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        rt = svc.runtime
        pool, generate = rt.adapters, rt.generator.generate
        pool.adapter_for("acme", "big")
        pool.budget_bytes = int(1.25 * pool.bytes_used)  # big and half a globex adapter: acme holds the most
        others, cold = itertools.cycle(users), []

        def two_cold_loads_of_another_tenant_first(messages, *args, adapter=None, **kwargs):
            if adapter == BIG:  # another tenant's chats, planned while this one's generation is about to begin
                for _ in range(2):
                    other = next(others)
                    cold.append(adapter_name(tenant, other) not in pool.loaded)
                    pool.adapter_for(tenant, other)
                    # the drops under way done, but one that waits for a hold to end (this very chat's)
                    wait_until(lambda: set(pool._dropping) <= pool._held_back, "the adapters let go dropped")
            return generate(messages, *args, adapter=adapter, **kwargs)

        monkeypatch.setattr(rt.generator, "generate", two_cold_loads_of_another_tenant_first)
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": "big", **GREEDY}
        answers = []
        for _ in range(TRIES):  # a client following Retry-After (its wait stood in by the other tenant's loads)
            answer = acme.post("/v1/chat/completions", json=body)
            answers.append(answer.status_code)
            if answer.status_code != 503:
                break
        assert all(cold), cold  # every load of the others' was a cold one: steady traffic, their users served
        assert answers[-1] == 200, f"the user was refused at each of {TRIES} tries while others were served: {answers}"
        assert answer.json()["pluralign"]["adapter"] == BIG, answer.text
        assert rt.store.count_interactions("acme", "big") == 1
        wait_until(lambda: not pool._dropping, "the adapters let go dropped once the chat ended")
        assert pool.bytes_used <= pool.budget_bytes
