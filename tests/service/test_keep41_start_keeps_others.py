"""Session 41 (keep41): a `pluralign serve` whose start fails or is stopped removes only what the start
itself created in its data folder, not what another process added meanwhile.

Before: `start` undid every new top-level entry of the data folder (`left_as_found`), so a key issued by
`pluralign keys create` while a first `serve` loaded its models (seconds to minutes) was deleted when that
start failed: the key, printed once, stopped working. And a SIGTERM or Ctrl-C inside `hold_data_folder` or
`check_writable`, early in the start, left an empty data folder or a `.pluralign-write-check.*` probe file."""

from __future__ import annotations

import json
import os
import threading

import pytest

from training.cli import main


def test_a_key_issued_while_a_start_loads_survives_that_start_failing(tmp_path, monkeypatch, capsys):
    import service.app
    from service.auth import KeyRing
    from service.settings import Settings
    from training.commands.serve import start

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("PLURALIGN_SHARED_DATA", str(tmp_path / "no-shared-data"))
    settings = Settings.load(data_dir=str(data))

    def create_app_while_an_operator_issues_a_key(settings):  # the models load; meanwhile another command writes
        operator = threading.Thread(target=main, args=(["keys", "--data-dir", str(data), "create", "--tenant", "acme"],))
        operator.start()
        operator.join()
        raise RuntimeError("a damaged checkpoint")  # the start fails after the key was issued and printed

    monkeypatch.setattr(service.app, "create_app", create_app_while_an_operator_issues_a_key)
    with pytest.raises(RuntimeError, match="damaged checkpoint"):
        start(settings, [settings.lancedb_uri])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    keys = KeyRing(data / "api_keys.json")
    assert keys.lookup(printed["key"]) is not None, sorted(os.listdir(data))


def test_a_stop_inside_check_writable_leaves_no_probe_file(tmp_path, monkeypatch):
    import training.common
    from training.common import check_writable

    def stopped(fd):
        raise KeyboardInterrupt  # Ctrl-C between the probe's creation and its removal

    monkeypatch.setattr(training.common.os, "close", stopped)
    with pytest.raises(KeyboardInterrupt):
        check_writable("--data-dir", str(tmp_path))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_stop_inside_hold_data_folder_leaves_no_folder_it_made(tmp_path, monkeypatch):
    import fcntl

    from training.commands.serve import hold_data_folder

    def stopped(fd, operation):
        raise KeyboardInterrupt  # SIGTERM or Ctrl-C once the folder is made, before it is locked

    monkeypatch.setattr(fcntl, "flock", stopped)
    with pytest.raises(KeyboardInterrupt):
        hold_data_folder(tmp_path / "data", "--data-dir")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_left_as_found_keeps_what_other_processes_write_by_design(tmp_path):
    from pluralign.files import left_as_found

    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    keys, adapters, registry = data / "api_keys.json", data / "adapters", store / "adapters"
    with pytest.raises(RuntimeError), left_as_found(data, store, keep=(keys, adapters, registry)):
        (data / "lancedb").mkdir()
        keys.write_text("[]")  # `pluralign keys create` meanwhile
        adapters.mkdir()  # the block's own mkdir, left empty
        (registry / "acme").mkdir(parents=True)  # another process's adapter, in a folder the block made
        raise RuntimeError("a damaged checkpoint")
    assert sorted(os.listdir(data)) == ["api_keys.json"] and os.listdir(store) == ["adapters"]
