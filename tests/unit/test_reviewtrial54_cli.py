"""Review of session trial54's CLI hints, run as a user runs the `pluralign` command line."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("argv", [
    ["a\" ' (choose from ", "pal"],  # a command
    ["eval", "--model", "bt", "--protocol", "x\" ' (choose from "],  # an option's choice
])
def test_an_invalid_choice_holding_both_quotes_is_a_usage_error(tmp_path, capsys, monkeypatch, argv):
    """Before: trial54's hint read the value back out of argparse's message with a regular expression and
    `ast.literal_eval`; a value holding both quotes and ` (choose from ` (repr'd as `'x" \\' (choose from '`) was cut
    at its escaped quote, and `pluralign` died with a SyntaxError traceback instead of its exit-2 usage error."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    assert last.startswith("pluralign: error: argument ") and f"invalid choice: {argv[-1 if argv[0] == 'eval' else 0]!r} (choose from " in last, err


@pytest.mark.parametrize("argv, hint", [
    (["trian", "pal"], "invalid choice: 'trian' (did you mean 'train'?) (choose from 'data', "),
    (["eval", "--model", "bt", "--protocol", "it's"], "invalid choice: \"it's\" (choose from 'ukp', "),  # nothing close
    (["train", "pal", "--variant", "aa", "--protocol", "persona", "--out", "o"], "invalid choice: 'aa' (did you mean 'a'?)"),
])
def test_an_invalid_choice_names_the_closest_one_as_before(tmp_path, capsys, monkeypatch, argv, hint):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and hint in err.strip().splitlines()[-1], err
    assert list(tmp_path.iterdir()) == []

