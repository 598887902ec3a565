"""utf58: bytes that are not UTF-8 (a byte changed, a file cut inside a character of two bytes or more) in what the
service and the CLI decode take the path any damaged file, reply or body takes. msgspec raises UnicodeDecodeError for
them, not its DecodeError, so each reader catching DecodeError alone let it escape: a start that stopped with a bare
"'utf-8' codec can't decode byte 0xff" naming no file (or a traceback), a 500 where a 400 names the problem, a Parquet
file whose rows were never read. Readers catch `pluralign.files.DECODE_ERRORS` now. Real files in a temp folder, the
real app over HTTP, the real CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import httpx
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pluralign.store.feedback_log import FORGOTTEN
from service.dropped_refits import DROPPED_REFITS_FILE
from service.tenants import REMOVALS_FOLDER
from service.users.journal import JOURNAL_FOLDER
from service.waiting_refits import WAITING_REFITS_FILE
from tests.conftest import REPO
from tests.service.test_break20_delete_b import logged

NOT_UTF8 = b"b\xffo"  # a byte changed into one no UTF-8 text holds
HALF = "jos\u00e9".encode()[:-1]  # `é` missing its second byte (a file cut there and written on, a byte lost)
# (a file cut short there ends inside its string: msgspec's DecodeError "truncated", which every reader took already)
DAMAGED = pytest.mark.parametrize("text", [NOT_UTF8, HALF], ids=["a byte changed", "half a character"])


def cli(tmp_path, *argv: str, timeout: int = 120, **environ: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PLURALIGN_SHARED_DATA": str(tmp_path / "no-shared-data"), "HF_HUB_OFFLINE": "1", **environ}
    env.pop("PLURALIGN_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "training.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


# --- data-folder files read at the start -------------------------------------------------------------------------

# (file under the data folder, its damaged bytes, what the log says of it): each is set aside or skipped as a damaged
# one is, and the service starts
SKIPPED_AT_START = {  # each with TEXT where a user's id or a tenant's name goes
    "dropped refits": (DROPPED_REFITS_FILE, b'[["acme","TEXT"]]', "cannot be read"),
    "waiting refits": (WAITING_REFITS_FILE, b'[["acme","ann"]]\n[["acme","TEXT"]]\n', "1 lines cut short or damaged"),
    "a tenant's removal": (f"{REMOVALS_FOLDER}/{'0' * 64}.json", b'{"tenant":"TEXT"}', "is not a tenant removal record"),
}


@DAMAGED
@pytest.mark.parametrize("name, damaged, said", SKIPPED_AT_START.values(), ids=SKIPPED_AT_START.keys())
def test_a_start_takes_a_data_folder_file_that_is_not_utf8_as_a_damaged_one(serve, tmp_path, name, damaged, said, text):
    """Before: UnicodeDecodeError stopped the start (the refits' files: at every restart) or the start's look at the
    running removals of tenants ("removing tenants failed"), where a damaged file is logged and left."""
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(damaged.replace(b"TEXT", text))
    with logged("pluralign.service", logging.WARNING) as said_then:
        _, server, svc = serve()
        with server, svc.client("acme") as c:
            assert c.get("/health").status_code == 200
    assert any(str(path) in m and said in m for m in said_then), said_then
    assert not any("failed" in m for m in said_then), said_then


@DAMAGED
def test_a_delete_journal_entry_that_is_not_utf8_is_left_for_the_operator(serve, tmp_path, text):
    """The journal's pass (at start, every `deletion_sweep_s`) logs a damaged entry and goes on with the others; before,
    one holding a byte that is not UTF-8 raised UnicodeDecodeError out of the pass."""
    path = tmp_path / "data" / JOURNAL_FOLDER / "x.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"tenant":"acme","user_id":"' + text + b'"}')
    with logged("pluralign.service") as said_then:
        _, server, svc = serve()
        with server:
            assert svc.runtime.delete_journal.pending() == []  # what the pass reads
    assert any(f"{path} is not a DELETE journal entry" in m for m in said_then), said_then
    assert not any("failed" in m for m in said_then), said_then


@DAMAGED
def test_a_feedback_log_note_that_is_not_utf8_stops_the_start_naming_it(serve, tmp_path, text):
    """`feedback-log/forgotten.json` (docs/operations.md: a damaged one stops the start with a message naming it);
    before, the start stopped with "'utf-8' codec can't decode byte ..." alone, naming no file."""
    path = tmp_path / "data" / "feedback-log" / FORGOTTEN
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"users": {"' + text + b'": [[null, 1]]}}')
    with pytest.raises(ValueError, match=f"^{path}: unreadable .*Restore it"):
        serve()


@DAMAGED
def test_an_api_keys_file_that_is_not_utf8_stops_serve_naming_it(tmp_path, text, capsys, monkeypatch):
    """Before: `pluralign: error: 'utf-8' codec can't decode byte 0xff in position 1: invalid start byte`, no file.
    `pluralign serve` run in this process for the half character, as the PAL checkpoint's test below (speedC63: a
    process of its own, ~0.5 CPU-s a case); the changed byte's in a process of its own still (review speed63): a start
    that took the file would serve on, which in this process held the test, and the run, with no end (the process is
    failed at its timeout)."""
    from tests.unit.clitools import cli as cli_here

    data = tmp_path / "data"
    data.mkdir()
    (data / "api_keys.json").write_bytes(b'[{"key":"' + text + b'"}]')
    if text == NOT_UTF8:
        result = cli(tmp_path, "serve", "--data-dir", str(data), "--port", "0")
        code, err = result.returncode, result.stderr
    else:
        monkeypatch.delenv("PLURALIGN_DATA_DIR", raising=False)
        monkeypatch.setenv("PLURALIGN_SHARED_DATA", str(tmp_path / "no-shared-data"))
        code, _, err = cli_here(capsys, "serve", "--data-dir", str(data), "--port", "0")
    assert code == 2, err[-3000:]
    assert err.strip().splitlines()[-1].startswith(f"pluralign: error: {data / 'api_keys.json'}: not a list of API keys (it is not JSON: "), err


def test_a_replica_folder_id_that_is_not_utf8_is_drawn_again(tmp_path):
    """`replica-folder-id` (read at each start of a replica): a file that is not such an id is drawn again; before, one
    holding a byte that is not UTF-8 raised UnicodeDecodeError and the replica did not start."""
    from service.deletions import FOLDER_ID_FILE, folder_id

    (tmp_path / FOLDER_ID_FILE).write_bytes(b"0123456789abcdef0123456789abcd\xff\xfe")
    drawn = folder_id(tmp_path)
    assert len(drawn) == 32 and drawn == (tmp_path / FOLDER_ID_FILE).read_text().strip() == folder_id(tmp_path)


# --- an artifact's meta ------------------------------------------------------------------------------------------

def test_a_pal_checkpoint_whose_meta_is_not_utf8_stops_serve_naming_it(tmp_path, tiny_pal_dir, capsys, monkeypatch):
    """A PAL checkpoint's meta.json with a changed byte: the start names the file as for any damaged description;
    before, "'utf-8' codec can't decode byte 0xff ..." alone. `pluralign serve` run in this process (the start stops
    before any model loads): a process of its own (~3 CPU-s) checked nothing more."""
    import shutil

    from tests.unit.clitools import cli as cli_here

    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    meta = pal / "meta.json"
    meta.write_bytes(meta.read_bytes().replace(b'"encoder_id": "', b'"encoder_id": "\xff', 1))
    monkeypatch.delenv("PLURALIGN_DATA_DIR", raising=False)
    monkeypatch.setenv("PLURALIGN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("PLURALIGN_PAL_DIR", str(pal))
    code, _, err = cli_here(capsys, "serve", "--data-dir", str(tmp_path / "data"), "--port", "0")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert str(meta) in line and "not" in line and line.startswith("pluralign: error: "), err[-3000:]


# --- import files ------------------------------------------------------------------------------------------------

def parquet_with_a_damaged_prompt(path):
    """Two rows; the second's prompt holds a byte that is not UTF-8 (Parquet keeps a string's bytes unchecked)."""
    prompts = pa.array([b"Hi", b"H" + NOT_UTF8], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"prompt": prompts, "chosen": ["a", "b"], "rejected": ["c", "d"], "user_id": ["u", "u"]}), path)
    return path


@pytest.mark.parametrize("command", [["data", "stats"], ["data", "import", "--url", "http://127.0.0.1:9", "--key", "k"]])
def test_a_parquet_row_that_is_not_utf8_is_refused_naming_its_row_and_column(tmp_path, command, capsys, monkeypatch):
    """Before, the whole file was not read: "'utf-8' codec can't decode byte 0xff in position 2", no row, no column,
    and --skip-bad could not skip it. The CLI run in this process (`tests/unit/clitools.py`, as `pluralign`'s main
    with its argv: speedC63; a process of its own each, 4 of them, cost ~3 CPU-s of the default suite's)."""
    from tests.unit.clitools import cli as cli_here

    monkeypatch.delenv("PLURALIGN_DATA_DIR", raising=False)
    monkeypatch.setenv("PLURALIGN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = parquet_with_a_damaged_prompt(tmp_path / "prefs.parquet")
    code, _, err = cli_here(capsys, *command, "--source", "file", "--path", str(path))
    assert code == 2, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"pluralign: error: --path {path}: row 2, field `prompt`: is not valid UTF-8 (byte 0xff "
                                            "at byte 3 of a text in it) (--skip-bad skips bad rows)"), err[-3000:]
    code, out, err = cli_here(capsys, "data", "stats", "--source", "file", "--path", str(path), "--skip-bad", "--json")
    assert code == 0, err[-3000:]
    assert msgspec.json.decode(out)["pairs"] == 1
    assert "skipped 1 bad row (--skip-bad); first: row 2, field `prompt`: is not valid UTF-8" in err


def test_an_import_body_line_that_is_not_utf8_is_a_400_naming_it(serve):
    """The HTTP import route (a JSONL body): refused whole before any row is read, naming the line."""
    _, server, svc = serve()
    body = b'{"prompt":"Hi","chosen":"a","rejected":"b"}\n{"prompt":"H' + NOT_UTF8 + b'","chosen":"a","rejected":"b"}\n'
    with server, svc.client("acme") as c:
        r = c.post("/v1/users/ann/import", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400, r.text
    assert "UTF-8" in r.json()["error"]["message"], r.text


# --- HTTP bodies the service decodes itself; remote servers' replies ----------------------------------------------

def test_an_embeddings_body_that_is_not_utf8_is_a_400(tmp_path):
    """`pluralign serve-embeddings` checks a body's JSON syntax itself: before, a body with a byte that is not UTF-8
    inside a string was a 500 `internal error`."""
    from service.embeddings.app import create_embeddings_app
    from tests.service.test_newuser38_embeddings_errors import TinyEncoder
    from tests.service.tiny import LiveServer

    with LiveServer(create_embeddings_app(TinyEncoder())) as server:
        r = httpx.post(f"{server.url}/v1/embeddings", content=b'{"model": "tiny", "input": "' + NOT_UTF8 + b'"}',
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["type"]) == ("input", "invalid_request_error"), error
    assert error["message"] == "`input`: is not valid UTF-8 (invalid start byte at byte 29 of the body)", error


def test_a_remote_encoders_reply_that_is_not_utf8_is_the_servers_failure(monkeypatch):
    """A 200 labelled JSON whose bytes are not UTF-8 (a proxy's page in another charset) is `RemoteEncoderError`, as a
    page that is not JSON; before, UnicodeDecodeError, a ValueError the feedback worker takes for the texts' own."""
    from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
    from tests.service import test_small52_remote_encoder as small52

    monkeypatch.setattr(small52, "PROXY_PAGE", b'{"object": "list", "data": [], "model": "' + NOT_UTF8 + b'"}')
    server = small52.EmbeddingsStub(failing=10**6)
    try:
        with pytest.raises(RemoteEncoderError, match=r"embeddings server at http://127\.0\.0\.1:\d+/v1 answered a body that is not JSON"):
            RemoteEncoder(server.url, "hash", max_retries=0).encode(["a question"])
    finally:
        server.shutdown()
        server.server_close()


def test_a_remote_generators_reply_that_is_not_utf8_is_the_servers_failure():
    """As the encoder's: `RemoteGeneratorError` (the chat's 503 to send again), not a 500."""
    from pluralign.policy.generator import RemoteGeneratorError
    from pluralign.policy.remote import RemoteGenerator, RemotePolicy
    from tests.service.test_reviewsmall52 import AnswerStub

    server = AnswerStub(b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "' + NOT_UTF8 + b'"}}]}',
                        "application/json")
    try:
        generator = RemoteGenerator(server.url, "m", policy=RemotePolicy(timeout_s=5, max_retries=0))
        with pytest.raises(RemoteGeneratorError, match=r"generation server at http://127\.0\.0\.1:\d+/v1 answered a body that is not JSON"):
            generator.generate([{"role": "user", "content": "Hi"}], n=1)
    finally:
        server.shutdown()
        server.server_close()
