"""Embedding on a server speaking OpenAI's /v1/embeddings (how a GPU TEI or vLLM server is used).

The "embeddings server" is a second process, `pluralign serve-embeddings`, serving the same MiniLM;
the front service embeds feedback and prompts there (`PLURALIGN_ENCODER=openai:URL`)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import numpy as np
import pytest

from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from tests.e2e.test_e2e_serve import ROOT, ServeProcess
from tests.processes import wait_healthy
from tests.service.tiny import free_port

TEXTS = ["Suggest a weekend plan", "A quiet hike.", "A loud party with a lot of people.", ""]


@pytest.fixture(scope="module")
def embeddings_server(tmp_path_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("embeddings") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.cli", "serve-embeddings", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(url, proc, log, timeout=120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_remote_encoder_gives_the_local_vectors(embeddings_server, minilm):
    remote = RemoteEncoder(embeddings_server + "/v1", MINILM_ID, batch_size=3)  # 4 texts: two requests
    assert remote.dim == minilm.dim == 384
    vectors = remote.encode(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    cosine = (vectors * minilm.encode(TEXTS)).sum(1)
    assert cosine.min() > 0.9999
    assert remote.encode([]).shape == (0, 384)


def test_the_openai_client_default_base64_and_bad_requests(embeddings_server):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=embeddings_server + "/v1", api_key="unused", max_retries=0)
    floats = client.embeddings.create(model=MINILM_ID, input=TEXTS[:2], encoding_format="float")
    packed = client.embeddings.create(model=MINILM_ID, input=TEXTS[:2])  # the client asks for base64 and decodes it
    assert np.allclose([d.embedding for d in floats.data], [d.embedding for d in packed.data], atol=1e-6)
    with pytest.raises(BadRequestError, match="model"):
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    r = httpx.post(embeddings_server + "/v1/embeddings", json={"model": MINILM_ID, "input": []})
    assert r.status_code == 400 and "input" in r.text
    with pytest.raises(RemoteEncoderError, match="text-embedding-3-small"):
        RemoteEncoder(embeddings_server + "/v1", "text-embedding-3-small", max_retries=0)
    with pytest.raises(RemoteEncoderError, match="127.0.0.1:9"):
        RemoteEncoder("http://127.0.0.1:9/v1", MINILM_ID, max_retries=0, timeout=2)


@pytest.mark.slow  # a second server start (~30 s here): `make test-scaleout`
def test_front_service_embeds_on_the_remote_server(embeddings_server, tmp_path, tiny_generator_dir, tiny_pal_dir):
    before = httpx.get(embeddings_server + "/health").json()["texts"]
    front = ServeProcess(tmp_path / "front", tiny_generator_dir, tiny_pal_dir, PLURALIGN_ENCODER=f"openai:{embeddings_server}/v1")
    try:
        with httpx.Client(base_url=front.url, headers={"Authorization": f"Bearer {front.dev_key()}"}, timeout=60) as c:
            body = {"type": "comparison", "user": "rae", "prompt": "Suggest a weekend plan", "chosen": "A quiet hike.", "rejected": "A loud party."}
            stored = c.post("/v1/feedback", json=body).json()["stored"]
            chat = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "rae", "max_tokens": 6,
                                                        "messages": [{"role": "user", "content": "Plan my weekend"}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["pluralign"]["history"] == stored  # retrieved by a vector from the remote encoder
            assert c.get("/v1/users/rae").json()["pal"]["prior"] is False
        # the feedback's three texts, the prompt and the candidates were embedded there
        assert httpx.get(embeddings_server + "/health").json()["texts"] >= before + 5
    finally:
        front.stop()
