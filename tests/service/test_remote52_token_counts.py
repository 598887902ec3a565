"""A remote generator's prompt counts (vLLM's `POST /tokenize`) and their bound, through the real app over HTTP on a
stub OpenAI-compatible server (`tests.vllm_like`'s answers, served in this process, its `/tokenize` made slow or
failing at will), configured as an operator does (`PLURALIGN_GENERATOR=openai:URL`, `generator_timeout_s` 1: session
remote52)."""

from __future__ import annotations

import time

import pytest

from service.app import create_app
from service.runtime import Runtime
from service.settings import Settings
from tests.service.tiny import LiveServer, Service, minilm, tiny_pal_dir  # noqa: F401
from tests.stub_openai import served
from tests.vllm_like import BASE, Handler, tokens

BUDGET = 300  # max_prompt_tokens: the client's messages fit, with all four shots they do not (a token: 4 characters)


class Tokenizing(Handler):
    """`tests.vllm_like`'s server whose `/tokenize` waits `delay_s` before it answers, and answers `failing` (a 5xx) when
    set; it counts the requests it got (`asked`) and those it failed (`failed`)."""

    adapters: dict[str, str] = {}
    weights: dict[str, str] = {}
    delay_s = 0.0
    failing = 0
    asked = 0
    failed = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/tokenize":
            return super().do_POST()
        body = self.read_json()
        kind = type(self)
        kind.asked += 1
        time.sleep(kind.delay_s)
        if kind.failing:
            kind.failed += 1
            return self.error(kind.failing, "InternalServerError", "the tokenizer failed")
        count = tokens("".join(m["content"] for m in body["messages"]))
        self.answer(200, {"count": count, "max_model_len": 512, "tokens": list(range(count))})


@pytest.fixture(scope="module")
def front(tmp_path_factory, tiny_pal_dir, minilm):  # noqa: F811
    """The real app with `generator=openai:URL` on a `Tokenizing` server, `generator_timeout_s` 1, no retries."""
    with served(Tokenizing) as root:
        config = Settings(data_dir=str(tmp_path_factory.mktemp("remote52")), generator=f"openai:{root}/v1", generator_model=BASE,
                          generator_timeout_s=1, generator_retries=0, pal_dir=str(tiny_pal_dir), max_tokens=4, rerank=False,
                          candidates=1, max_prompt_tokens=BUDGET)
        runtime = Runtime.build(config, encoder=minilm)
        service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
        with service.server:
            yield service


@pytest.fixture
def tokenizer():
    """`Tokenizing`'s knobs, put back after the test."""
    yield Tokenizing
    Tokenizing.delay_s, Tokenizing.failing = 0.0, 0


CHAT = {"model": "pluralign", "max_tokens": 4, "messages": [{"role": "user", "content": "Plan my weekend, please"}]}


def test_a_count_in_a_real_servers_round_trip_is_given_at_a_one_second_generator_timeout(front, tokenizer):
    """At `generator_timeout_s` 1 a count had a tenth of it, 0.1 s: less than a real server's round trip under load (here
    0.3 s), so every chat was a 503 "did not count the prompt's tokens" while the server answered each count. Now a count
    has at least 1 s (`RemotePolicy.tokenize_timeout_s`: a tenth of the timeout, at least 1 s, at most 5 s)."""
    tokenizer.delay_s = 0.3
    with front.client("acme") as c:
        got = c.post("/v1/chat/completions", json=CHAT)
    assert got.status_code == 200, got.text  # before: 503 "... (its /tokenize: no answer within 0.1 s) ..."
    assert got.json()["usage"]["prompt_tokens"] == tokens(CHAT["messages"][0]["content"])
