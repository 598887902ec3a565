"""Review of session trial53's CLI side: an empty data folder given on the command line.

trial53 refused an empty data folder (`PLURALIGN_DATA_DIR=`, `data_dir = ""`, `serve --data-dir ''`) naming where it came
from, and docs/api.md says `pluralign keys --data-dir` takes the setting too. But `keys` and `tenants` read an empty
`--data-dir` (`--data-dir "$DATA"`, DATA unset) as no option at all: `keys create` made ./data and a key there, and
`tenants remove` revoked the tenant's keys in PLURALIGN_DATA_DIR's folder, a folder the command line did not name."""

from __future__ import annotations

import json

import pytest

from service.auth import KeyRing
from tests.unit.clitools import cli

EMPTY = "--data-dir: `data_dir` is empty: name the data folder, or leave the setting out for ./data"


@pytest.mark.parametrize("argv", [("keys", "--data-dir", "", "create", "--tenant", "acme"),
                                  ("keys", "create", "--tenant", "acme", "--data-dir", ""),
                                  ("keys", "list", "--data-dir", ""),
                                  ("tenants", "users", "--tenant", "acme", "--data-dir", "")])
def test_an_empty_data_dir_option_is_refused_and_makes_nothing(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLURALIGN_DATA_DIR", raising=False)
    monkeypatch.delenv("PLURALIGN_CONFIG", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (2, ""), (code, out, err)
    assert err == f"pluralign: error: {EMPTY}\n", err
    assert list(tmp_path.iterdir()) == []  # before: ./data and its api_keys.json, a key printed


def test_an_empty_data_dir_option_removes_no_tenant_from_the_settings_folder(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("PLURALIGN_DATA_DIR", str(data))
    monkeypatch.delenv("PLURALIGN_CONFIG", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    code, out, err = cli(capsys, "keys", "create", "--tenant", "acme")
    assert code == 0, err
    key = json.loads(out)["key"]
    held = sorted(p.name for p in data.iterdir())
    code, out, err = cli(capsys, "tenants", "remove", "--tenant", "acme", "--data-dir", "")
    assert (code, out) == (2, ""), (code, out, err)  # before: 0, the removal begun in $PLURALIGN_DATA_DIR
    assert err == f"pluralign: error: {EMPTY}\n", err
    assert KeyRing(data / "api_keys.json").lookup(key) is not None
    assert sorted(p.name for p in data.iterdir()) == held  # no removal recorded


def test_a_data_dir_option_wins_over_an_empty_variable(tmp_path, capsys, monkeypatch):
    """`--data-dir` wins over PLURALIGN_DATA_DIR (docs/api.md), as `--port` over an empty PORT. trial53's refusal of an
    empty PLURALIGN_DATA_DIR ran in every command's check of the settings, without the command's --data-dir: with
    `PLURALIGN_DATA_DIR=` left in an environment (an image's `ENV`), `pluralign serve --data-dir /srv/x`, `keys` and
    `tenants` given their folder were refused, "PLURALIGN_DATA_DIR (setting data_dir): `data_dir` is empty"."""
    import socket

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLURALIGN_DATA_DIR", "")
    monkeypatch.delenv("PLURALIGN_CONFIG", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    data = tmp_path / "data-given"
    code, out, err = cli(capsys, "keys", "--data-dir", str(data), "create", "--tenant", "acme")
    assert code == 0, err
    assert KeyRing(data / "api_keys.json").lookup(json.loads(out)["key"]) is not None
    code, out, err = cli(capsys, "tenants", "users", "--tenant", "acme", "--data-dir", str(data))
    assert "PLURALIGN_DATA_DIR" not in err, err
    with socket.socket() as taken:  # serve gets as far as its port (taken), past the settings, before it loads anything
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli(capsys, "serve", "--data-dir", str(data / "x"), "--host", "127.0.0.1", "--port", str(port))
    assert code == 2 and "PLURALIGN_DATA_DIR" not in err and f"--port {port}" in err, err
    code, out, err = cli(capsys, "keys", "list")  # no --data-dir: the empty variable is refused, naming it
    assert code == 2 and err.startswith("pluralign: error: PLURALIGN_DATA_DIR (setting data_dir): `data_dir` is empty"), err


def test_tenants_takes_its_data_dir_before_the_subcommand_as_docs_and_keys_do(tmp_path, capsys, monkeypatch):
    """Review late53: docs/api.md says "`pluralign keys --data-dir` and `pluralign tenants --data-dir` take it too", and
    `keys` takes it before or after its subcommand; `tenants` took it only after, so `pluralign tenants --data-dir X
    status --tenant acme` was argparse's "argument action: invalid choice: 'X'" (exit 2). Either place now, the
    subcommand's winning where both are given, as `keys`'s."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLURALIGN_DATA_DIR", str(tmp_path / "from-variable"))
    monkeypatch.delenv("PLURALIGN_CONFIG", raising=False)
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    data = tmp_path / "given"
    data.mkdir()
    for argv in (("tenants", "--data-dir", str(data), "status", "--tenant", "acme"),
                 ("tenants", "status", "--tenant", "acme", "--data-dir", str(data)),
                 ("tenants", "--data-dir", str(tmp_path / "other"), "status", "--tenant", "acme", "--data-dir", str(data))):
        code, out, err = cli(capsys, *argv)
        assert (code, out) == (2, ""), (argv, code, out, err)
        assert err == f"pluralign: error: no removal of tenant acme was begun in {data}\n", (argv, err)
    code, out, err = cli(capsys, "tenants", "--data-dir", "", "status", "--tenant", "acme")
    assert (code, err) == (2, f"pluralign: error: {EMPTY}\n"), (code, err)
