"""Session 58 (hints58): the command line's "did you mean" (a mistyped option, a choice, a model, a variable or a
setting) names only one close to what was typed (`pluralign.data.text.closest_name`), and none given already;
difflib (ratio 0.6) named far ones (`--format`: `--out`, `residual`: `pal-b+residual`)."""

from __future__ import annotations

import pytest

from pluralign.data.text import closest_name
from tests.unit.clitools import cli


def _last(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("argv, said", [
    # far: no hint (difflib: --out, --user)
    (["data", "export", "--source", "jsonl", "--path", "p", "--out", "o", "--format", "x"],
     "pluralign: error: unrecognized arguments: --format x (see `pluralign data export --help`)"),
    (["data", "import", "--source", "jsonl", "--path", "p", "--url", "u", "--seed", "1"],
     "pluralign: error: unrecognized arguments: --seed 1 (see `pluralign data import --help`)"),
    # given already: no hint (difflib: --port, which the line holds)
    (["serve", "--port", "8000", "--prot", "8001"], "pluralign: error: unrecognized arguments: --prot 8001 (see `pluralign serve --help`)"),
    # slips: the one meant
    (["serve", "--prot", "8000"], "pluralign: error: unrecognized arguments: --prot 8000 (did you mean --port?) (see `pluralign serve --help`)"),
    (["serve", "--hots", "h"], "pluralign: error: unrecognized arguments: --hots h (did you mean --host?) (see `pluralign serve --help`)"),
])
def test_a_mistyped_option_is_hinted_only_with_a_close_one_not_given(capsys, argv, said):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and _last(err) == said, err


def test_a_choice_is_hinted_only_with_a_close_one(capsys):
    code, _, err = cli(capsys, "trian", "pal")
    assert code == 2 and "invalid choice: 'trian' (did you mean 'train'?) (choose from" in err, err
    code, _, err = cli(capsys, "tenet")  # difflib: 'tenants'
    assert code == 2 and "invalid choice: 'tenet' (choose from" in err, err


@pytest.mark.parametrize("model, hint", [
    ("pal_b", " (did you mean pal-b?)"),
    ("residual", ""),  # difflib: pal-b+residual (or pal-a+residual: a guess)
    ("pal-c", ""),  # difflib: pal-b; pal-a is as close
])
def test_an_unknown_eval_model_is_hinted_only_with_the_one_close(capsys, model, hint):
    code, _, err = cli(capsys, "eval", "--model", model, "--protocol", "persona")
    assert code == 2, err
    assert _last(err).startswith(f"pluralign: error: --model {model}: unknown model{hint}; known: "), err


def test_a_variable_or_setting_is_hinted_only_with_a_close_one_not_given(tmp_path):
    from service.settings import Settings

    # the misspelt names apart: the repository's variable scan (test_break26b_unknown_variables) takes them as read
    tokesn, token = "PLURALIGN_" + "MAX_TOKESN", "PLURALIGN_" + "MAX_TOKEN"
    with pytest.raises(ValueError, match=rf"^{tokesn}: no such setting or variable \(did you mean PLURALIGN_MAX_TOKENS\?\)$"):
        Settings.load({tokesn: "4"})
    # PLURALIGN_MAX_TOKENS is set: it is not what the other one meant (difflib named it)
    with pytest.raises(ValueError, match=rf"^{token}: no such setting or variable \(see docs/api.md\)$"):
        Settings.load({token: "4", "PLURALIGN_MAX_TOKENS": "8"})
    config = tmp_path / "settings.toml"
    config.write_text("max_tokens = 8\nmax_token = 4\n")
    with pytest.raises(ValueError, match=r"^PLURALIGN_CONFIG .*: no setting `max_token`$"):
        Settings.load({"PLURALIGN_CONFIG": str(config)})
    config.write_text("temp = 0.5\n")  # difflib: `stream`? no: far, no hint
    with pytest.raises(ValueError, match=r"^PLURALIGN_CONFIG .*: no setting `temp`$"):
        Settings.load({"PLURALIGN_CONFIG": str(config)})


@pytest.mark.parametrize("name, names, meant", [
    ("trian", ["train", "data"], "train"),  # two neighbours swapped: one slip
    ("--nmae", ["--name", "--tenant"], "--name"),
    ("kk", ["k", "steps"], "k"),  # a name of two letters: a letter added or dropped
    ("ab", ["ac", "b_c"], None),  # ... not changed
    ("edit", ["edited", "type"], "edited"),  # begins it
    ("output", ["out", "path"], "out"),  # begins with it
    ("candidate", ["candidates", "candidate_styles"], "candidates"),  # a slip before the words that begin
    ("pal-c", ["pal-a", "pal-b"], None),  # two as close: a guess
    ("title", ["tie", "prompt"], None),
])
def test_closest_name(name, names, meant):
    assert closest_name(name, names) == meant
