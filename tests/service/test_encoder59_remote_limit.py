"""Session encoder59: a remote encoder (`PLURALIGN_ENCODER=openai:URL`) serving a model other than MiniLM knows the word
pieces its model reads of a text: the server's own (Text Embeddings Inference's `GET /info` `max_input_length`, vLLM's
`GET /v1/models` `max_model_len`) or the setting `encoder_max_length`, checked against each other. A server saying it
serves another model than `encoder_model` (TEI's `model_id`: its OpenAI route embeds with its one model whatever a
request names) is refused at start, naming the setting. The embedding caches key vectors by model and length
(`encoder_cache_id`), so a cache filled through one server never answers for another. The real client
(`service.encoders.make_encoder`) and the real CLI, on stub servers on loopback answering as TEI and vLLM do."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from pluralign.embed.cache import CachedEncoder, EmbeddingCache, ScopedVectors, encoder_cache_id
from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoderError
from service.encoders import make_encoder
from tests.stub_openai import JSONHandler, served

BGE = "BAAI/bge-small-en-v1.5"
DIM = 8


class Embeddings(JSONHandler):
    """`/v1/embeddings` answering vectors whose first number is `first` (servers told apart by their vectors), each
    call's inputs in `calls`; `GET /info` answering `info` (TEI's) and `GET /v1/models` answering `models` (vLLM's),
    None: 404, no such route."""

    info: dict | None = None
    models: dict | None = None
    first = 1.0
    calls: list[list[str]]

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = {"/info": type(self).info, "/v1/models": type(self).models}.get(self.path)
        if body is None:
            return self.answer(404, {"error": "Not Found"})
        self.answer(200, body)

    def do_POST(self) -> None:  # noqa: N802
        texts = self.read_json()["input"]
        type(self).calls.append(texts)
        vector = [type(self).first, 1.0] + [0.0] * (DIM - 2)
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(texts))]
        self.answer(200, {"object": "list", "data": data, "model": "any", "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@contextlib.contextmanager
def server(info: dict | None = None, models: dict | None = None, first: float = 1.0):
    """A server of its own (its own class: its answers and calls are its own); yields (its /v1 URL, its class)."""
    handler = type("Embeddings", (Embeddings,), {"info": info, "models": models, "first": first, "calls": []})
    with served(handler) as root:
        yield f"{root}/v1", handler


def tei(model: str, length: int, truncates: bool = True) -> dict:
    return {"model_id": model, "max_input_length": length, "auto_truncate": truncates, "max_client_batch_size": 32}


def vllm(model: str, length: int) -> dict:
    return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm", "max_model_len": length}]}


@contextlib.contextmanager
def remote(url: str, model: str = BGE, max_length: int | None = None):
    given = {} if max_length is None else {"max_length": max_length}  # (the setting's argument: none before it)
    encoder = make_encoder(f"openai:{url}", model, timeout_s=5, **given)
    try:
        yield encoder
    finally:
        encoder.close()


@pytest.mark.parametrize("metadata", ["tei", "vllm"])
def test_a_remote_encoder_of_another_model_learns_the_length_its_server_reads(metadata):
    """Before: a model other than MiniLM had no length (its texts' cut unknown, its vectors cached under the model's
    name alone), whatever the server said."""
    said = {"info": tei(BGE, 512)} if metadata == "tei" else {"models": vllm(BGE, 128)}
    with server(**said) as (url, _), remote(url) as encoder:
        want = 512 if metadata == "tei" else 128
        assert encoder.max_length == want
        assert encoder_cache_id(encoder) == f"{BGE}@{want}"


def test_a_cache_filled_through_a_server_reading_one_length_does_not_answer_for_another(tmp_path):
    """The same model name on two servers reading 512 and 128 word pieces of a text: a long text's vectors differ, so
    the on-disk cache (and the service's in-memory one) must keep them apart. Before: both were cached under
    "BAAI/bge-small-en-v1.5", and the second server's encoder was answered the first one's vector."""
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    texts = ["a long review " * 200]
    try:
        with server(info=tei(BGE, 512), first=1.0) as (url_a, a), server(info=tei(BGE, 128), first=-1.0) as (url_b, b), \
                server(info=tei(BGE, 512), first=5.0) as (url_c, c):
            with remote(url_a) as encoder_a, remote(url_b) as encoder_b, remote(url_c) as encoder_c:
                got_a = CachedEncoder(encoder_a, cache).encode(texts)
                got_b = CachedEncoder(encoder_b, cache).encode(texts)
                got_c = CachedEncoder(encoder_c, cache).encode(texts)  # the same model and length: the cache answers
                scoped = ScopedVectors(1 << 20)
                scoped_a, scoped_b = scoped.encode(encoder_a, "acme", texts), scoped.encode(encoder_b, "acme", texts)
    finally:
        cache.close()
    assert got_a[0, 0] > 0 and got_b[0, 0] < 0, (got_a, got_b)  # before: got_b was server a's vector
    assert texts in b.calls and texts not in c.calls, (b.calls, c.calls)
    np.testing.assert_array_equal(got_c, got_a)
    assert scoped_a[0, 0] > 0 and scoped_b[0, 0] < 0, (scoped_a, scoped_b)


def test_the_setting_gives_the_length_where_the_server_says_none_and_is_checked_where_it_says_one():
    with server() as (url, _), remote(url, max_length=128) as encoder:  # no metadata (OpenAI's API): the setting's
        assert encoder.max_length == 128 and encoder_cache_id(encoder) == f"{BGE}@128"
    with server() as (url, _), remote(url) as encoder:  # neither: not known, sent whole as before
        assert encoder.max_length is None and encoder_cache_id(encoder) == BGE
    with server(models=vllm(BGE, 512)) as (url, _), pytest.raises(RemoteEncoderError, match=r"at most 512 word pieces .*max_model_len"):
        make_encoder(f"openai:{url}", BGE, timeout_s=5, max_length=128)


def test_a_server_serving_another_model_is_refused_and_one_serving_it_from_a_folder_is_taken():
    """TEI embeds with the model it was started on whatever a request's `model` says. Before: a server started on
    bge-base was taken for MiniLM (its 384 numbers the same width) and its vectors stored as MiniLM's."""
    with server(info=tei("BAAI/bge-base-en-v1.5", 256)) as (url, _):
        with pytest.raises(RemoteEncoderError, match=r"serves 'BAAI/bge-base-en-v1.5' \(its /info's model_id\), not "
                                                     r"'sentence-transformers/all-MiniLM-L6-v2'"):
            make_encoder(f"openai:{url}", timeout_s=5)
    with server(info=tei("/data/all-MiniLM-L6-v2", 256)) as (url, _), remote(url, MINILM_ID) as encoder:  # a downloaded copy
        assert encoder.max_length == 256 and encoder.counter is not None
    # a folder's name is no model's (Inference Endpoints' TEI serves /repository): a warning, not refused (review encoder59)
    with server(info=tei("/data/bge-base-en-v1.5", 512)) as (url, _), remote(url) as encoder:
        assert encoder.max_length == 512


def serve_error(capsys, tmp_path) -> str:
    """The one error line of `pluralign serve` refused at start (exit 2, no traceback, no data folder left)."""
    from tests.unit.clitools import cli

    data = tmp_path / "data"
    code, _, err = cli(capsys, "serve", "--port", "0", "--data-dir", str(data))
    lines = [line for line in err.splitlines() if line.startswith("pluralign: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not data.exists()
    return lines[0]


def test_serve_on_a_server_of_another_model_or_length_stops_with_one_line_naming_the_setting(capsys, tmp_path, monkeypatch):
    with server(info=tei("BAAI/bge-base-en-v1.5", 512)) as (url, _):
        monkeypatch.setenv("PLURALIGN_ENCODER", f"openai:{url}")
        monkeypatch.setenv("PLURALIGN_ENCODER_MODEL", BGE)
        line = serve_error(capsys, tmp_path)
        assert line.startswith(f"pluralign: error: PLURALIGN_ENCODER_MODEL (setting encoder_model): embeddings server at {url} "
                               f"serves 'BAAI/bge-base-en-v1.5'"), line
    with server(info=tei(BGE, 512)) as (url, _):
        monkeypatch.setenv("PLURALIGN_ENCODER", f"openai:{url}")
        monkeypatch.setenv("PLURALIGN_ENCODER_MAX_LENGTH", "128")
        line = serve_error(capsys, tmp_path)
        assert line.startswith(f"pluralign: error: PLURALIGN_ENCODER_MAX_LENGTH (setting encoder_max_length): embeddings "
                               f"server at {url} reads at most 512 word pieces"), line


@pytest.mark.parametrize("environ, said", [
    ({"PLURALIGN_ENCODER": "openai:http://e/v1", "PLURALIGN_ENCODER_MAX_LENGTH": "512"},
     "PLURALIGN_ENCODER_MAX_LENGTH (setting encoder_max_length): `encoder_max_length` 512: MiniLM reads 256 word pieces"),
    ({"PLURALIGN_ENCODER": "minilm-onnx", "PLURALIGN_ENCODER_MAX_LENGTH": "128"},
     "PLURALIGN_ENCODER_MAX_LENGTH (setting encoder_max_length): `encoder_max_length` is for an `openai:URL` encoder"),
    ({"PLURALIGN_ENCODER": "openai:http://e/v1", "PLURALIGN_ENCODER_MAX_LENGTH": "0"},
     "PLURALIGN_ENCODER_MAX_LENGTH (setting encoder_max_length): `encoder_max_length` must be at least 1, got 0"),
])
def test_a_length_no_encoder_can_read_is_refused_naming_the_setting(environ, said):
    from service.settings import Settings

    with pytest.raises(ValueError) as caught:
        Settings.load(environ)
    assert str(caught.value).startswith(said), caught.value
    assert Settings.load({**environ, "PLURALIGN_ENCODER": "openai:http://e/v1", "PLURALIGN_ENCODER_MODEL": BGE,
                          "PLURALIGN_ENCODER_MAX_LENGTH": "128"}).encoder_max_length == 128


class FolderModel:
    """A stand-in for a sentence-transformers folder's encoder that reads 128 word pieces of a text."""

    encoder_id, dim, max_length = "bge-small-folder", DIM, 128

    def encode(self, texts):
        return np.ones((len(texts), self.dim), dtype=np.float32)


def test_a_service_in_front_of_serve_embeddings_learns_its_encoders_length():
    """`pluralign serve-embeddings` answers `GET /info` as TEI does. Before: no such route (a 404), so a front service on
    a folder's model other than MiniLM knew no length of it."""
    from service.embeddings.app import create_embeddings_app
    from tests.service.tiny import LiveServer

    with LiveServer(create_embeddings_app(FolderModel())) as server:
        with remote(f"{server.url}/v1", FolderModel.encoder_id) as encoder:
            assert encoder.max_length == 128 and encoder_cache_id(encoder) == "bge-small-folder@128"
        with pytest.raises(RemoteEncoderError, match=r"at most 128 word pieces"):
            make_encoder(f"openai:{server.url}/v1", FolderModel.encoder_id, timeout_s=5, max_length=256)
