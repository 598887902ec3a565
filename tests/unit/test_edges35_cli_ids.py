"""CLI options that take a tenant or a user id take only what the HTTP API takes: the service's rule
(`pluralign.data.record.tenant_problem`, `USER_ID_RULE`), said by argparse naming the option (exit 2),
before anything is read or written. Before: `pluralign train adapter --tenant a/b` (or `--user ../x`)
trained and saved the adapter under `<registry>/a/b/...`, outside its tenant's folder, and
`pluralign audit --tenant`, `pluralign data import --user` took any string."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pluralign.data.record import TENANT_RULE, USER_ID_RULE
from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl


def comparisons(tmp_path, user: str = "alice") -> str:
    return write_jsonl(tmp_path / "prefs.jsonl", [{"user_id": user, "prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(3)])


def test_train_adapter_refuses_a_tenant_with_a_slash_as_the_service_does(tmp_path):
    registry = tmp_path / "registry"
    run = subprocess.run([sys.executable, "-m", "training.cli", "train", "adapter", "--tenant", "a/b", "--user", "alice",
                          "--data", comparisons(tmp_path), "--registry", str(registry)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert f"argument --tenant: 'a/b': {TENANT_RULE}" in run.stderr, run.stderr
    assert not registry.exists()


@pytest.mark.parametrize(("argv", "option", "value", "rule"), [
    (["train", "adapter", "--user", "alice", "--data", "{data}", "--registry", "{out}"], "--tenant", "population", "'population' is reserved"),
    (["train", "adapter", "--tenant", "acme", "--data", "{data}", "--registry", "{out}"], "--user", "../x", USER_ID_RULE),
    (["train", "adapter", "--tenant", "acme", "--data", "{data}", "--registry", "{out}"], "--user", "alice\n", USER_ID_RULE),
    (["audit", "--store", "{tmp}", "--group-by", "segment", "--out", "{out}"], "--tenant", "a/b", TENANT_RULE),
    (["data", "export", "--source", "jsonl", "--path", "{data}", "--out", "{out}.jsonl"], "--user", "a/b", USER_ID_RULE),
    (["keys", "--data-dir", "{out}", "create"], "--tenant", "a/b", TENANT_RULE),
])
def test_every_option_naming_a_tenant_or_a_user_takes_the_service_s_rule(capsys, tmp_path, argv, option, value, rule):
    places = {"data": comparisons(tmp_path), "out": str(tmp_path / "out"), "tmp": str(tmp_path)}
    code, _, err = cli(capsys, *(a.format(**places) for a in argv), option, value)
    assert code == 2 and f"argument {option}: {value!r}: {rule}" in err, err
    assert list(tmp_path.glob("out*")) == []  # nothing written
