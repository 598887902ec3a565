"""Review of held59: after a user's chats and their DELETE, no garbage awaiting a collection holds their texts either.

`tests.service.test_held59`'s holder search collects the garbage first, so a reference cycle holding a chat (its
request, its shots, its answer) is not seen; without a collection, on a quiet service, such a cycle stays in memory
until Python's next full collection (the objects of a chat that took a while are in the oldest generation by then:
minutes, hours, or for good). Here the collector is off from the chats to the search, which reads every object gc
tracks, garbage included."""

from __future__ import annotations

import gc
import uuid
from collections import Counter

import pytest

from tests.service.test_break58 import _holds, _refs
from tests.service.test_held59 import _streamed
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, sentence_encoder):
    data = tmp_path_factory.mktemp("review-held59-data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, sentence_encoder, adapter_every=1_000_000)
    with server:
        yield service


def uncollected_holders(texts: list[str]) -> list[str]:
    """How many gc objects of each kind refer to a text holding one of `texts` (the test's own aside), garbage not yet
    collected included (no collection first, unlike `tests.service.test_held59.holders`); the test's client's
    (httpx's requests and responses, in cycles of their own) aside."""
    raw = [t.encode() for t in texts]
    kinds = Counter(f"{type(o).__module__}.{type(o).__name__}" for o in gc.get_objects()
                    if not type(o).__module__.startswith("httpx") and any(_holds(r, texts, raw) for r in _refs(o)))
    return [f"{n} {kind}" for kind, n in kinds.items()]


def test_a_deleted_users_chats_leave_no_garbage_holding_them(svc):
    """A user's chats (answered and streamed, one choice and several reranked, and one refused 400 after its plan retrieved their shots: its prompt is
    past `max_prompt_tokens`), then their DELETE: nothing holds their texts, with no garbage collection since the
    chats. The scheduler's task was held by its own future's callback, and an error's traceback held the frames
    holding the future (the scheduler's worker, the chat's coroutine): cycles, each holding the chat's request and
    its answer or error, freed by the next full collection only."""
    marker = uuid.uuid4().hex
    user = "cycles-rh59"
    ask = lambda i, **more: {"model": "pluralign", "user": user, "max_tokens": 12, "seed": i,  # noqa: E731
                             "messages": [{"role": "user", "content": f"Tell me {i} about {marker}?"}], **more}
    answers: list[str] = []
    with svc.client() as c, svc.client() as operator:
        for i in range(2):
            body = {"type": "comparison", "user": user, "prompt": f"Tell me {i} about {marker}?",
                    "chosen": f"Briefly {i} {marker}.", "rejected": f"At length {i} {marker}."}
            assert c.post("/v1/feedback", json=body).status_code == 201
        del body
        svc.runtime.wait_for_background()
        gc.collect()
        gc.disable()
        try:
            r = c.post("/v1/chat/completions", json=ask(1))
            assert r.status_code == 200, r.text
            assert r.json()["pluralign"]["history"], "no shot retrieved: the chat read none of the user's comparisons"
            answers += [ch["message"]["content"] for ch in r.json()["choices"]]
            r = c.post("/v1/chat/completions", json=ask(4, n=2, pluralign={"candidates": 3, "rerank": True}))
            assert r.status_code == 200, r.text
            answers += [ch["message"]["content"] for ch in r.json()["choices"]]
            answers += _streamed(c, ask(2))
            answers += _streamed(c, ask(5, n=2, pluralign={"candidates": 2, "rerank": True}))
            long = {"role": "user", "content": " ".join(["word"] * 1500) + f" {marker}?"}
            r = c.post("/v1/chat/completions", json=ask(3, messages=[long]))
            assert r.status_code == 400 and "max_prompt_tokens" in r.text, r.text
            del r, long
            svc.runtime.wait_for_background()
            assert operator.delete(f"/v1/users/{user}").status_code == 200
            texts = [marker, *(a for a in answers if len(a) >= 20)]
            del answers
            assert not uncollected_holders(texts), uncollected_holders(texts)
        finally:
            gc.enable()
