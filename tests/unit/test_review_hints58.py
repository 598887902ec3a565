"""Review of hints58: a "did you mean" never names one the input gives already, and dropping that one did not make
the next closest the hint. hints58 left the given ones out before matching, so a slip of a name given beside it was
told a sibling: `--k-maxs` beside `--k-max` "did you mean --k?", a misspelt PLURALIGN_STORE_CACHE_MB beside
PLURALIGN_STORE_CACHE_MB PLURALIGN_HISTORY_CACHE_MB, `pluralign_store_timeout_s` beside PLURALIGN_STORE_TIMEOUT_S
PLURALIGN_ENCODER_TIMEOUT_S. Now the closest of all is found, and when it is given there is no hint."""

from __future__ import annotations

import pytest

from pluralign.data.text import closest_name
from tests.service.test_break26b_unknown_variables import pluralign
from tests.unit.clitools import cli

# apart: the repository's variable scan (test_break26b_unknown_variables) takes a whole name as read
MBS, DIRS = "PLURALIGN_" + "STORE_CACHE_MBS", "PLURALIGN_" + "ADAPTERS_DIRS"


@pytest.mark.parametrize("argv, said", [
    (["train", "pal", "--protocol", "persona", "--out", "o", "--k-max", "8", "--k-maxs", "4"],
     "pluralign: error: unrecognized arguments: --k-maxs 4 (see `pluralign train pal --help`)"),  # was: --k
    (["eval", "--model", "pal-b", "--protocol", "persona", "--data-dir", "d", "--data-dirs", "x"],
     "pluralign: error: unrecognized arguments: --data-dirs x (see `pluralign eval --help`)"),  # was: --data
    (["train", "pal", "--protocol", "persona", "--out", "o", "--k-maxs", "4"],  # not given: the one meant
     "pluralign: error: unrecognized arguments: --k-maxs 4 (did you mean --k-max?) (see `pluralign train pal --help`)"),
])
def test_a_slip_of_an_option_given_is_no_hint_of_another(capsys, argv, said):
    code, _, err = cli(capsys, *argv)
    assert code == 2 and err.strip().splitlines()[-1] == said, err


@pytest.mark.parametrize("env, said", [
    ({"PLURALIGN_STORE_CACHE_MB": "64", MBS: "64"}, f"{MBS}: no such setting or variable (see docs/api.md)"),  # was: ..._HISTORY_CACHE_MB
    ({"PLURALIGN_STORE_TIMEOUT_S": "5", "pluralign_store_timeout_s": "5"},  # was: PLURALIGN_ENCODER_TIMEOUT_S
     "pluralign_store_timeout_s: no such variable; the settings' variables are upper case (see docs/api.md)"),
    ({"PLURALIGN_ADAPTERS_DIR": "a", DIRS: "b"}, f"{DIRS}: no such setting or variable (see docs/api.md)"),  # was: the one set
    ({MBS: "64"}, f"{MBS}: no such setting or variable (did you mean PLURALIGN_STORE_CACHE_MB?)"),
    ({"PLURALIGN_" + "QWERTY": "1"}, "PLURALIGN_" + "QWERTY: no such setting or variable (see docs/api.md)"),  # none close
])
def test_a_slip_of_a_variable_set_is_no_hint_of_another(tmp_path, env, said):
    result = pluralign(tmp_path, "keys", "list", **env)
    assert result.returncode == 2 and result.stderr.strip() == f"pluralign: error: {said}", result.stderr[-2000:]


def test_a_slip_of_a_setting_the_file_holds_is_no_hint_of_another(tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text("store_cache_mb = 64\nstore_cache_mbs = 64\n")
    result = pluralign(tmp_path, "keys", "list", PLURALIGN_CONFIG=str(config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"pluralign: error: PLURALIGN_CONFIG {config}: no setting `store_cache_mbs`", result.stderr  # was: `history_cache_mb`


def test_closest_name_gives_none_when_the_closest_is_given():
    names = ["frequency_penalty", "presence_penalty", "max_tokens", "max_completion_tokens"]
    assert closest_name("frequency_penaltys", names) == "frequency_penalty"
    assert closest_name("frequency_penaltys", names, given={"frequency_penalty"}) is None
    assert closest_name("frequency_penaltys", names, given={"presence_penalty"}) == "frequency_penalty"
