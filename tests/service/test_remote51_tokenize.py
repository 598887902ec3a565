"""A generation server whose tokenizer hangs (`tests.vllm_like --hang-tokenize`: `/tokenize` taken and never answered),
seen through the real app over HTTP (session remote51)."""

from __future__ import annotations

import threading
import time

import pytest

from pluralign.policy.remote import RemotePolicy
from tests.service.test_remote49_generation_server import CHAT, front_on
from tests.service.test_remote50_replicas import said
from tests.service.tiny import minilm, tiny_pal_dir  # noqa: F401
from tests.stub_openai import JSONHandler, served


@pytest.mark.slow  # an app and a generation server of its own (~3 s on two busy cores): `make test-scaleout`
def test_a_hung_tokenizer_answers_the_chat_503_with_retry_after_within_the_counts_bound(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The remote generator's timeout is 3 s here, so its prompt count (vLLM's `/tokenize`) may take 1 s (a tenth of it,
    0.3 s, until the floor of session remote52). Before
    (remote51) the count waited the whole 3 s (120 s by default), then the chat was sent uncounted: a 200 after 3 s,
    with `max_prompt_tokens` and `max_prefill_tokens` bounding nothing. Now the chat is a 503 with Retry-After naming the
    generation server's tokenizer, within about 1 s, and nothing is sent to the server; a stream is the same 503."""
    with front_on(tmp_path, tiny_pal_dir, minilm, "--hang-tokenize", policy=RemotePolicy(timeout_s=3, max_retries=0)) as (service, server), service.client("acme") as c:
        for stream in (False, True):
            began = time.monotonic()
            got = c.post("/v1/chat/completions", json={**CHAT, "user": None, "stream": stream})
            took = time.monotonic() - began
            assert got.status_code == 503, got.text  # before: 200 after 3 s
            assert took < 2.5, took
            assert int(got.headers["retry-after"]) > 0
            message = got.json()["error"]["message"]
            assert "generation server" in message and "tokenize" in message and "no answer within 1 s" in message, message
        assert said(server) == [], said(server)  # no chat was sent uncounted
        assert server.log.read_text().count("tokenize hangs") == 2


def test_a_tokenizer_hung_answering_5xx_or_unreachable_is_prompt_not_counted_not_a_chat_sent_uncounted():
    """Before (remote51) a `/tokenize` that did not answer was waited for the whole timeout, and it, a 5xx, or a server
    that could not be reached counted the prompt 0: the chat was sent bounded by nothing. Now each is PromptNotCounted
    (the service's 503), saying what happened, a hung one within its bound (a tenth of the timeout, at least 1 s); a 404 (no such route: the
    OpenAI API) still counts none, once."""
    from pluralign.policy.generator import PromptNotCounted
    from pluralign.policy.remote import RemoteGenerator

    class Failing(JSONHandler):
        answering = 0  # the status it answers; 0: never answered

        def do_POST(self):  # noqa: N802 (http.server's name)
            self.read_json()
            if not type(self).answering:
                threading.Event().wait(5)
                return
            self.answer(type(self).answering, {"error": {"message": "busy", "type": "ServiceUnavailable", "code": 503}})

    messages = [{"role": "user", "content": "hello"}]
    with served(Failing) as root:
        # a timeout under the floor of 1 s (remote52) bounds the count too: the count takes no longer than a chat
        remote = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=0.5, max_retries=0))
        began = time.monotonic()
        with pytest.raises(PromptNotCounted) as failed:
            remote.prompt_tokens(messages)  # before: 0, after the whole timeout
        assert failed.value.why == "no answer within 0.5 s" and time.monotonic() - began < 2
        Failing.answering = 503
        with pytest.raises(PromptNotCounted) as failed:
            remote.prompt_tokens(messages)  # before: 0
        assert failed.value.why == "answered 503"
        Failing.answering = 404
        assert remote.prompt_tokens(messages) == 0 and not remote._tokenize_route
    gone = RemoteGenerator(f"{root}/v1", "base", policy=RemotePolicy(timeout_s=3, max_retries=0))
    with pytest.raises(PromptNotCounted) as failed:
        gone.prompt_tokens(messages)
    assert failed.value.why == "unreachable"
