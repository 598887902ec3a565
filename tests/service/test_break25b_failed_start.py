"""Session 25b: a `pluralign serve` that fails to start leaves the data folder as it found it, and
says in one line which setting or file is wrong and how.

Before: a damaged PAL checkpoint (or anything else that failed once the tables were opened) left
`lancedb/` and `feedback-log/` (and a new data folder) behind; a malformed `api_keys.json` was
"not a list of API keys (Expected `array`, got `object`)" for a file that is not JSON at all (or empty); a
setting given a wrong value was "bad setting: Expected `int`, got `str` - at `$.max_tokens`",
naming neither the variable nor the file it came from."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


def serve(tmp_path, data_dir, timeout=90, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PLURALIGN_SHARED_DATA": str(tmp_path / "no-shared-data"), **env}
    environ.pop("PLURALIGN_DATA_DIR", None)
    try:
        return subprocess.run([sys.executable, "-m", "training.cli", "serve", "--data-dir", str(data_dir), "--port", "0"],
                              cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`pluralign serve` was still running after {timeout} s (it started?): {exc.stderr!r}")


def last_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if "resource_tracker" not in line and "warnings.warn" not in line]
    return lines[-1]


def snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else None


@pytest.fixture
def damaged_pal(tmp_path, tiny_pal_dir):
    """A PAL checkpoint whose meta.json is whole (so the start loads the models and opens the
    tables first) and whose weights are cut short."""
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    weights = pal / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return pal


@pytest.mark.slow  # 10-20 s each on two busy cores; the fast check of the undoing: test_left_as_found_*
@pytest.mark.parametrize("existing, process", [(False, True), (True, False)])
def test_a_start_that_fails_after_opening_the_tables_leaves_the_data_folder_as_it_was(tmp_path, tiny_generator_dir, damaged_pal,
                                                                                       existing, process):
    """MiniLM (ONNX) and a tiny generator load (in a child process of its own in the first case, as
    by default) before the checkpoint's weights are read. The first case starts in a new data
    folder, removed whole; the second in a folder holding a file of the user's."""
    data = tmp_path / "data"
    if existing:
        data.mkdir()
        (data / "notes.txt").write_text("mine")
    before = snapshot(data)
    result = serve(tmp_path, data, PLURALIGN_PAL_DIR=str(damaged_pal), PLURALIGN_GENERATOR=str(tiny_generator_dir),
                   PLURALIGN_GENERATION_PROCESS=str(process).lower())
    assert result.returncode == 2, result.stderr[-3000:]
    error = f"pluralign: error: {damaged_pal / 'model.safetensors'}: not a whole safetensors file"
    assert last_line(result).startswith(error), result.stderr[-3000:]
    # the error is the last line: the generation process is stopped, not left to the interpreter's exit (before:
    # "resource_tracker: There appear to be 1 leaked semaphore objects" and another warning below it)
    assert result.stderr.strip().splitlines()[-1].startswith(error), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "development API key" not in result.stderr
    assert snapshot(data) == before  # before: lancedb/ and feedback-log/ left in it (and a new folder left behind)


@pytest.mark.slow  # a real start, 10-20 s
def test_a_failed_start_of_a_replica_leaves_the_shared_store_alone(tmp_path, tiny_generator_dir, damaged_pal):
    """With replicas the store is shared: what appeared in it while this start ran may be another
    replica's (its first tables, when they start together), so a failed start removes only what it
    created in its own data folder. Before: the shared store's folder, new when the start began, was
    removed whole."""
    data, shared = tmp_path / "data", tmp_path / "shared-lancedb"
    result = serve(tmp_path, data, PLURALIGN_PAL_DIR=str(damaged_pal), PLURALIGN_GENERATOR=str(tiny_generator_dir),
                   PLURALIGN_GENERATION_PROCESS="false", PLURALIGN_REPLICAS="2", PLURALIGN_REPLICA_INDEX="0",
                   PLURALIGN_STORE_URI=str(shared))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "not a whole safetensors file" in last_line(result)
    assert snapshot(data) is None
    assert shared.is_dir() and any(p.name == "preferences.lance" for p in shared.iterdir())


