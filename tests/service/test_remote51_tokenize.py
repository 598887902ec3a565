"""A generation server whose tokenizer hangs (`tests.vllm_like --hang-tokenize`: `/tokenize` taken and never answered),
seen through the real app over HTTP (session remote51)."""

from __future__ import annotations

import time

from pluralign.policy.remote import RemotePolicy
from tests.service.test_remote49_generation_server import CHAT, front_on
from tests.service.test_remote50_replicas import said
from tests.service.tiny import minilm, tiny_pal_dir  # noqa: F401


def test_a_hung_tokenizer_answers_the_chat_503_with_retry_after_in_a_tenth_of_the_timeout(tmp_path, tiny_pal_dir, minilm):  # noqa: F811
    """The remote generator's timeout is 3 s here, so its prompt count (vLLM's `/tokenize`) may take 0.3 s. Before
    (remote51) the count waited the whole 3 s (120 s by default), then the chat was sent uncounted: a 200 after 3 s,
    with `max_prompt_tokens` and `max_prefill_tokens` bounding nothing. Now the chat is a 503 with Retry-After naming the
    generation server's tokenizer, within about 0.3 s, and nothing is sent to the server; a stream is the same 503."""
    with front_on(tmp_path, tiny_pal_dir, minilm, "--hang-tokenize", policy=RemotePolicy(timeout_s=3, max_retries=0)) as (service, server), service.client("acme") as c:
        for stream in (False, True):
            began = time.monotonic()
            got = c.post("/v1/chat/completions", json={**CHAT, "user": None, "stream": stream})
            took = time.monotonic() - began
            assert got.status_code == 503, got.text  # before: 200 after 3 s
            assert took < 2.5, took
            assert int(got.headers["retry-after"]) > 0
            message = got.json()["error"]["message"]
            assert "generation server" in message and "tokenize" in message and "0.3 s" in message, message
        assert said(server) == [], said(server)  # no chat was sent uncounted
        assert server.log.read_text().count("tokenize hangs") == 2
