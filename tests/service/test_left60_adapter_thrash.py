"""left60: a chat whose adapter is dropped twice between its plan and its generation, its user still having it, was
answered by the fallback with a 200 (`pluralign.adapter` null: the base model), an answer not personalized, claiming
success. Now the user gets a 503 with `Retry-After` saying their adapter could not be kept loaded, a stream (begun: its
role's chunk went first) that 503 as its error event, and nothing is stored of the chat. The live service, the tiny LM,
real LoRA adapters.

review left60: other tenants' loads no longer drop it twice (an adapter evicted while a chat holds it leaves memory once
the hold ends: tests/service/test_review_left60_starved.py); what drops it now is a promotion or a retrain of the
user's adapter (`AdapterPool.forget`, the user's files still there), stood in by two `forget` calls run where the chat's
generation is about to begin. Before that review, this test's drops were two loads of another tenant's adapters."""

from __future__ import annotations

import json

import pytest

from pluralign.policy.adapters import AdapterRegistry, adapter_name
from tests.service.test_ops60_adapter_held import GREEDY, saved
from tests.service.tiny import start_service

BIG = adapter_name("acme", "big")


@pytest.mark.parametrize("stream", [False, True], ids=["chat", "stream"])
def test_a_chat_whose_adapter_is_dropped_twice_before_it_begins_is_a_503_not_the_base_models_answer(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch, stream):
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    saved(registry, tiny_generator_dir, "acme", ["big"], rank=8)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        rt = svc.runtime
        pool, generate = rt.adapters, getattr(rt.generator, "stream" if stream else "generate")
        drops, loads = iter(range(2)), []

        def promoted_first(messages, *args, adapter=None, **kwargs):
            if adapter == BIG and next(drops, None) is not None:  # a promotion (or retrain) meanwhile drops it
                pool.forget("acme", "big")
                loads.append(BIG in rt.generator.adapters)
            return generate(messages, *args, adapter=adapter, **kwargs)

        monkeypatch.setattr(rt.generator, "stream" if stream else "generate", promoted_first)
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Colour?"}], "user": "big", "stream": stream,
                **GREEDY}
        answer = acme.post("/v1/chat/completions", json=body)
        assert loads == [False, False], loads  # dropped at each, held or not
        said = answer.text.replace(" ", "")  # a stream: its last chunk names the adapter, or an error event ends it
        assert answer.status_code != 200 or f'"adapter":"{BIG}"' in said or 'data:{"error"' in said, (
            "a chat whose adapter was dropped twice was answered 200 by another adapter than its user's: " + answer.text)
        if stream:  # begun (its role's chunk went first): the stream's error event, as a stream's other 503s end, no text
            error = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith('data: {"error"')]
            assert error and error[0]["error"]["code"] == "unavailable", answer.text
            assert '"content":""' in answer.text.replace(" ", "") and answer.text.count('"content"') == 1, answer.text
        else:
            assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0, answer.text
            error = [answer.json()]
        assert "adapter could not be kept loaded" in error[0]["error"]["message"], answer.text
        assert rt.store.count_interactions("acme", "big") == 0
