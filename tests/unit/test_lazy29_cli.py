"""Commands do not pay for what they do not use.

`pluralign eval` and the trainers load their encoder only at the first text missing from the embedding
cache (a rerun on cached texts loads none: MiniLM took 4-6 s a run on 2 cores), and `pluralign serve` /
`serve-embeddings` refuse a bad setting before importing torch, lancedb and the service (2-5 s).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli

CACHE = REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"  # the CLI tests' cache (tests/unit/test_cli.py)


@pytest.fixture
def encoder_loads(monkeypatch) -> list[str]:
    """The MiniLM encoders constructed (each a load of its weights) while the test runs."""
    from pluralign.embed.encoders import SentenceEncoder

    loads: list[str] = []
    load = SentenceEncoder.__init__

    def counted(self, *args, **kwargs):
        loads.append("minilm")
        load(self, *args, **kwargs)

    monkeypatch.setattr(SentenceEncoder, "__init__", counted)
    return loads


def test_a_cached_rerun_of_eval_loads_no_encoder(shared_data, capsys, encoder_loads):
    """Before: every `pluralign eval` loaded MiniLM before it looked in the embedding cache, though a
    rerun found every text there (one load a run). Now the encoder loads at the first text the cache
    lacks: the rerun loads none, and reports the same figures."""
    argv = ("eval", "--model", "per-user-bt", "--protocol", "persona", "--groups", "2", "--unseen-per-group", "2",
            "--query-size", "5", "--json", "--data-dir", str(shared_data), "--cache", str(CACHE))
    code, out, err = cli(capsys, *argv)  # the first run fills the cache where it lacks a text (loading MiniLM then)
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    encoder_loads.clear()
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert encoder_loads == []
    second = json.loads(out.strip().splitlines()[-1])
    assert {**second, "seconds": 0} == {**first, "seconds": 0}


@pytest.mark.slow  # two persona evals as processes, about 20 s: `make test-all`
def test_the_cached_rerun_of_the_documented_eval_never_imports_the_encoders_library(shared_data, tmp_path):
    """The README's `pluralign eval --model bt --protocol persona --groups 4 --json`, run twice as a user
    runs it: the rerun finds every text in the cache and never imports sentence-transformers."""
    argv = [sys.executable, "-X", "importtime", "-m", "training.cli", "eval", "--model", "bt", "--protocol", "persona", "--groups", "4",
            "--json", "--data-dir", str(shared_data), "--cache", str(CACHE)]
    runs = [subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in runs[1].stderr.splitlines() if line.startswith("import time:")}
    assert "sentence_transformers" not in imported and "torch" in imported  # torch: the eval's own models
    reports = [json.loads(run.stdout.strip().splitlines()[-1]) for run in runs]
    assert {**reports[1], "seconds": 0} == {**reports[0], "seconds": 0}


HEAVY = ("torch", "lancedb", "litestar", "service.app", "transformers", "uvicorn")  # seconds of imports before a server starts
ENCODERS = "expected `minilm`, `minilm-onnx`, `minilm-onnx-int8` or `smollm2`"
PORT_OR_PASSWORD = ("its port is not a number, or its user name or password holds a character a URL cannot hold there: "
                    "write / ? # @ as %2F %3F %23 %40")
NO_URL = "`openai:URL` needs the server's http:// or https:// URL (`openai:http://127.0.0.1:8000/v1`),"


@pytest.mark.parametrize("argv, env, said", [
    (["serve"], {"PLURALIGN_STORE_RETRIES": "abc"}, "PLURALIGN_STORE_RETRIES (setting store_retries): expected `int`, got `str` 'abc'"),
    (["serve"], {"PLURALIGN_ENCODER": "minilm-onx"}, f"PLURALIGN_ENCODER (setting encoder): unknown encoder 'minilm-onx': {ENCODERS}"),
    (["serve"], {"PLURALIGN_GENERATOR": "smollm3"}, "PLURALIGN_GENERATOR (setting generator): expected `smollm2`, a model folder or `openai:URL`, got 'smollm3'"),
    # review of small48: `openai:$VLLM_URL` with the variable unset (before: served, every chat a 500)
    (["serve"], {"PLURALIGN_GENERATOR": "openai:"}, f"PLURALIGN_GENERATOR (setting generator): {NO_URL} got 'openai:': it has no scheme"),
    (["serve-embeddings", "--encoder", "openai:localhost:8001/v1"], {},
     f"--encoder openai:localhost:8001/v1: {NO_URL} got 'openai:localhost:8001/v1': its scheme is 'localhost'"),
    (["serve-embeddings", "--encoder", "minilm-onx"], {}, f"--encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"),
    # remote49: a refusal repeats no credential of a URL (before: `user:s3cret-pw@`, `tok3n-abc@` printed whole)
    (["serve"], {"PLURALIGN_GENERATOR": "openai:https://user:s3cret-pw@vllm.internal:80x/v1"},
     f"PLURALIGN_GENERATOR (setting generator): {NO_URL} got 'openai:https://user:***@vllm.internal:80x/v1': "
     "Port could not be cast to integer value as '80x'"),
    # review remote49: a password holding an unencoded `/` (base64) was printed whole, its start as the "port"
    (["serve"], {"PLURALIGN_GENERATOR": "openai:https://user:s3cr/et+pw==@vllm.internal/v1"},
     f"PLURALIGN_GENERATOR (setting generator): {NO_URL} got 'openai:https://user:***@vllm.internal/v1': {PORT_OR_PASSWORD}"),
    (["serve-embeddings", "--encoder", "openai:https://tok3n-abc@/v1?api_key=k3y-123"], {},
     f"--encoder openai:https://***@/v1?api_key=***: {NO_URL} got 'openai:https://***@/v1?api_key=***': it names no host"),
    (["eval", "--model", "bt", "--protocol", "persona", "--encoder", "minilm-onx"], {}, f"--encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"),
    (["train", "pal", "--protocol", "persona", "--out", "pal", "--encoder", "minilm-onx"], {}, f"--encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"),
    (["train", "em", "--protocol", "persona", "--out", "em", "--encoder", "minilm-onx"], {}, f"--encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"),
])
def test_a_bad_setting_is_refused_before_torch_and_lancedb_are_imported(tmp_path, argv, env, said):
    """Before: a bad PLURALIGN_* value was refused after lancedb's import (~1.5 s), a mistyped encoder or
    generator after torch's and the service's (3-5 s) and once the data folder was made. Now: the same
    one line and exit 2 at once, nothing imported that the check does not need, no data folder made."""
    port = ["--port", "0"] if argv[0].startswith("serve") else []
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", *argv, *port],
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
                                                 "PLURALIGN_DATA_DIR": str(tmp_path / "data"), **env},
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert (result.returncode, lines) == (2, [f"pluralign: error: {said}"]), result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data folder, cache or artifact made


def test_a_port_in_use_is_refused_before_anything_heavy_is_imported(tmp_path):
    """(So it was before: `check_listen` binds first; kept so.)"""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", "serve", "--port", str(port)],
                                cwd=REPO, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert (result.returncode, lines) == (2, [f"pluralign: error: --port {port}: 127.0.0.1:{port} is in use by another process; choose another port"])
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY)


def test_a_credential_setting_of_the_wrong_type_is_refused_without_its_value(tmp_path):
    """remote49: a PLURALIGN_CONFIG file giving `store_secret_access_key` a number was refused as "expected `str | null`,
    got `int` 4815162342", the secret printed on the terminal and in a start's log; now the value is withheld."""
    config = tmp_path / "pluralign.toml"
    config.write_text("store_secret_access_key = 4815162342\n")
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO), "PLURALIGN_CONFIG": str(config),
                                 "PLURALIGN_DATA_DIR": str(tmp_path / "data")}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "4815162342" not in result.stderr, result.stderr
    assert result.stderr.strip().endswith("(setting store_secret_access_key): expected `str | null`, got `int` (its value withheld: "
                                          "a credential)"), result.stderr