def test_left_as_found_removes_only_what_the_failed_block_created(tmp_path):
    from pluralign.files import left_as_found

    data, store = tmp_path / "data", tmp_path / "elsewhere" / "lancedb"
    data.mkdir()
    (data / "api_keys.json").write_text("[]")
    (data / "pal").mkdir()
    with pytest.raises(RuntimeError), left_as_found(data, store):
        (data / "pal" / "meta.json").write_text("{}")  # inside an entry that was there: left
        (data / "lancedb" / "preferences.lance").mkdir(parents=True)
        (data / "feedback-log").mkdir()
        (data / "api_keys.json.lock").write_text("")
        (data / "link").symlink_to(tmp_path)  # a link is removed, never what it points at
        store.mkdir(parents=True)
        raise RuntimeError("a damaged checkpoint")
    assert snapshot(data) == ["api_keys.json", "pal", "pal/meta.json"] and not store.exists() and tmp_path.is_dir()
    with left_as_found(data):  # a start that succeeds keeps what it made
        (data / "lancedb").mkdir()
    assert (data / "lancedb").is_dir()
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt), left_as_found(fresh):
        (fresh / "lancedb").mkdir(parents=True)
        raise KeyboardInterrupt
    assert not fresh.exists()


def test_a_malformed_api_keys_file_stops_serve_naming_it_and_is_left_as_it_was(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "api_keys.json").write_bytes(b"{not json")
    before = snapshot(data)
    result = serve(tmp_path, data)
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result).startswith(f"pluralign: error: {data / 'api_keys.json'}: not a list of API keys (it is not JSON: "), result.stderr
    assert snapshot(data) == before and (data / "api_keys.json").read_bytes() == b"{not json"


@pytest.mark.parametrize("content,said", [
    (b"", "not a list of API keys (it is empty; a key file with no keys holds `[]`)"),
    (b'[{"sha256": "ab", "tenant": 7}]', "not a list of API keys (key 1, field `tenant`: expected `str`, got `int`)"),
    (b'[{"sha256": "ab", "tenant": "t"}, {"tenant": "u"}]', "not a list of API keys (key 2: object missing required field `sha256`)"),
    (b'{"keys": []}', "not a list of API keys (it holds an object, not a JSON list)"),
])
def test_a_malformed_api_keys_file_says_what_is_wrong(tmp_path, content, said):
    """Before: "(Input data was truncated)" for an empty file, "(Expected `array`, got `object`)" for
    `{not json` and for an object alike, msgspec's "- at `$[0].tenant`" for a key's field."""
    from service.auth import KeyFileError, read_key_file

    path = tmp_path / "api_keys.json"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert str(caught.value) == f"{path}: {said}"


def test_a_bad_setting_names_the_variable_or_the_file_it_came_from(tmp_path):
    data = tmp_path / "data"
    result = serve(tmp_path, data, PLURALIGN_MAX_TOKENS="abc")
    assert result.returncode == 2, result.stderr[-3000:]
    assert last_line(result) == "pluralign: error: PLURALIGN_MAX_TOKENS (setting max_tokens): expected `int`, got `str` 'abc'", result.stderr
    assert "Traceback" not in result.stderr and not data.exists()


def test_settings_errors_name_the_variable_or_the_config_file(tmp_path):
    from service.settings import Settings

    def error(**environ) -> str:
        with pytest.raises(ValueError) as caught:
            Settings.load(environ)
        return str(caught.value)

    assert error(PLURALIGN_CANDIDATES="0") == "PLURALIGN_CANDIDATES (setting candidates): `candidates` must be at least 1"
    config = tmp_path / "pluralign.toml"
    config.write_text("max_tokens = 'many'\n")
    assert error(PLURALIGN_CONFIG=str(config)) == f"PLURALIGN_CONFIG {config} (setting max_tokens): expected `int`, got `str` 'many'"
    config.write_text("max_tokens = \n")
    assert error(PLURALIGN_CONFIG=str(config)).startswith(f"PLURALIGN_CONFIG {config}: not TOML (")
    config.write_text("max_tokenz = 3\n")
    assert error(PLURALIGN_CONFIG=str(config)) == f"PLURALIGN_CONFIG {config}: no setting `max_tokenz` (did you mean `max_tokens`?)"
    assert error(PLURALIGN_CONFIG=str(tmp_path / "missing.toml")) == (
        f"PLURALIGN_CONFIG {tmp_path / 'missing.toml'}: cannot read it (No such file or directory)")
    config.write_bytes(b"max_tokens = 3\n# \xff\n")
    assert error(PLURALIGN_CONFIG=str(config)).startswith(f"PLURALIGN_CONFIG {config}: not UTF-8 text")
    config.write_text("max_tokens = 3\n")  # the variable wins over the file, and is the one named
    assert error(PLURALIGN_CONFIG=str(config), PLURALIGN_MAX_TOKENS="x").startswith("PLURALIGN_MAX_TOKENS (setting max_tokens)")
    with pytest.raises(ValueError, match=r"^--data-dir: expected `str`"):
        Settings.load({}, data_dir=3)


