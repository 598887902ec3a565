"""Session remote53: a chat (or a score) whose own text the embeddings server refuses (`PLURALIGN_ENCODER=openai:URL`:
Text Embeddings Inference without `--auto-truncate` answers 413 for a text past its max input length) is the 400 naming
that text's field and the server's limit, not the 503 "send it again", which never succeeded; a server refusing every
text (the probe too) is still the 503. The real app over HTTP on a stub embeddings server answering as TEI does
(`tests.service.test_reviewsmall52.RefusingEmbeddings`) and a stub generation server (`tests.vllm_like`)."""

from __future__ import annotations

import time

import pytest

from pluralign.embed.remote import RemoteEncoder
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.test_reviewsmall52 import RefusingEmbeddings
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.stub_openai import served
from tests.vllm_like import BASE, Handler

LONGEST = 200  # characters: the stub refuses a request holding a longer text, as TEI one past its 256 word pieces


@pytest.fixture(scope="module")
def front(tmp_path_factory, tiny_pal_dir, minilm):  # noqa: F811
    """The real app on a TEI-like embeddings server (`RefusingEmbeddings`) and a vLLM-like generation server; its
    embeddings requests bounded by 1 s each, no retry."""
    embeddings = RefusingEmbeddings(longest=LONGEST, dim=minilm.dim)
    with served(Handler) as root:
        config = Settings(data_dir=str(tmp_path_factory.mktemp("remote53")), generator=f"openai:{root}/v1", generator_model=BASE,
                          encoder=f"openai:{embeddings.url}", pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False, candidates=1)
        runtime = Runtime.build(config, generator=RemoteGenerator(f"{root}/v1", BASE, policy=RemotePolicy(timeout_s=5, max_retries=0)),
                                encoder=RemoteEncoder(embeddings.url, minilm.encoder_id, timeout=1, max_retries=0))
        service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with service.server:
            yield service, embeddings
    embeddings.shutdown()
    embeddings.server_close()


def chat(text: str) -> dict:
    return {"model": "pluralign", "user": "rae", "max_tokens": 4, "pluralign": {"candidates": 1},
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]}


def test_a_chat_whose_message_the_embeddings_server_refuses_is_a_400_naming_it_and_the_limit(front):
    """Before: the 503 `embedding is unavailable for now ... send it again`, at every try."""
    service, embeddings = front
    with service.client("acme") as c:
        assert c.post("/v1/chat/completions", json=chat("Plan my weekend")).status_code == 200
        long = "Plan my weekend, with every detail of it. " * 10  # 420 characters
        for body in (chat(long), {**chat(long), "stream": True}):
            got = c.post("/v1/chat/completions", json=body)
            assert got.status_code == 400, got.text  # before: 503
            error = got.json()["error"]
            assert error["param"] == "messages[1].content", error
            assert "must have less than 512 tokens" in error["message"] and "420 characters" in error["message"], error
            assert embeddings.url not in error["message"], error
        score = c.post("/v1/rewards/score", json={"user": "rae", "prompt": "Hi?", "responses": ["Hello.", long]})
        assert score.status_code == 400 and score.json()["error"]["param"] == "responses[1]", score.text


def test_an_embeddings_server_refusing_every_text_is_still_the_503_to_send_again(front):
    service, embeddings = front
    embeddings.longest = 0  # the probe refused too: the server's own trouble (a model it does not serve, say)
    try:
        with service.client("acme") as c:
            got = c.post("/v1/chat/completions", json=chat("Plan my weekend"))
    finally:
        embeddings.longest = LONGEST
    assert got.status_code == 503 and got.json()["error"]["message"].startswith("embedding is unavailable"), got.text


def test_a_next_comparison_whose_pool_text_the_embeddings_server_refuses_is_a_400_naming_it(front):
    """Review remote53: a supplied pool's texts are the request's own, as a chat's message and a score's responses
    (`pool[i].prompt`, `pool[i].answers[j]`, up to 20 000 characters each), yet a pool answer past the embeddings
    server's max input length was the 503 "send it again" at every try. Now the 400 naming the answer, as a score's."""
    service, embeddings = front
    long = "An answer that goes on about the weekend at length. " * 10  # 520 characters
    pool = [{"prompt": "Weekend plans?", "answers": ["Hike.", "Read."]},
            {"prompt": "Dinner?", "answers": ["Pasta.", long, "Soup."]}]
    with service.client("acme") as c:
        fits = c.post("/v1/users/rae/next-comparison", json={"pool": pool[:1]})
        assert fits.status_code == 200, fits.text
        got = c.post("/v1/users/rae/next-comparison", json={"pool": pool})
    assert got.status_code == 400, got.text  # before: 503 `embedding is unavailable for now ... send it again`
    error = got.json()["error"]
    assert error["param"] == "pool[1].answers[1]" and error["code"] == "text_refused", error
    assert "520 characters" in error["message"] and "must have less than 512 tokens" in error["message"], error


def test_an_embeddings_server_dribbling_its_answer_is_a_503_at_the_bound_naming_it(front):
    """Session remote54: an embeddings request was bounded per read only (`RemoteEncoder`'s timeout a read), so a server
    sending its answer a byte every 5 ms held the chat waiting on it until the last byte (its cap here: 4 s, a broken
    answer then). Now each try is bounded whole: the chat is the 503 naming the embeddings server and the bound at 1 s
    (and its setting, since session stream55 gave it one)."""
    service, embeddings = front
    embeddings.dribble_s = 0.005
    try:
        with service.client("acme") as c:
            began = time.monotonic()
            got = c.post("/v1/chat/completions", json=chat("Plan my weekend"))
            took = time.monotonic() - began
    finally:
        embeddings.dribble_s = 0.0
    assert got.status_code == 503 and got.headers["retry-after"] == "10", got.text
    assert ("embedding is unavailable for now: the embeddings server (PLURALIGN_ENCODER) did not send its whole answer "
            "within 1 s (PLURALIGN_ENCODER_TIMEOUT_S); the request was not finished: send it again") == got.json()["error"]["message"], got.text
    assert took < 2.0, took  # before: ~4 s (the stub's cap), the generic 503 "failed or could not be reached"
