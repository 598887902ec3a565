"""Session remote53: a remote embeddings server must read as many word pieces of a text as the local encoder (MiniLM:
256) and cut the rest as it does, or a long text's vector is not the tables'. Text Embeddings Inference says both on
`GET /info` (`max_input_length`: its model folder's `sentence_bert_config.json` `max_seq_length`, else 512;
`auto_truncate`: `--auto-truncate`). The real client (`service.encoders.make_encoder("openai:URL")`) on a stub answering
as TEI does, on loopback."""

from __future__ import annotations

import logging

import pytest

from pluralign.embed.models import MINILM_ID
from pluralign.embed.remote import RemoteEncoderError
from service.encoders import make_encoder
from tests.stub_openai import JSONHandler, served


class TEI(JSONHandler):
    """`/v1/embeddings` (unit vectors of 384) and `GET /info` saying `info`, as TEI's router; `info` None: no such route
    (vLLM's, OpenAI's)."""

    info: dict | None = None

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/info" and type(self).info is not None:
            return self.answer(200, type(self).info)
        self.answer(404, {"error": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        texts = self.read_json()["input"]
        data = [{"object": "embedding", "index": i, "embedding": [1.0] + [0.0] * 383} for i in range(len(texts))]
        self.answer(200, {"object": "list", "data": data, "model": MINILM_ID, "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@pytest.fixture
def tei():
    with served(TEI) as root:
        yield root
    TEI.info = None


def info(length: int, truncates: bool) -> dict:
    return {"model_id": MINILM_ID, "max_input_length": length, "auto_truncate": truncates, "max_client_batch_size": 32}


def test_a_server_reading_another_length_than_the_local_encoder_is_refused_at_start(tei):
    """TEI serving MiniLM from a folder without its `sentence_bert_config.json` reads 512 word pieces where the local
    encoder reads 256. Before: taken, and a text past 256 word pieces embedded unlike the tables' vectors."""
    TEI.info = info(512, True)
    with pytest.raises(RemoteEncoderError, match=r"at most 512 word pieces .*all-MiniLM-L6-v2 256: .*--auto-truncate"):
        make_encoder(f"openai:{tei}/v1")


def test_a_server_reading_the_local_length_is_taken_and_one_refusing_longer_texts_is_said(tei, caplog):
    TEI.info = info(256, True)
    with caplog.at_level(logging.WARNING, logger="pluralign.embed.remote"):
        assert make_encoder(f"openai:{tei}/v1").dim == 384
        assert not caplog.records
        TEI.info = info(256, False)
        make_encoder(f"openai:{tei}/v1")
    assert [r.getMessage() for r in caplog.records if "no --auto-truncate" in r.getMessage()], caplog.records
    TEI.info = None  # no /info (vLLM, OpenAI, `pluralign serve-embeddings`): taken as it is
    assert make_encoder(f"openai:{tei}/v1").dim == 384


def test_serve_on_a_server_reading_another_length_stops_with_one_line_naming_the_setting(tei, tmp_path, monkeypatch, capsys):
    """Review remote53: `pluralign serve` refused such a server with a traceback ending in RemoteEncoderError, exit 1,
    where a start refused for a setting says one line `pluralign: error: ...` naming it, exit 2 (`pluralign serve
    --help`), and leaves no data folder behind. So does a start whose embeddings server cannot be reached."""
    from tests.unit.clitools import cli

    TEI.info = info(512, True)
    monkeypatch.setenv("PLURALIGN_ENCODER", f"openai:{tei}/v1")
    data = tmp_path / "data"
    code, _, err = cli(capsys, "serve", "--port", "0", "--data-dir", str(data))
    lines = [line for line in err.splitlines() if line.startswith("pluralign: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err  # before: RemoteEncoderError's traceback, 1
    assert lines[0].startswith(f"pluralign: error: PLURALIGN_ENCODER (setting encoder): embeddings server at {tei}/v1 "
                               "reads at most 512 word pieces"), lines
    assert not data.exists()
    with served(TEI) as gone:  # a port where nothing answers any more
        pass
    monkeypatch.setenv("PLURALIGN_ENCODER", f"openai:{gone}/v1")
    code, _, err = cli(capsys, "serve", "--port", "0", "--data-dir", str(data))
    assert code == 2 and "Traceback" not in err, err  # before: RemoteEncoderError's traceback ("Connection error."), 1
    assert f"pluralign: error: PLURALIGN_ENCODER (setting encoder): embeddings server at {gone}/v1: Connection error." in err, err
    assert not data.exists()


def test_serve_embeddings_in_front_of_a_server_reading_another_length_stops_with_one_line(tei, capsys):
    """`pluralign serve-embeddings --encoder openai:URL` (a server relaying another's vectors) likewise: before, the
    traceback, exit 1."""
    from tests.unit.clitools import cli

    TEI.info = info(512, True)
    code, _, err = cli(capsys, "serve-embeddings", "--port", "0", "--encoder", f"openai:{tei}/v1")
    lines = [line for line in err.splitlines() if line.startswith("pluralign: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"pluralign: error: --encoder openai:{tei}/v1: embeddings server at {tei}/v1 reads at most 512"), lines
