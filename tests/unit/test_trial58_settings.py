"""Session trial58: a boolean setting given a word a variable commonly holds (`PLURALIGN_RERANK=off`, `yes`) was refused
as "expected `bool`, got `str` 'off'": every variable is text, and the message named no spelling the setting takes.
Now it names them (`true` or `false`, `1` or `0`, in any case); the start is refused as before, nothing created."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("value", ["off", "yes"])
def test_a_boolean_setting_s_refusal_names_the_words_it_takes(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("PLURALIGN_RERANK", value)
    code, out, err = cli(capsys, "serve", "--data-dir", str(tmp_path / "data"), "--port", "0")
    assert code == 2 and out == "", out
    assert err == (f"pluralign: error: PLURALIGN_RERANK (setting rerank): expected `bool`: `true` or `false` (or `1`, `0`; "
                   f"in any case), got '{value}'\n"), err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("value", ["false", "TRUE", "0"])
def test_the_words_it_names_are_taken(value):
    from service.settings import Settings

    assert Settings.load({"PLURALIGN_RERANK": value}).rerank is (value.lower() in ("true", "1"))
