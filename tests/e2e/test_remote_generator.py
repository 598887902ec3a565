"""Generation on an OpenAI-compatible server (how a GPU vLLM server is used past one machine).

The "GPU server" here is a second pluralign process with the tiny model: it speaks the same
OpenAI chat-completions protocol. The front service retrieves, builds the context and reranks
locally, and sends generation there; the official openai client talks to the front unchanged."""

from __future__ import annotations

import httpx
import pytest

from pluralign.policy.generator import Sampling
from pluralign.policy.remote import RemoteGenerator, RemoteGeneratorError
from tests.e2e.test_e2e_serve import ServeProcess


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_generator_dir, tiny_pal_dir):
    proc = ServeProcess(tmp_path_factory.mktemp("gpu") / "data", tiny_generator_dir, tiny_pal_dir)
    yield proc, proc.dev_key()
    proc.stop()


def test_remote_generator_speaks_the_openai_protocol(backend):
    proc, key = backend
    remote = RemoteGenerator(proc.url + "/v1", "pluralign", api_key=key)
    candidates, prompt_tokens = remote.generate(
        [{"role": "user", "content": "Say hello"}], n=2, sampling=Sampling(max_tokens=6, seed=3)
    )
    assert len(candidates) == 2 and all(c.finish_reason in ("stop", "length") for c in candidates)
    assert prompt_tokens > 0
    pieces = list(remote.stream([{"role": "user", "content": "Say hello"}], sampling=Sampling(max_tokens=6)))
    final = pieces[-1]
    assert "".join(p for p in pieces[:-1]).strip() == final.text
    with pytest.raises(ValueError, match="not loaded"):
        remote.generate([{"role": "user", "content": "Hi"}], adapter="nobody")
    with pytest.raises(RemoteGeneratorError, match="401|403"):
        RemoteGenerator(proc.url + "/v1", "pluralign", api_key="pk-wrong").generate([{"role": "user", "content": "Hi"}])


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
