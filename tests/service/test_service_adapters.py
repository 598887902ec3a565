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
