"""Session longtext57: the service on a remote encoder (`PLURALIGN_ENCODER=openai:URL`) sends a long text cut to the
start the embeddings server reads of it (`pluralign.embed.base.window_texts` on MiniLM's own tokenizer), not whole:
the server reads the same word pieces, so the vector is the same, without the text crossing the network and being
tokenized whole at the far side. The real app over HTTP on a recording stub embeddings server
(tests/service/test_small52_remote_encoder.py's), and `pluralign serve-embeddings` in a process of its own."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.embed.base import FIRST_CHARS
from pluralign.embed.models import MINILM_ID
from service.encoders import make_encoder
from tests.service.test_small52_remote_encoder import stub  # noqa: F401
from tests.service.tiny import tiny_pal_dir  # noqa: F401

MAX_LENGTH = 256  # MiniLM's word pieces read of a text
LONG = "The committee met on Tuesday; its members, weary, argued until dawn about the budget. " * 4_000  # 344 KB


def read_ids(tokenizer, text: str) -> list[int]:
    """The word pieces the embeddings server reads of `text` (TEI with --auto-truncate, `pluralign serve-embeddings`)."""
    return tokenizer(text, truncation=True, max_length=MAX_LENGTH, verbose=False)["input_ids"]


def test_a_score_sends_a_long_response_cut_to_what_the_embeddings_server_reads(stub, tmp_path, tiny_pal_dir, minilm,  # noqa: F811
                                                                                 sentence_encoder):
    """Before: each 20,000-character response (the most a score takes) was sent whole, and tokenized whole by the
    server to keep 256 word pieces."""
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy
    from service.app import create_app
    from service.runtime import Runtime
    from service.settings import Settings
    from tests.service.tiny import LiveServer, Service

    embeddings, generation = stub(dim=minilm.dim), stub()
    config = Settings(data_dir=str(tmp_path / "data"), generator=f"openai:{generation.url}", encoder=f"openai:{embeddings.url}",
                      pal_dir=str(tiny_pal_dir), max_tokens=4)
    # the encoder as the setting makes it (`service.encoders.make_encoder`): no encoder passed
    runtime = Runtime.build(config, generator=RemoteGenerator(generation.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0)))
    service = Service(LiveServer(create_app(runtime=runtime)), runtime, {"acme": runtime.keys.issue("acme")})
    latin, cjk = LONG[:20_000], ("我们今天讨论了预算问题，委员会成员一直争论到天亮。" * 800)[:20_000]  # CJK: no spaces
    responses = ["Hello.", latin, cjk]
    with service.server, service.client("acme") as c:
        answer = c.post("/v1/rewards/score", json={"user": "rae", "prompt": "Hi?", "responses": responses})
    assert answer.status_code == 200, answer.text
    sent = [text for call in embeddings.calls for text in call]
    longest = max(map(len, sent))
    assert longest <= 4 * FIRST_CHARS * MAX_LENGTH, longest  # before: 20,000 characters
    tokenizer = sentence_encoder.counter
    for text in (latin, cjk):
        start = next(s for s in sent if text.startswith(s) and len(s) > 100)
        assert len(start) < len(text) and read_ids(tokenizer, start) == read_ids(tokenizer, text)


@pytest.mark.slow  # a process of its own (~30 s to start on busy cores): `make test-scaleout`
def test_the_remote_encoders_vectors_of_long_texts_are_the_local_encoders(embeddings_server, sentence_encoder):
    """The cut changes no vector: `pluralign serve-embeddings` (MiniLM, its own process) embeds the sent starts as the
    local encoder embeds the whole texts. (In the default suite, the test above shows the server is sent starts that it
    reads as the whole texts' word pieces.)"""
    url, _ = embeddings_server
    remote = make_encoder(f"openai:{url}/v1", MINILM_ID)
    try:
        assert remote.counter is not None
        texts = [LONG, "短い" * 50_000 + " end", "Plan my weekend.", ("pneumonoultramicroscopic " * 4_000).strip(), ""]
        got, want = remote.encode(texts), sentence_encoder.encode(texts)
    finally:
        remote.close()
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("model", ["text-embedding-3-small"])
def test_another_model_on_the_server_has_its_texts_sent_whole(stub, model):  # noqa: F811
    """Only a model whose tokenizer is known here (MiniLM's) has its texts cut; another's are sent as given."""
    embeddings = stub(dim=8)
    remote = make_encoder(f"openai:{embeddings.url}", model)
    try:
        remote.encode([LONG])
    finally:
        remote.close()
    assert embeddings.calls[-1] == [LONG]
