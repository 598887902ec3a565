"""ops60: a chat whose adapter is served beside the budget (its tenant's take of smaller tenants' room refused,
`AdapterPool._make_room`) keeps it until its generation begins, whatever other tenants' chats load meanwhile.

Before, the pool let such an adapter go at the next load of another (`_pass_on`) unless a generation was using it: a
chat between its plan and its generation was not. Its generation found it gone and asked the pool again (a load anew,
still beside the budget); a second load of another tenant's adapter in that time let it go again, and the chat was
answered by the fallback (`pluralign.adapter` "fallback" or null: another adapter than the user's, with a 200). Now the
pool holds it from the chat's call until its generation begins (`AdapterPool.holding`). The live service, the tiny LM,
real LoRA adapters; the other tenant's chats stand in by their loads, run where the chat's generation is about to
begin."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from pluralign.policy.adapters import AdapterMeta, AdapterRegistry, adapter_name
from tests.service.test_generation_turns import wait_until
from tests.service.tiny import start_service

BIG = adapter_name("acme", "big")
GREEDY = {"temperature": 0, "pluralign": {"rerank": False, "shots": 0}}


def saved(registry: AdapterRegistry, generator_dir, tenant: str, users: list[str], rank: int) -> None:
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(generator_dir)),
                           LoraConfig(r=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for user in users:
        registry.save(tenant, user, model, AdapterMeta(kind="user", base_model=generator_dir.name, shots=0,
                                                       data_version="test", metrics={}))


def test_a_chat_served_beside_the_budget_keeps_its_adapter_while_other_tenants_load_theirs(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    saved(registry, tiny_generator_dir, "globex", ["g1", "g2", "g3", "g4"], rank=4)
    saved(registry, tiny_generator_dir, "acme", ["big"], rank=8)  # twice a globex adapter's bytes
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        rt = svc.runtime
        pool, generate = rt.adapters, rt.generator.generate
        pool.adapter_for("globex", "g1")
        pool.budget_bytes = int(2.5 * pool.bytes_used)  # two of globex's and no more, or acme's big one
        pool.adapter_for("acme", "big")  # takes globex's room: acme's one take in TAKE_AGAIN_S
        pool.adapter_for("globex", "g2")  # pushes it out (acme holds the most)
        others = iter(["g3", "g4"])

        def another_tenants_load_first(messages, *args, adapter=None, **kwargs):
            if adapter == BIG:  # another tenant's chat, planned while this one's generation is about to begin
                pool.adapter_for("globex", next(others))
                wait_until(lambda: not pool._dropping, "the adapters let go dropped")
            return generate(messages, *args, adapter=adapter, **kwargs)

        monkeypatch.setattr(rt.generator, "generate", another_tenants_load_first)
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": "big", **GREEDY}
        answer = acme.post("/v1/chat/completions", json=body)  # its plan loads big beside the budget (a take refused)
        assert answer.status_code == 200, answer.text
        assert answer.json()["pluralign"]["adapter"] == BIG, "the chat was answered by another adapter than its user's"
        assert pool.bytes_used <= pool.budget_bytes
