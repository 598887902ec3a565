"""Session 26b: a mistyped `PLURALIGN_*` variable is refused at start, naming it and the closest
setting, instead of being ignored (the service then ran on the default and the operator never knew).

Before: `PLURALIGN_MAX_TOKNES=64 pluralign serve` started on max_tokens 128, and
`PLURALIGN_DATA_DRI=/srv/x pluralign keys create ...` issued the key into ./data."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from service import settings as settings_module
from service.settings import ENV_PREFIX, Settings
from tests.conftest import REPO


def pluralign(tmp_path, *argv, timeout=30, **env) -> subprocess.CompletedProcess:
    """`pluralign argv...` as a real process in `tmp_path`, with the test run's PLURALIGN_* variables
    left out (a developer's own would change what it does) and `env` added."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    environ.update(PYTHONPATH=str(REPO), PLURALIGN_SHARED_DATA=str(tmp_path / "no-shared-data"), **env)
    try:
        return subprocess.run([sys.executable, "-m", "training.cli", *argv], cwd=tmp_path, env=environ,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`pluralign {' '.join(argv)}` was still running after {timeout} s (it started, the "
                    f"mistyped variable ignored): {(exc.stderr or b'')[-2000:]!r}")


def here(tmp_path, capsys, monkeypatch, *argv, **env) -> subprocess.CompletedProcess:
    """`pluralign argv...` run by its main in this process (`tests/unit/clitools.py`), from `tmp_path` with the test
    run's PLURALIGN_* variables left out and `env` set, as `pluralign` above runs it: for commands that stop at once
    (speedC63: a process of its own each cost ~0.4 CPU-s); `serve`, which would serve on were its check missing,
    keeps a process of its own (`pluralign`, with its timeout)."""
    from tests.unit.clitools import cli

    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in {"PLURALIGN_SHARED_DATA": str(tmp_path / "no-shared-data"), **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    return subprocess.CompletedProcess(argv, code, out, err)


def test_serve_refuses_a_mistyped_variable_naming_the_setting_meant(tmp_path):
    data = tmp_path / "data"
    result = pluralign(tmp_path, "serve", "--port", "0", "--data-dir", str(data), PLURALIGN_MAX_TOKNES="64")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line == ("pluralign: error: PLURALIGN_MAX_TOKNES: no such setting or variable "
                    "(did you mean PLURALIGN_MAX_TOKENS?)"), line
    assert not data.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_keys_refuses_a_mistyped_data_dir_instead_of_writing_keys_into_dot_data(tmp_path, capsys, monkeypatch):
    """The key would have gone into ./data while the service reads /srv/...: a key that never works."""
    result = here(tmp_path, capsys, monkeypatch, "keys", "create", "--tenant", "acme", PLURALIGN_DATA_DRI=str(tmp_path / "srv"))
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert result.stderr.strip() == ("pluralign: error: PLURALIGN_DATA_DRI: no such setting or variable "
                                     "(did you mean PLURALIGN_DATA_DIR?)")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []
    # with --data-dir too: the environment the service will run in is wrong, whatever this command's folder
    result = here(tmp_path, capsys, monkeypatch, "keys", "--data-dir", str(tmp_path / "d"), "list", PLURALIGN_GENRATOR="smollm2")
    assert result.returncode == 2 and "PLURALIGN_GENRATOR: no such setting or variable (did you mean PLURALIGN_GENERATOR?)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_command_refuses_a_mistyped_variable(tmp_path, capsys, monkeypatch):
    """`data stats` reads no setting, but PLURALIGN_DEVCE meant PLURALIGN_DEVICE (read by eval and train)."""
    (tmp_path / "in.jsonl").write_text("")
    result = here(tmp_path, capsys, monkeypatch, "data", "stats", "--source", "jsonl", "--path", "in.jsonl", PLURALIGN_DEVCE="cpu")
    assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
    assert result.stderr.strip() == "pluralign: error: PLURALIGN_DEVCE: no such setting or variable (did you mean PLURALIGN_DEVICE?)"


def test_the_variables_read_outside_settings_are_accepted(tmp_path, capsys, monkeypatch):
    """Variables read outside Settings (the key for `data import`, the caches, a job's id) are not
    refused: a worker started by the service inherits its environment. (PLURALIGN_CONFIG is left
    out: "x" is no file; PLURALIGN_DEVICE is "cpu": "x" is no device, refused since review29a.) In this process
    (`here`; a process of its own cost ~3 CPU-s, speedC63)."""
    env = {name: "x" for name in settings_module.OTHER_VARIABLES}
    env.pop("PLURALIGN_CONFIG")
    env["PLURALIGN_DEVICE"] = "cpu"
    (tmp_path / "d").mkdir()  # a data folder: `keys list` of one that does not exist is an error (newuser31)
    with pytest.warns(FutureWarning, match="PLURALIGN_ADAPTER_DIR is deprecated"):  # read all the same
        result = here(tmp_path, capsys, monkeypatch, "keys", "--data-dir", str(tmp_path / "d"), "list", **env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_load_refuses_unknown_names_and_says_nothing_close_when_there_is_none():
    with pytest.raises(ValueError, match=r"^PLURALIGN_CANDIDATE: no such setting or variable \(did you mean PLURALIGN_CANDIDATES\?\)$"):
        Settings.load({"PLURALIGN_CANDIDATE": "4"})
    with pytest.raises(ValueError, match=r"^PLURALIGN_ZZZ: no such setting or variable \(see docs/api.md\)$"):
        Settings.load({"PLURALIGN_ZZZ": "1", "PLURALIGN_MAX_TOKENS": "64"})
    assert Settings.load({"PLURALIGN_MAX_TOKENS": "64", "PLURALIGN_KEY": "k", "OTHER_MAX_TOKNES": "1"}).max_tokens == 64


VARIABLE = re.compile(r"\bPLURALIGN_[A-Z0-9_]+")
SKIPPED = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}


def test_every_variable_named_in_the_repository_is_a_setting_or_declared():
    """The next variable someone reads (or documents) must be declared in OTHER_VARIABLES (or be a
    setting), or a start with it set would be refused. `PLURALIGN_STORE_*` in prose is a prefix."""
    known = {ENV_PREFIX + name.upper() for name in Settings.__struct_fields__} | set(settings_module.OTHER_VARIABLES)
    found: dict[str, str] = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIPPED and not d.endswith(".egg-info")]
        for name in files:
            path = os.path.join(folder, name)
            if path == __file__:  # this file's misspellings are meant
                continue
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            for match in VARIABLE.finditer(text):
                found.setdefault(match.group(), os.path.relpath(path, REPO))
    assert len(found) > 30  # the walk saw the repository
    unknown = {name: where for name, where in found.items()
               if name not in known and not (name.endswith("_") and any(k.startswith(name) for k in known))}
    assert not unknown, f"PLURALIGN_* variables neither a setting nor in service.settings.OTHER_VARIABLES: {unknown}"


def test_a_misspelt_name_in_the_toml_file_names_the_setting_meant(tmp_path):
    """The file refused an unknown name already ("no setting `max_toknes`") but left the operator to
    find the right one among 70; the variables now say which was meant, and so does the file."""
    config = tmp_path / "pluralign.toml"
    config.write_text("max_toknes = 64\n")
    result = pluralign(tmp_path, "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), PLURALIGN_CONFIG=str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"pluralign: error: PLURALIGN_CONFIG {config}: no setting `max_toknes` (did you mean `max_tokens`?)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pluralign.toml"]


def test_kubernetes_service_links_are_not_taken_for_mistyped_settings(tmp_path, capsys, monkeypatch):
    """Kubernetes gives every pod variables naming each Service of its namespace (enableServiceLinks,
    on by default): the shipped manifest's Service `pluralign-api` makes PLURALIGN_API_SERVICE_HOST,
    PLURALIGN_API_PORT_80_TCP and the like. Before, `pluralign serve` refused them ("no such setting or
    variable") and exited 2: every pod started after the Service existed never came up. A mistyped
    setting beside them is still refused."""
    links = {"PLURALIGN_API_SERVICE_HOST": "10.96.0.12", "PLURALIGN_API_SERVICE_PORT": "80",
             "PLURALIGN_API_PORT": "tcp://10.96.0.12:80", "PLURALIGN_API_PORT_80_TCP": "tcp://10.96.0.12:80",
             "PLURALIGN_API_PORT_80_TCP_PROTO": "tcp", "PLURALIGN_API_PORT_80_TCP_PORT": "80",
             "PLURALIGN_API_PORT_80_TCP_ADDR": "10.96.0.12", "PLURALIGN_SERVICE_HOST": "10.96.0.13",
             "PLURALIGN_SERVICE_PORT_HTTP": "8000", "PLURALIGN_PORT": "tcp://10.96.0.13:8000"}
    (tmp_path / "d").mkdir()  # a data folder: `keys list` of one that does not exist is an error (newuser31)
    result = here(tmp_path, capsys, monkeypatch, "keys", "--data-dir", str(tmp_path / "d"), "list", **links)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Settings.load({**links, "PLURALIGN_MAX_TOKENS": "64"}).max_tokens == 64
    with pytest.raises(ValueError, match=r"^PLURALIGN_MAX_TOKNES: no such setting or variable"):
        Settings.load({**links, "PLURALIGN_MAX_TOKNES": "64"})
