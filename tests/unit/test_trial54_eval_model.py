"""Session trial54: `pluralign eval --model pal_a` (a typo of pal-a) said `unknown model 'pal_a'; known: ...`, naming
neither the option nor the model meant, where every other usage error of eval names its option."""

from __future__ import annotations

from tests.unit.clitools import cli


def test_an_unknown_model_names_the_option_and_the_closest_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "eval", "--model", "pal_a", "--protocol", "persona", "--groups", "4")
    assert code == 2 and out == "", err
    assert err.strip().splitlines()[-1] == (
        "pluralign: error: --model pal_a: unknown model (did you mean pal-a?); known: bt, em, pal-a, pal-a+residual, "
        "pal-b, pal-b+residual, per-user-bt"), err
    assert list(tmp_path.iterdir()) == []
