"""Every `pluralign` command refuses a bad value of a setting's variable, as `serve` does.

Before: `PLURALIGN_STORE_RETRIES=abc pluralign keys --data-dir d list` (and `data stats`, `eval`, the
trainers, `audit`, ...) ran and exited 0: only `serve`, `keys` without --data-dir and `train adapter`
without --registry loaded the settings, so the operator learnt of the bad value only when the service
(or a job it started) refused it. Now: one `pluralign: error:` line naming the variable, exit 2, nothing
written, for every command."""

from __future__ import annotations

import os
import subprocess

import pytest

from service.settings import ENV_PREFIX
from training.cli import make_parser

# each command's arguments: enough to parse, and nothing heavy or lasting should the check be missing
# (missing inputs, a closed port); run in a temp folder holding only an empty in.jsonl
ARGV: dict[str, list[str]] = {
    "data stats": ["--source", "jsonl", "--path", "in.jsonl"],
    "data export": ["--source", "jsonl", "--path", "in.jsonl", "--out", "out.jsonl"],
    "data import": ["--source", "jsonl", "--path", "in.jsonl", "--url", "http://127.0.0.1:9", "--key", "pk-x"],
    "eval": ["--model", "bt", "--protocol", "persona", "--data-dir", "no-such-data"],
    "serve": ["--port", "0", "--data-dir", "data"],
    "serve-embeddings": ["--port", "0", "--encoder", "minilm-onx"],
    "audit": ["--group-by", "group", "--data", "in.jsonl"],
    "keys create": ["--tenant", "acme", "--data-dir", "data"],
    "keys list": ["--data-dir", "data"],
    "keys revoke": ["3f9a1c2b7d4e", "--data-dir", "data"],
    "tenants users": ["--tenant", "acme", "--data-dir", "data"],
    "tenants remove": ["--tenant", "acme", "--data-dir", "data"],
    "tenants status": ["--tenant", "acme", "--data-dir", "data"],
    "train pal": ["--protocol", "file", "--data", "in.jsonl", "--out", "pal"],
    "train em": ["--protocol", "file", "--data", "in.jsonl", "--out", "em"],
    "train maxmin": ["--pairs", "in.jsonl", "--out", "maxmin"],
    "train fspo": ["--population", "file", "--data", "in.jsonl", "--out", "fspo"],
    "train adapter": ["--user", "alice", "--data", "in.jsonl", "--registry", "adapters"],
    "promote": ["no-such-artifact", "--pal-dir", "pal"],  # replicas50's
}


def commands(parser, prefix: str = "") -> list[str]:
    """Every command line the parser takes (`data stats`, `train pal`, ...), down to its leaves."""
    sub = parser._subparsers
    if sub is None:
        return [prefix.strip()]
    (action,) = [a for a in sub._group_actions if a.choices]
    return [name for word, child in action.choices.items() for name in commands(child, f"{prefix} {word}")]


def test_every_command_is_checked_here():
    assert sorted(commands(make_parser())) == sorted(ARGV)


def pluralign(tmp_path, argv: list[str], capsys, monkeypatch, **env) -> subprocess.CompletedProcess:
    """`pluralign argv...` run by its main in this process (`tests/unit/clitools.py`; a process of its own each, 21 of
    them, cost ~6 CPU-s of the default suite's: speedC63), in `tmp_path` with the test run's PLURALIGN_* variables left
    out and `env` set, as a process of its own was run."""
    from tests.unit.clitools import cli

    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in {"HOME": str(tmp_path / "home"), **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    return subprocess.CompletedProcess(argv, code, out, err)


@pytest.mark.parametrize("command", sorted(ARGV))
def test_a_bad_setting_value_is_refused_by_every_command(tmp_path, command, capsys, monkeypatch):
    (tmp_path / "in.jsonl").write_text("")
    result = pluralign(tmp_path, [*command.split(), *ARGV[command]], capsys, monkeypatch, PLURALIGN_STORE_RETRIES="abc")
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (
        2, "", ["pluralign: error: PLURALIGN_STORE_RETRIES (setting store_retries): expected `int`, got `str` 'abc'"]), result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no data folder, key file, cache or artifact


def test_a_value_breaking_a_rule_and_a_bad_config_file_are_refused_too(tmp_path, capsys, monkeypatch):
    """A well-typed value a rule refuses, and a PLURALIGN_CONFIG file that is not TOML: the words `serve` uses."""
    result = pluralign(tmp_path, ["keys", "--data-dir", "data", "list"], capsys, monkeypatch, PLURALIGN_CANDIDATES="1")
    assert (result.returncode, result.stderr.splitlines()) == (
        2, ["pluralign: error: PLURALIGN_CANDIDATES (setting candidates): `candidates` must be at least 2 when `rerank` is on"])
    (tmp_path / "settings.toml").write_text("max_tokens = \n")
    result = pluralign(tmp_path, ["keys", "--data-dir", "data", "list"], capsys, monkeypatch, PLURALIGN_CONFIG="settings.toml")
    assert result.returncode == 2 and result.stderr.startswith("pluralign: error: PLURALIGN_CONFIG settings.toml: not TOML")
    assert not (tmp_path / "data").exists()
