"""Session 33: `pluralign keys create|revoke` beside a keys file that is a symbolic link (a Kubernetes
Secret mount: `api_keys.json -> ..data/api_keys.json`) or a file of another mode than 0600. Both failed
before their fix: the link was replaced by a regular file, the mode became 0600."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.service.tiny import ROOT


def keys(data, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    return subprocess.run([sys.executable, "-m", "training.cli", "keys", "--data-dir", str(data), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_keys_refuse_to_replace_a_linked_keys_file(tmp_path):
    """Before: `keys create` renamed its new file over the link (exit 0): the Secret's next update no
    longer reached the service, and the file under ..data/ kept the old keys. Now exit 2, one line
    naming the path and why, the link and its target as they were; `revoke` alike."""
    made = tmp_path / "made"  # the Secret's content: one key named "first"
    assert keys(made, "create", "--tenant", "acme", "--name", "first").returncode == 0
    data = tmp_path / "data"
    (data / "..data").mkdir(parents=True)
    target = data / "..data" / "api_keys.json"
    target.write_bytes((made / "api_keys.json").read_bytes())
    link = data / "api_keys.json"
    link.symlink_to("..data/api_keys.json")
    for args in (("create", "--tenant", "acme"), ("revoke", "first")):
        done = keys(data, *args)
        assert done.returncode == 2, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert str(link) in lines[0] and "symbolic link" in lines[0], lines[0]
        assert link.is_symlink() and os.readlink(link) == "..data/api_keys.json"
        assert target.read_bytes() == (made / "api_keys.json").read_bytes()
    assert [k["name"] for k in map(json.loads, keys(data, "list").stdout.splitlines()[:-1])] == ["first"]  # read through the link


@pytest.mark.slow  # ~6 s: two real CLI runs
def test_keys_keep_the_mode_of_the_keys_file(tmp_path):
    """An operator made the keys file 0640 for the service's group. Before: `keys create` left it 0600
    (mkstemp's mode), so the service, running as another user of the group, could no longer read it."""
    data = tmp_path / "data"
    data.mkdir()
    assert keys(data, "create", "--tenant", "acme", "--name", "first").returncode == 0
    (data / "api_keys.json").chmod(0o640)
    done = keys(data, "create", "--tenant", "acme", "--name", "second")
    assert done.returncode == 0, done.stderr
    assert (data / "api_keys.json").stat().st_mode & 0o777 == 0o640
    assert keys(data, "revoke", "first").returncode == 0
    assert (data / "api_keys.json").stat().st_mode & 0o777 == 0o640
    assert [k["name"] for k in map(json.loads, keys(data, "list").stdout.splitlines()[:-1])] == ["second"]
