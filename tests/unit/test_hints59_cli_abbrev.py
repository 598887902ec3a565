"""Session 59 (hints59): an option given by an abbreviation argparse takes (`--po` for `--port`: `allow_abbrev` is on,
so `pluralign serve --po 8000` serves on 8000) counts as given where the CLI asks which options the line holds: the
"did you mean" of a mistyped option names none given already (`pluralign.data.text.closest_name`'s `given`).
Before, only options spelt out counted: `serve --po 8000 --prot 8001` said "(did you mean --port?)", the option the line
held as `--po`."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


def _last(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, said", [
    # the option meant is given, abbreviated (and with `=`): no hint
    (["serve", "--po", "8000", "--prot", "8001"], "pluralign: error: unrecognized arguments: --prot 8001 (see `pluralign serve --help`)"),
    (["serve", "--po=8000", "--prot", "8001"], "pluralign: error: unrecognized arguments: --prot 8001 (see `pluralign serve --help`)"),
    (["train", "pal", "--protocol", "persona", "--out", "o", "--lr-s", "0.01", "--lr-shraed", "0.1"],
     "pluralign: error: unrecognized arguments: --lr-shraed 0.1 (see `pluralign train pal --help`)"),
    # another option given abbreviated: the one meant is still named
    (["serve", "--po", "8000", "--hots", "h"], "pluralign: error: unrecognized arguments: --hots h (did you mean --host?) (see `pluralign serve --help`)"),
    # `--` ends the options: a word after it is no option given
    (["train", "pal", "--protocol", "persona", "--out", "o", "--lr-shraed", "0.1", "--", "--lr-s"],
     "pluralign: error: unrecognized arguments: --lr-shraed 0.1 -- --lr-s (did you mean --lr-shared?) (see `pluralign train pal --help`)"),
])
def test_an_option_given_by_its_abbreviation_is_not_hinted(capsys, argv, said):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and _last(err) == said, err
