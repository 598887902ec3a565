"""Trial 49: the key file replicas share (`keys_file`, replicas49) as `pluralign keys` meets it beside the other
commands. Both cases failed before their fix (seen): `pluralign keys --data-dir D` read the key file in D, not the
`keys_file` a PLURALIGN_CONFIG file names (as `pluralign serve --data-dir D` and `pluralign tenants --data-dir D`
do), so a key it created was one no replica knew and a revoke found nothing; and a `keys_file` naming a folder was
`pluralign: error: Is a directory: ...`, naming no setting."""

from __future__ import annotations

import json

from tests.unit.clitools import cli


def _clean_env(monkeypatch):
    import os

    for name in [k for k in os.environ if k.upper().startswith("PLURALIGN_")]:
        monkeypatch.delenv(name)


def test_keys_with_data_dir_use_the_keys_file_of_the_config(tmp_path, monkeypatch, capsys):
    """Before: created into <data>/api_keys.json, so the shared file held none and `list` showed none of it."""
    _clean_env(monkeypatch)
    shared = tmp_path / "shared" / "keys.json"
    shared.parent.mkdir()  # the shared volume, mounted (a key file's folder that is not there is refused: reviewreplicas49)
    config = tmp_path / "pluralign.toml"
    config.write_text(f'keys_file = "{shared}"\n')
    monkeypatch.setenv("PLURALIGN_CONFIG", str(config))
    data = tmp_path / "data"
    code, out, err = cli(capsys, "keys", "--data-dir", str(data), "create", "--tenant", "acme", "--name", "web")
    assert code == 0, err
    assert shared.exists() and not (data / "api_keys.json").exists()
    assert [k["name"] for k in json.loads(shared.read_text())] == ["web"]
    code, out, err = cli(capsys, "keys", "--data-dir", str(data), "revoke", "web")
    assert code == 0, err
    assert [k["name"] for k in json.loads(out.splitlines()[-1])["revoked"]] == ["web"]
    assert json.loads(shared.read_text()) == []


def test_a_keys_file_that_is_a_folder_is_refused_naming_the_setting(tmp_path, monkeypatch, capsys):
    """Before: `pluralign: error: Is a directory: <path>`: which setting, and what to put there, unsaid."""
    _clean_env(monkeypatch)
    folder = tmp_path / "keys"
    folder.mkdir()
    monkeypatch.setenv("PLURALIGN_KEYS_FILE", str(folder))
    data = tmp_path / "data"
    data.mkdir()
    for args in (("list",), ("create", "--tenant", "acme")):
        code, out, err = cli(capsys, "keys", "--data-dir", str(data), *args)
        assert code == 2, (out, err)
        line = err.strip().splitlines()[-1]
        assert "PLURALIGN_KEYS_FILE (setting keys_file)" in line and str(folder) in line and "folder" in line, line
    assert list(folder.iterdir()) == []
