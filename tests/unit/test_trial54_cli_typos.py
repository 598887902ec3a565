"""Session trial54, a new user's pass over the CLI's typos, run as a user runs it (the `pluralign` command line, in
process: tests/unit/clitools.cli). A misspelt *required* option was reported as the option missing, never as the word
typed (`keys create --tenat acme`: "the following arguments are required: --tenant"), though the same typo of an
optional one is "unrecognized arguments: ... (did you mean ...?)"; and a misspelt command or choice listed the choices
with no hint of the one meant."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("argv, said", [
    (["keys", "create", "--tenat", "acme"],
     "unrecognized arguments: --tenat acme (did you mean --tenant?); the following arguments are required: --tenant "
     "(see `pluralign keys create --help`)"),
    (["train", "pal", "--protocol", "persona", "--ot", "artifacts/x"],
     "unrecognized arguments: --ot artifacts/x (did you mean --out?); the following arguments are required: --out "
     "(see `pluralign train pal --help`)"),
    (["tenants", "users", "--tenant=acme", "--limt", "3", "--data-dir", "d"], None),  # all given: no required error
])
def test_a_misspelt_required_option_is_named_as_typed(tmp_path, capsys, monkeypatch, argv, said):
    """Before: `pluralign: error: the following arguments are required: --tenant (see ...)`, the word typed unsaid."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    last = err.strip().splitlines()[-1]
    if said is None:  # the words were the only problem: argparse's unrecognized-arguments error, as before
        assert last == ("pluralign: error: unrecognized arguments: --limt 3 (did you mean --limit?) "
                        "(see `pluralign tenants users --help`)"), err
    else:
        assert last == f"pluralign: error: {said}", err
    assert list(tmp_path.iterdir()) == []  # nothing made


@pytest.mark.parametrize("argv, said", [
    (["keys", "create", "--tenant", "acme", "--nmae", "x"], None),  # an optional option mistyped: unchanged
    (["keys", "create"], "the following arguments are required: --tenant (see `pluralign keys create --help`)"),
    (["keys", "create", "--ten", "acme", "--data-dir"], "argument --data-dir: expected one argument "
     "(see `pluralign keys create --help`)"),
])
def test_other_usage_errors_are_as_before(tmp_path, capsys, monkeypatch, argv, said):
    """A required option missing with no word mistyped, an abbreviation argparse takes (`--ten`), an option missing its
    value: argparse's own messages."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    last = err.strip().splitlines()[-1]
    assert code == 2 and out == "", err
    if said is None:
        assert last == ("pluralign: error: unrecognized arguments: --nmae x (did you mean --name?) "
                        "(see `pluralign keys create --help`)"), err
    else:
        assert last == f"pluralign: error: {said}", err


@pytest.mark.parametrize("argv, said", [
    (["trian", "pal"], "argument command: invalid choice: 'trian' (did you mean 'train'?) (choose from 'data', 'eval', "
     "'serve', 'serve-embeddings', 'audit', 'keys', 'tenants', 'promote', 'train') (see `pluralign --help`)"),
    (["keys", "craete"], "argument action: invalid choice: 'craete' (did you mean 'create'?) (choose from 'create', "
     "'list', 'revoke') (see `pluralign keys --help`)"),
    (["eval", "--model", "bt", "--protocol", "persna"], "argument --protocol: invalid choice: 'persna' (did you mean "
     "'persona'?) (choose from 'ukp', 'persona', 'file') (see `pluralign eval --help`)"),
    (["keys", "zzz"], "argument action: invalid choice: 'zzz' (choose from 'create', 'list', 'revoke') "
     "(see `pluralign keys --help`)"),  # nothing close: no hint
])
def test_a_misspelt_command_or_choice_names_the_closest(tmp_path, capsys, monkeypatch, argv, said):
    """Before: `argument command: invalid choice: 'trian' (choose from ...)`, no hint (argparse's own suggestions came
    in Python 3.14)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "", err
    assert err.strip().splitlines()[-1] == f"pluralign: error: {said}", err
