"""Session 28: a `pluralign_*` variable in lower (or mixed) case is refused by every command, naming
the upper-case setting meant, as a misspelt upper-case one is (test_break26b_unknown_variables).

Before: `pluralign_data_dir=/srv/x pluralign keys create ...` silently issued the key into ./data
(the variable was ignored: only upper-case `PLURALIGN_*` names were looked at)."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.service.test_break26b_unknown_variables import pluralign


def test_keys_refuses_a_lower_case_data_dir_instead_of_writing_keys_into_dot_data(tmp_path):
    result = pluralign(tmp_path, "keys", "create", "--tenant", "acme", pluralign_data_dir=str(tmp_path / "srv"))
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert result.stderr.strip() == ("pluralign: error: pluralign_data_dir: no such variable; the settings' "
                                     "variables are upper case (did you mean PLURALIGN_DATA_DIR?)")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


def test_every_command_refuses_one(tmp_path):
    (tmp_path / "in.jsonl").write_text("")
    result = pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", "in.jsonl", Pluralign_Device="cpu")
    assert result.returncode == 2 and result.stdout == "", result.stderr[-2000:]
    assert result.stderr.strip() == ("pluralign: error: Pluralign_Device: no such variable; the settings' variables "
                                     "are upper case (did you mean PLURALIGN_DEVICE?)")


@pytest.mark.parametrize("name, meant", [
    ("pluralign_max_tokens", "PLURALIGN_MAX_TOKENS"),
    ("PLURALIGN_max_tokens", "PLURALIGN_MAX_TOKENS"),  # the prefix right, the rest not: was "see docs/api.md"
    ("pluralign_max_toknes", "PLURALIGN_MAX_TOKENS"),  # lower case and misspelt: the closest setting
    ("pluralign_key", "PLURALIGN_KEY"),  # a variable read outside the settings
])
def test_load_names_the_upper_case_setting(name, meant):
    with pytest.raises(ValueError, match=rf"^{name}: no such variable; the settings' variables are upper case \(did you mean {meant}\?\)$"):
        Settings.load({name: "64"})


def test_other_lower_case_variables_are_left_alone():
    assert Settings.load({"pluralign": "1", "my_pluralign_max_tokens": "1", "PLURALIGN_MAX_TOKENS": "64"}).max_tokens == 64
