"""left60: a chat whose adapter other tenants' loads evict twice between its plan and its generation (its tenant holding
the most with nothing else to give up: a hold is no pin, `AdapterPool.holding`) was answered by the fallback with a
200 (`pluralign.adapter` null: the base model), an answer not personalized, claiming success. Now the user gets a 503
with `Retry-After` saying their adapter could not be kept loaded (the budget too small for the users chatting at
once), a stream (begun: its role's chunk went first) that 503 as its error event, and nothing is stored of the chat. The live service, the tiny LM, real LoRA adapters; the other tenant's chats
stand in by their loads, run where the chat's generation is about to begin (as tests/service/test_ops60_adapter_held.py)."""

from __future__ import annotations

import json

import pytest

from pluralign.policy.adapters import AdapterRegistry, adapter_name
from tests.service.test_generation_turns import wait_until
from tests.service.test_ops60_adapter_held import GREEDY, saved
from tests.service.tiny import start_service

BIG = adapter_name("acme", "big")


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_chat_whose_adapter_is_evicted_twice_before_it_begins_is_a_503_not_the_base_models_answer(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, stream):
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    saved(registry, tiny_generator_dir, "globex", ["g1", "g2"], rank=4)
    saved(registry, tiny_generator_dir, "acme", ["big"], rank=8)  # twice a globex adapter's bytes
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        rt = svc.runtime
        pool, generate = rt.adapters, getattr(rt.generator, "stream" if stream else "generate")
        pool.adapter_for("acme", "big")
        pool.budget_bytes = int(1.25 * pool.bytes_used)  # big and half a globex adapter: acme holds the most
        others, loads = iter(["g1", "g2"]), []

        def another_tenants_load_first(messages, *args, adapter=None, **kwargs):
            if adapter == BIG and (other := next(others, None)) is not None:  # another tenant's chat planned meanwhile
                pool.adapter_for("globex", other)
                wait_until(lambda: not pool._dropping, "the adapters let go dropped")
                loads.append(BIG in pool.loaded)
            return generate(messages, *args, adapter=adapter, **kwargs)

        monkeypatch.setattr(rt.generator, "stream" if stream else "generate", another_tenants_load_first)
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": "big", "stream": stream,
                **GREEDY}
        answer = acme.post("/v1/chat/completions", json=body)
        assert loads == [False, False], loads  # evicted by each load, held or not: acme held the most
        said = answer.text.replace(" ", "")  # a stream: its last chunk names the adapter, or an error event ends it
        assert answer.status_code != 200 or f'"adapter":"{BIG}"' in said or 'data:{"error"' in said, (
            "a chat whose adapter was evicted twice was answered 200 by another adapter than its user's: " + answer.text)
        if stream:  # begun (its role's chunk went first): the stream's error event, as a stream's other 503s end, no text
            error = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith('data: {"error"')]
            assert error and error[0]["error"]["code"] == "unavailable", answer.text
            assert '"content":""' in answer.text.replace(" ", "") and answer.text.count('"content"') == 1, answer.text
        else:
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0, answer.text
            error = [answer.json()]
        assert "adapter could not be kept loaded" in error[0]["error"]["message"], answer.text
        assert rt.store.count_interactions("acme", "big") == 0
