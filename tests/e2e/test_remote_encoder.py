"""Embedding on a server speaking OpenAI's /v1/embeddings (how a GPU TEI or vLLM server is used).

The "embeddings server" is a second process, `pluralign serve-embeddings`, serving the same MiniLM;
the front service embeds feedback and prompts there (`PLURALIGN_ENCODER=openai:URL`)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from tests.e2e.test_e2e_serve import ServeProcess

TEXTS = ["Suggest a weekend plan", "A quiet hike.", "A loud party with a lot of people.", ""]


def test_remote_encoder_gives_the_local_vectors(embeddings_server, minilm):
    url, _ = embeddings_server
    remote = RemoteEncoder(url + "/v1", MINILM_ID, batch_size=3)  # 4 texts: two requests
    assert remote.dim == minilm.dim == 384
    assert remote.max_length == 256  # not given: said by the server's GET /info (encoder59; before, None)
    vectors = remote.encode(TEXTS)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    cosine = (vectors * minilm.encode(TEXTS)).sum(1)
    assert cosine.min() > 0.9999
    assert remote.encode([]).shape == (0, 384)


def test_the_openai_client_default_base64_and_bad_requests(embeddings_server):
    from openai import BadRequestError, OpenAI

    url, _ = embeddings_server
    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    floats = client.embeddings.create(model=MINILM_ID, input=TEXTS[:2], encoding_format="float")
    packed = client.embeddings.create(model=MINILM_ID, input=TEXTS[:2])  # the client asks for base64 and decodes it
    assert np.allclose([d.embedding for d in floats.data], [d.embedding for d in packed.data], atol=1e-6)
    with pytest.raises(BadRequestError, match="model"):
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    r = httpx.post(url + "/v1/embeddings", json={"model": MINILM_ID, "input": []})
    assert r.status_code == 400 and "input" in r.text
    with pytest.raises(RemoteEncoderError, match="text-embedding-3-small"):
        RemoteEncoder(url + "/v1", "text-embedding-3-small", max_retries=0)
    with pytest.raises(RemoteEncoderError, match="127.0.0.1:9"):
        RemoteEncoder("http://127.0.0.1:9/v1", MINILM_ID, max_retries=0, timeout=2)


@pytest.mark.slow  # a second server start (~30 s here): `make test-scaleout`
def test_front_service_embeds_on_the_remote_server(embeddings_server, tmp_path, tiny_generator_dir, tiny_pal_dir):
    url, _ = embeddings_server
    before = httpx.get(url + "/health").json()["texts"]
    front = ServeProcess(tmp_path / "front", tiny_generator_dir, tiny_pal_dir, PLURALIGN_ENCODER=f"openai:{url}/v1")
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
        assert httpx.get(url + "/health").json()["texts"] >= before + 5
    finally:
        front.stop()
