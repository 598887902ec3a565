"""Per-user adapters and the FSPO adapter in the live service: trained from the store by the CLI,
routed per request, refused when built for another base model, removed with the user."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from pluralign.policy.adapters import AdapterError, AdapterMeta, AdapterRegistry, adapter_name, save_adapter
from tests.service.tiny import fspo_service
from training.cli import main

GREEDY = {"temperature": 0, "pluralign": {"rerank": False, "shots": 0}}


def random_adapter(generator_dir, folder, base_model: str, kind: str, seed: int):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(generator_dir))
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return save_adapter(lora, folder, AdapterMeta(kind=kind, base_model=base_model, shots=0, data_version="test"))


def chat(client, user):
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": user, **GREEDY}
    return client.post("/v1/chat/completions", json=body)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fspo_service(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm) as service:
        yield service


def test_user_adapter_trained_from_the_store_is_served_and_deleted(svc, tiny_generator_dir, capsys):
    with svc.client() as c:
        for i in range(6):
            r = c.post("/v1/feedback", json={
                "type": "comparison", "user": "lena", "prompt": f"Colour {i}?", "chosen": "I like red", "rejected": "I like blue",
            })
            assert r.status_code == 201, r.text
        before = chat(c, "lena").json()
        assert before["pluralign"]["adapter"] == "fallback"  # no adapter of her own yet: FSPO serves her

        args = ["train", "adapter", "--user", "lena", "--tenant", "acme", "--store", str(svc.data_dir)]
        assert main(args + ["--base", str(tiny_generator_dir), "--steps", "2", "--lr", "1e-2"]) == 0
        assert '"comparisons":5,' in capsys.readouterr().out.replace(" ", "")

        own = chat(c, "lena").json()
        assert own["pluralign"]["adapter"] == adapter_name("acme", "lena")
        assert chat(c, "mona").json()["pluralign"]["adapter"] == "fallback"

        deleted = c.delete("/v1/users/lena").json()["deleted"]
        assert deleted["adapter_files"] >= 3  # adapter_config.json, adapter_model.safetensors, pluralign.json, ...
        assert not AdapterRegistry(svc.data_dir / "adapters").folder("acme", "lena").exists()
        assert adapter_name("acme", "lena") not in svc.runtime.generator.adapters
        assert chat(c, "lena").json()["pluralign"]["adapter"] == "fallback"


def test_an_adapter_for_another_base_model_is_refused(svc, tiny_generator_dir, tmp_path, caplog):
    from service.users.services import register_adapter

    other = random_adapter(tiny_generator_dir, tmp_path / "other", "some-other-model", "user", 2)
    with pytest.raises(AdapterError, match="trained on base model 'some-other-model'"):
        register_adapter(svc.runtime, "acme", "otto", other)
    # one placed in the registry behind the service's back cannot be used when the user chats: it
    # was a 500 whose detail (a path) was only logged, at every chat (break session 19c); now the
    # fallback answers and the error is logged once (session 22a)
    registry = AdapterRegistry(svc.data_dir / "adapters")
    random_adapter(tiny_generator_dir, registry.folder("acme", "otto"), "some-other-model", "user", 2)
    with svc.client() as c, caplog.at_level(logging.ERROR):
        answers = [chat(c, "otto") for _ in range(2)]
    assert [r.status_code for r in answers] == [200, 200] and answers[0].json()["pluralign"]["adapter"] == "fallback", answers[0].text
    assert sum("trained on base model 'some-other-model'" in rec.getMessage() for rec in caplog.records) == 1


def test_a_chat_whose_adapter_is_dropped_before_its_generation_begins_is_answered(svc, tiny_generator_dir, monkeypatch):
    """A chat takes its adapter's name from the pool, then generates later; an eviction (another user's load needing
    the room) or the user's DELETE may drop it in between. Before (pool47) the generator refused the name ("not
    loaded"): a 500. Now the chat asks the pool again: an evicted adapter is loaded again, a deleted user's chat gets
    the fallback (their files gone: nothing of theirs is loaded again; a chat racing its DELETE stores nothing)."""
    from service.users.services import register_adapter

    rt = svc.runtime
    pool = rt.adapters
    for user, seed in (("nina", 3), ("nils", 4)):
        register_adapter(rt, "acme", user, random_adapter(tiny_generator_dir, svc.data_dir / f"new-{user}",
                                                            pool.base_model, "user", seed))
    resolve = pool.adapter_for
    dropped: list[str] = []

    def resolved_then_dropped(tenant, user, pinned=frozenset()):
        name = resolve(tenant, user, pinned)
        if not dropped and name != pool.fallback:  # the first resolution only: dropped before its generation
            dropped.append(name)
            if user == "nina":
                pool.unload(name)  # evicted
            else:
                pool.registry.delete(tenant, user)  # the user's DELETE: files first, then the pool
                pool.forget(tenant, user)
        return name

    monkeypatch.setattr(pool, "adapter_for", resolved_then_dropped)
    with svc.client() as c:
        evicted = chat(c, "nina")
        assert evicted.status_code == 200, evicted.text
        assert evicted.json()["pluralign"]["adapter"] == adapter_name("acme", "nina") in rt.generator.adapters
        dropped.clear()
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": "nina", "stream": True,
                "max_tokens": 4, **GREEDY}
        streamed = c.post("/v1/chat/completions", json=body)  # streamed: evicted again before its first token
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]"), streamed.text
        assert '"error"' not in streamed.text and dropped == [adapter_name("acme", "nina")], streamed.text
        dropped.clear()
        deleted = chat(c, "nils")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["pluralign"]["adapter"] == "fallback"
        assert adapter_name("acme", "nils") not in rt.generator.adapters and adapter_name("acme", "nils") not in pool.loaded
