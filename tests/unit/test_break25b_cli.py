"""Session 25b: a new user's pass over the `pluralign` command line with wrong arguments and bad
files. Every error is one line starting `pluralign: error: ` that names the option (and the file
and line where there is one); nothing is half written."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("argv, said", [
    (["eval", "--model", "bt", "--protocol", "persona", "--active-target", "group"], "--active-target group chooses how --shots active picks"),
    (["eval", "--model", "bt", "--protocol", "ukp", "--query-size", "30"], "--query-size 30: persona only"),
    (["eval", "--model", "bt", "--protocol", "persona", "--shots", "active"], "--shots active needs a user model with a posterior"),
])
def test_eval_usage_errors_have_the_clis_prefix(capsys, argv, said):
    """Before: `error: --query-size 30: persona only ...`, where every other command's error is
    `pluralign: error: ...` (the prefix scripts and tests look for)."""
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"pluralign: error: {said}"), line


@pytest.mark.parametrize("argv, said, command", [
    (["serve", "--port", "99999"], "argument --port: expected an integer < 65536, got 99999", "serve"),
    (["data", "stats", "--source", "jsonl"], "the following arguments are required: --path", "data stats"),
    (["train", "pal", "--epochs", "0"], "argument --epochs: expected an integer >= 1, got 0", "train pal"),
    (["nosuch"], "argument command: invalid choice: 'nosuch'", ""),
])
def test_usage_errors_have_the_same_prefix_and_name_the_command(capsys, argv, said, command):
    """Before: argparse's own `pluralign serve: error: argument --port: ...` beside the commands'
    `pluralign: error: ...`: two prefixes for one program."""
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pluralign: error: {said}"), last
    assert last.endswith(f"(see `pluralign {command}{' ' if command else ''}--help`)"), last
    assert err.startswith("usage: pluralign"), err
