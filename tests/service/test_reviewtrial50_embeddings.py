"""Session reviewtrial50: `pluralign serve-embeddings` against OpenAI's /v1/embeddings, as its clients (the openai
library, the service's `RemoteEncoder`) use it: the real app over HTTP, on the session's real MiniLM (no process of
its own: tests/processes.py's takes ~11 s to start). Each test failed before its fix."""

from __future__ import annotations

import httpx
import pytest

from pluralign.embed.base import word_pieces
from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoder
from service.embeddings.app import create_embeddings_app
from tests.service.tiny import LiveServer


@pytest.fixture(scope="module")
def url(sentence_encoder):
    with LiveServer(create_embeddings_app(sentence_encoder)) as server:
        yield server.url


def test_usage_counts_the_encoders_word_pieces_not_words(url, sentence_encoder):
    """OpenAI's `usage.prompt_tokens` is the input's tokens (what a client bills or budgets by); this server gave a
    word count ("hello world" 2, while MiniLM reads 4 word pieces: [CLS] hello world [SEP]), and 0 for a text of
    punctuation or CJK with no spaces. Now the encoder's own word pieces, special tokens included, as many as it reads
    (a text past its max_length counts max_length)."""
    texts = ["hello world", "東京の天気は?", "¡¿...!!", "word " * 400]
    r = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM_ID, "input": texts}, timeout=120)  # a 400-word text on torch: past httpx's 5 s at load ~17
    assert r.status_code == 200, r.text[:300]
    read = [min(n, sentence_encoder.max_length) for n in word_pieces(sentence_encoder.counter, texts)]
    assert read[0] == 4 and read[-1] == sentence_encoder.max_length, read
    assert r.json()["usage"] == {"prompt_tokens": sum(read), "total_tokens": sum(read)}, r.json()["usage"]


@pytest.mark.parametrize(("given", "param"), [("", "input"), (["a", ""], "input[1]"), ([""], "input[0]")])
def test_an_empty_text_is_a_400_naming_it_as_openai_answers(url, given, param):
    """OpenAI's /v1/embeddings refuses an empty input text (400, `input`); this server embedded it (the vector of
    [CLS][SEP]: no text at all), so a client tried here was refused in production. Now a 400 naming the text."""
    r = httpx.post(f"{url}/v1/embeddings", json={"model": MINILM_ID, "input": given})
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert (error["param"], error["type"], error["code"]) == (param, "invalid_request_error", "invalid_value"), error
    assert "empty" in error["message"], error


def test_the_remote_encoder_embeds_an_empty_text_as_the_local_encoder_does(url, sentence_encoder):
    """The service embeds what a chat generated, and a candidate may be empty (a generator that ends at once): its
    `RemoteEncoder` must not send OpenAI, TEI or this server an empty text they refuse, so it sends one space, which
    a WordPiece tokenizer reads as it reads nothing (the same vector as the local encoder's for "")."""
    remote = RemoteEncoder(url + "/v1", MINILM_ID, max_retries=0)
    texts = ["", "A weekend plan?", ""]
    cosine = (remote.encode(texts) * sentence_encoder.encode(texts)).sum(1)
    assert cosine.min() > 0.9999, cosine
