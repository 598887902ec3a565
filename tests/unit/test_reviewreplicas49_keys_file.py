"""`pluralign keys` with a shared key file (setting keys_file, session 49) named in the settings file (PLURALIGN_CONFIG).

Replicas read the key file their settings name, from the environment or from PLURALIGN_CONFIG alike. In session 49
`pluralign keys --data-dir DIR` read PLURALIGN_KEYS_FILE from the environment only: with keys_file in the TOML file, the
key `create` printed went into DIR/api_keys.json, which no replica reads (a 401 everywhere), and `revoke` of a key the
replicas do read found nothing (or a stale copy) there, leaving it working on every replica. And `list`/`revoke` with
a key file outside a data folder that does not exist on the admin's machine were refused, "no keys there"."""

from __future__ import annotations

import json

from service.auth import KeyRing
from tests.unit.clitools import cli


def keys(capsys, *argv: str) -> tuple[int, list[dict], str]:
    code, out, err = cli(capsys, "keys", *argv)
    return code, [json.loads(line) for line in out.splitlines()], err


def test_keys_created_listed_and_revoked_in_the_key_file_the_settings_file_names(tmp_path, capsys, monkeypatch):
    shared = tmp_path / "shared" / "api_keys.json"
    config = tmp_path / "pluralign.toml"
    config.write_text(f'keys_file = "{shared}"\n')
    monkeypatch.setenv("PLURALIGN_CONFIG", str(config))
    monkeypatch.delenv("PLURALIGN_KEYS_FILE", raising=False)
    data = tmp_path / "data"
    code, _, err = keys(capsys, "--data-dir", str(data), "create", "--tenant", "acme")
    assert code == 2 and err.startswith(f"pluralign: error: PLURALIGN_KEYS_FILE (setting keys_file) {shared}: no such folder"), err
    assert not shared.parent.exists()  # the volume not mounted: no key file of its own made there
    shared.parent.mkdir()

    code, created, err = keys(capsys, "--data-dir", str(data), "create", "--tenant", "acme", "--name", "web")
    assert code == 0, err
    key = created[0]["key"]
    assert KeyRing(shared).lookup(key) is not None  # before: in data/api_keys.json, which the replicas do not read
    assert not (data / "api_keys.json").exists()

    absent = tmp_path / "no-such-data"  # an admin's machine with the shared volume only
    code, listed, err = keys(capsys, "--data-dir", str(absent), "list")
    assert code == 0, err  # before: "no such folder ..., so no keys there"
    assert listed[-1] == {"keys": 1} and listed[0]["name"] == "web"
    code, _, err = keys(capsys, "--data-dir", str(absent), "revoke", "web")
    assert code == 0, err
    assert KeyRing(shared).lookup(key) is None
    assert not absent.exists()


def test_a_folder_named_as_the_key_file_is_refused_naming_the_setting(tmp_path, capsys, monkeypatch):
    """Before: "Is a directory", naming no setting (and `pluralign serve` the same, service.settings.check_keys_file)."""
    monkeypatch.setenv("PLURALIGN_KEYS_FILE", str(tmp_path))
    code, _, err = keys(capsys, "--data-dir", str(tmp_path / "data"), "list")
    assert code == 2 and err.startswith(f"pluralign: error: PLURALIGN_KEYS_FILE (setting keys_file) {tmp_path}: a folder, not a key file"), err


def test_a_tenants_removal_with_the_shared_key_file_not_there_is_refused_and_begins_nothing(tmp_path, capsys, monkeypatch):
    """`pluralign tenants remove` revokes the tenant's keys in the key file the settings name. In session 49, with
    PLURALIGN_KEYS_FILE in a folder not there (the shared volume not mounted where the command ran), it made the
    folder and an empty key file, began the removal and said so: the tenant's keys, in the replicas' file, kept working."""
    data, shared = tmp_path / "data", tmp_path / "shared" / "api_keys.json"
    data.mkdir()
    monkeypatch.setenv("PLURALIGN_KEYS_FILE", str(shared))
    code, _, err = cli(capsys, "tenants", "remove", "--tenant", "acme", "--data-dir", str(data))
    assert code == 2 and err.startswith(f"pluralign: error: PLURALIGN_KEYS_FILE (setting keys_file) {shared}: no such folder"), err
    assert not shared.parent.exists() and sorted(p.name for p in data.rglob("*")) == []
