"""Generation on an OpenAI-compatible server (how a GPU vLLM server is used past one machine).

The "GPU server" here is a second pluralign process with the tiny model: it speaks the same
OpenAI chat-completions protocol. The front service retrieves, builds the context and reranks
locally, and sends generation there; the official openai client talks to the front unchanged."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from pluralign.policy.generator import Sampling
from pluralign.policy.remote import RemoteGenerator, RemoteGeneratorError, RemotePolicy
from tests.e2e.test_e2e_serve import ServeProcess


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_generator_dir, tiny_pal_dir):
    proc = ServeProcess(tmp_path_factory.mktemp("gpu") / "data", tiny_generator_dir, tiny_pal_dir)
    yield proc, proc.dev_key()
    proc.stop()


@pytest.mark.slow  # the remote server's start and two generations (~30 s together): `make test-scaleout`
def test_remote_generator_speaks_the_openai_protocol(backend):
    proc, key = backend
    remote = RemoteGenerator(proc.url + "/v1", "pluralign", api_key=key)
    candidates, prompt_tokens = remote.generate(
        [{"role": "user", "content": "Say hello"}], n=2, sampling=Sampling(max_tokens=6, seed=3)
    )
    assert len(candidates) == 2 and all(c.finish_reason in ("stop", "length") for c in candidates)
    assert prompt_tokens > 0
    # token counts are the server's usage: the same request through the openai client reports them
    from openai import OpenAI

    served = OpenAI(base_url=proc.url + "/v1", api_key=key, max_retries=0).chat.completions.create(
        model="pluralign", messages=[{"role": "user", "content": "Say hello"}], n=2, max_tokens=6, seed=3,
    )
    assert sum(c.tokens for c in candidates) == served.usage.completion_tokens
    assert prompt_tokens == served.usage.prompt_tokens
    pieces = list(remote.stream([{"role": "user", "content": "Say hello"}], sampling=Sampling(max_tokens=6)))
    final = pieces[-1]
    assert "".join(p for p in pieces[:-1]).strip() == final.text
    assert 0 < final.tokens <= 6  # from the stream's usage chunk, not a count of chunks
    assert final.prompt_tokens == prompt_tokens  # the stream's usage too (kept for a later `prompt_tokens` until remote52)
    with pytest.raises(ValueError, match="not loaded"):
        remote.generate([{"role": "user", "content": "Hi"}], adapter="nobody")
    with pytest.raises(RemoteGeneratorError, match="401|403"):
        RemoteGenerator(proc.url + "/v1", "pluralign", api_key="pk-wrong").generate([{"role": "user", "content": "Hi"}])


@pytest.mark.slow  # the remote server's start and two generations (~30 s together): `make test-scaleout`
def test_front_service_generates_on_the_remote_server(backend, tmp_path, tiny_pal_dir):
    from openai import OpenAI

    proc, key = backend
    front = ServeProcess(
        tmp_path / "front", f"openai:{proc.url}/v1", tiny_pal_dir,
        PLURALIGN_GENERATOR_MODEL="pluralign", PLURALIGN_GENERATOR_API_KEY=key,
    )
    try:
        client = OpenAI(base_url=front.url + "/v1", api_key=front.dev_key(), max_retries=0)
        completion = client.chat.completions.create(
            model="pluralign", messages=[{"role": "user", "content": "Say hello"}], user="remote-user", max_tokens=6
        )
        assert completion.model_extra["pluralign"]["candidates"] >= 2
        assert completion.choices[0].message.content is not None
        metrics = httpx.get(proc.url + "/metrics").text  # the back end did the generating
        assert "pluralign_chat_completions_total" in metrics
    finally:
        front.stop()


def test_timeouts_and_retries_follow_the_policy():
    """A server that accepts connections and never answers: each try times out, the client tries
    1 + max_retries times, then a RemoteGeneratorError says so."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted, held = [], []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            held.append(conn)  # never answered

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    remote = RemoteGenerator(f"http://127.0.0.1:{port}/v1", "m", policy=RemotePolicy(timeout_s=0.5, max_retries=2))
    start = time.monotonic()
    with pytest.raises(RemoteGeneratorError, match="timed out"):
        remote.generate([{"role": "user", "content": "Hi"}], sampling=Sampling(max_tokens=4))
    assert len(accepted) == 3 and time.monotonic() - start < 30
    for conn in held:
        conn.close()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    refused = RemoteGenerator(f"http://127.0.0.1:{closed_port}/v1", "m", policy=RemotePolicy(timeout_s=0.5, max_retries=0))
    with pytest.raises(RemoteGeneratorError, match="unreachable"):
        refused.generate([{"role": "user", "content": "Hi"}])
    listener.close()