@pytest.mark.slow  # a `pluralign serve` process: ~5-10 s on two busy cores (`make test-crash`)
def test_a_failed_start_keeps_the_calibration_pool_it_moved(tmp_path):
    """Review late54: a start with PLURALIGN_CALIBRATION_POOLS_DIR naming a folder not yet made in the data folder moves
    the pool its own `calibration-pools/` kept into it; a start failing after that (here the embeddings server not
    reached) removed what it had made in the data folder, the new pools folder whole, and the pool with it: lost. The
    move is made before the undoing, as promoted models are put back (`restore_promoted`)."""
    from service.calibration.pools import pool_path, read_pool, write_pool

    data = tmp_path / "data"
    write_pool(data / "calibration-pools", "acme", [("Tea or coffee?", ["Tea.", "Coffee."])])
    result = serve(tmp_path, data, PLURALIGN_CALIBRATION_POOLS_DIR=str(data / "pools"),
                   PLURALIGN_ENCODER="openai:http://127.0.0.1:9/v1")
    assert result.returncode != 0, result.stderr
    assert "PLURALIGN_ENCODER" in last_line(result), result.stderr
    found = [read_pool(folder, "acme") for folder in (data / "calibration-pools", data / "pools") if pool_path(folder, "acme").exists()]
    assert [p.items() for p in found] == [[("Tea or coffee?", ["Tea.", "Coffee."])]], snapshot(data)


@pytest.mark.slow  # a `pluralign serve` process: ~5-10 s on two busy cores (`make test-crash`)
def test_a_damaged_pools_ledger_never_stops_a_start_with_a_traceback_and_the_pool_is_kept(tmp_path):
    """Review calib55: the shared pools folder's `ledger` damaged (a cut write on the volume), and a start with
    PLURALIGN_CALIBRATION_POOLS_DIR that has a pool of its own data folder to move there: the move reads the ledger for
    the pool's version. It stopped `pluralign serve` with a Python traceback (CalibrationPoolUnreadable) before any of
    the start's own checks; the pool is now left in the own folder (a WARNING naming the ledger, moved at a start after
    it is mended), and the start goes on (here to its own error, the embeddings server not reached)."""
    from service.calibration.pools import LEDGER, pool_path, read_pool, write_pool

    data, shared = tmp_path / "data", tmp_path / "shared-pools"
    write_pool(data / "calibration-pools", "acme", [("Tea or coffee?", ["Tea.", "Coffee."])])
    write_pool(shared, "globex", [("Rain or sun?", ["Rain.", "Sun."])])
    (shared / LEDGER).write_bytes(b'{"format": 1, "vers')
    result = serve(tmp_path, data, PLURALIGN_CALIBRATION_POOLS_DIR=str(shared), PLURALIGN_ENCODER="openai:http://127.0.0.1:9/v1")
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr and "PLURALIGN_ENCODER" in last_line(result), result.stderr
    assert f"{shared / LEDGER} is not a calibration pools ledger" in result.stderr, result.stderr  # the WARNING
    assert read_pool(data / "calibration-pools", "acme").items() == [("Tea or coffee?", ["Tea.", "Coffee."])]
    assert not pool_path(shared, "acme").exists() and (shared / LEDGER).read_bytes() == b'{"format": 1, "vers'
