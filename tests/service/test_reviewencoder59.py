"""Review of encoder59 (an `openai:` encoder reads what its server says it serves: TEI's `GET /info`, vLLM's
`GET /v1/models`). A TEI started on a folder whose name is not the model's (Hugging Face Inference Endpoints run it
as `--model-id /repository`) says nothing of which model it holds, so it is taken with a warning, not refused: no
setting could get past that refusal. A length refused for MiniLM names `PLURALIGN_ENCODER` (the server), not
`PLURALIGN_ENCODER_MAX_LENGTH`, which may only be MiniLM's 256 there. On stub servers on loopback, as encoder59's
own tests (`tests/service/test_encoder59_remote_limit.py`)."""

from __future__ import annotations

import logging

import pytest

from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoderError
from service.embeddings.app import served_info
from service.encoders import make_encoder
from tests.service.test_encoder59_remote_limit import BGE, Embeddings, remote, serve_error, server, tei, vllm
from tests.stub_openai import served


def test_a_tei_serving_a_folder_of_another_name_is_taken_with_a_warning_naming_it(caplog):
    """Before: refused, `serves '/repository' (its /info's model_id), not 'sentence-transformers/all-MiniLM-L6-v2'`,
    whatever PLURALIGN_ENCODER_MODEL said (naming '/repository' there makes another model than the tables')."""
    with caplog.at_level(logging.WARNING, logger="pluralign"):
        with server(info=tei("/repository", 256)) as (url, _), remote(url, MINILM_ID) as encoder:
            assert encoder.max_length == 256 and encoder.counter is not None
    warned = [r.getMessage() for r in caplog.records if "'/repository'" in r.getMessage()]
    assert len(warned) == 1 and MINILM_ID in warned[0], caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pluralign"):  # a folder of the model's name: nothing to warn of
        with server(info=tei("/data/bge-small-en-v1.5/", 512)) as (url, _), remote(url) as encoder:
            assert encoder.max_length == 512
    assert not [r for r in caplog.records if "bge-small" in r.getMessage()], caplog.text


def test_a_length_refused_for_minilm_names_the_server_even_where_the_length_setting_is_set(capsys, tmp_path, monkeypatch):
    """PLURALIGN_ENCODER_MAX_LENGTH=256 with MiniLM (the one value it may have there) and a server reading 512. Before:
    the line named PLURALIGN_ENCODER_MAX_LENGTH, whose any other value the settings refuse."""
    with server(info=tei(MINILM_ID, 512)) as (url, _):
        monkeypatch.setenv("PLURALIGN_ENCODER", f"openai:{url}")
        monkeypatch.setenv("PLURALIGN_ENCODER_MAX_LENGTH", "256")
        line = serve_error(capsys, tmp_path)
    assert line.startswith(f"pluralign: error: PLURALIGN_ENCODER (setting encoder): embeddings server at {url} reads at "
                           "most 512 word pieces"), line


def test_vllm_serving_several_models_gives_the_length_of_the_one_named():
    listing = vllm("Qwen/Qwen3-Embedding-0.6B", 32768)
    listing["data"] += vllm(BGE, 512)["data"]
    with server(models=listing) as (url, _), remote(url) as encoder:
        assert encoder.max_length == 512


def test_serve_embeddings_relaying_another_server_says_it_does_not_know_whether_it_cuts():
    """`pluralign serve-embeddings --encoder openai:URL`: its `/info` says the relayed server's model and length, and
    `auto_truncate` null (that server may refuse long texts)."""
    with server(info=tei(BGE, 512, truncates=False)) as (url, _), remote(url) as relayed:
        assert served_info(relayed) == {"model_id": BGE, "max_input_length": 512, "auto_truncate": None}


class ModelsDown(Embeddings):
    """No `/info` (vLLM's 404) and `/v1/models` answering 503: what the server reads is not known."""

    calls: list[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.answer(503 if self.path == "/v1/models" else 404, {"error": "down" if self.path == "/v1/models" else "Not Found"})


def test_a_server_without_info_whose_model_listing_is_not_given_is_refused():
    with served(ModelsDown) as root, pytest.raises(RemoteEncoderError, match=r"its GET /v1/models .* answered 503"):
        make_encoder(f"openai:{root}/v1", BGE, timeout_s=5)
