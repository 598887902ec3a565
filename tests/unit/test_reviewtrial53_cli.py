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
