"""Session 21a: a new user's `pluralign serve` / `serve-embeddings` options. A port, host or log
level the server cannot use is a one-line usage error (exit 2) naming the option, at once: not after
a minute of loading models (and, at a first start, training PAL and issuing a key into a new folder),
nor a server that never listens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.unit.clitools import cli


def serve(tmp_path, *argv: str, command: str = "serve") -> subprocess.CompletedProcess:
    env = dict(os.environ, PLURALIGN_DATA_DIR=str(tmp_path / "data"), PLURALIGN_SHARED_DATA=str(tmp_path / "no-shared-data"))
    try:
        return subprocess.run([sys.executable, "-m", "training.cli", command, *argv], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`pluralign {command} {' '.join(argv)}` was still running after 60 s: {exc.stderr!r}")


@pytest.mark.parametrize("command", ["serve", "serve-embeddings"])
@pytest.mark.parametrize("port", ["99999", "-1", "80.5"])
def test_a_port_that_is_no_port_is_a_usage_error_naming_it(tmp_path, command, port):
    """Before: `serve --port 99999` loaded every model, issued a development key into a new data
    folder and printed "Uvicorn running on http://127.0.0.1:99999" while listening nowhere."""
    result = serve(tmp_path, "--port", port, command=command)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "--port" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "data").exists()  # nothing written


@pytest.mark.parametrize("command", ["serve", "serve-embeddings"])
def test_a_port_in_use_is_an_error_naming_it_before_anything_loads(tmp_path, command):
    """Before: the models loaded (about 20 s; a minute more training PAL at a first start), then
    uvicorn's "[Errno 98] ... address already in use" and exit 3, the data folder and key left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = serve(tmp_path, "--host", "127.0.0.1", "--port", port, command=command)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pluralign: error: --port") and port in last and "in use" in last
    assert not (tmp_path / "data").exists()


def test_a_host_or_log_level_the_server_cannot_use_is_named(tmp_path):
    result = serve(tmp_path, "--host", "no-such-host.invalid", "--port", "0")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("pluralign: error: --host no-such-host.invalid")
    result = serve(tmp_path, "--log-level", "loud")
    assert result.returncode == 2 and "--log-level" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_keys_take_data_dir_after_the_subcommand_too(tmp_path, capsys):
    """Before: `pluralign keys create --tenant acme --data-dir D` (where every other command takes
    --data-dir) exited 2 with "unrecognized arguments: --data-dir D"; only `keys --data-dir D create` worked."""
    folder = str(tmp_path / "data")
    code, out, err = cli(capsys, "keys", "create", "--tenant", "acme", "--name", "web", "--data-dir", folder)
    assert code == 0, err
    created = json.loads(out.strip().splitlines()[-1])
    code, out, err = cli(capsys, "keys", "list", "--data-dir", folder)
    assert code == 0 and json.loads(out.strip().splitlines()[-1]) == {"keys": 1}
    code, out, _ = cli(capsys, "keys", "--data-dir", folder, "revoke", created["id"])  # the old position still works
    assert code == 0 and json.loads(out)["revoked"][0]["id"] == created["id"]


@pytest.mark.parametrize("command", ["serve", "serve-embeddings"])
def test_an_address_that_cannot_be_used_is_named_before_the_model_stack_is_imported(command):
    """Before: the service's imports (torch, transformers, litestar: 13 s on two cores) ran before the
    address was checked, so `--host` with a typo waited that long for its one-line error."""
    probe = ("import sys\nfrom training.cli import main\n"
             f"code = main([{command!r}, '--host', 'no-such-host.invalid', '--port', '0'])\n"
             "print(code, sorted(m for m in ('torch', 'transformers', 'litestar', 'uvicorn') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "[]"], (result.stdout, result.stderr)
    assert result.stderr.strip().startswith("pluralign: error: --host no-such-host.invalid")
