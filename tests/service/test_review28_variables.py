"""Review of session 28's variable checks: a misspelt or lower-case name of the adapters folder's
variable is pointed to its one name, PLURALIGN_ADAPTERS_DIR, not to the deprecated PLURALIGN_ADAPTER_DIR
(which then warns); a setting written in upper case in the PLURALIGN_CONFIG file names its lower-case key."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.service.test_break26b_unknown_variables import pluralign


@pytest.mark.parametrize("name, problem", [
    ("pluralign_adapter_dir", "no such variable; the settings' variables are upper case"),
    ("PLURALIGN_" + "ADAPTER_DIRS", "no such setting or variable"),  # (apart: the repository's variable scan takes it as read)
])
def test_a_wrong_name_of_the_adapters_folder_is_pointed_to_its_new_name(name, problem):
    with pytest.raises(ValueError, match=rf"^{name}: {problem} \(did you mean PLURALIGN_ADAPTERS_DIR\?\)$"):
        Settings.load({name: "/srv/adapters"})


def test_a_config_file_setting_in_upper_case_names_the_setting(tmp_path):
    config = tmp_path / "pluralign.toml"
    config.write_text('ADAPTERS_DIR = "/srv/adapters"\n')
    result = pluralign(tmp_path, "keys", "list", PLURALIGN_CONFIG=str(config))
    assert result.returncode == 2, (result.stdout, result.stderr[-2000:])
    assert result.stderr.strip() == (f"pluralign: error: PLURALIGN_CONFIG {config}: no setting `ADAPTERS_DIR` "
                                     "(did you mean `adapters_dir`? the file's settings are lower case)")


def test_an_empty_old_adapters_variable_is_as_unset(tmp_path):
    """`PLURALIGN_ADAPTER_DIR=` (emptied rather than removed, e.g. in a manifest) was `train adapter`'s
    default before the rename, and names no folder: not an error beside the new name."""
    settings = Settings.load({"PLURALIGN_ADAPTER_DIR": "", "PLURALIGN_ADAPTERS_DIR": str(tmp_path / "new")})  # was: "differ"
    assert settings.adapters_path == tmp_path / "new"
    assert Settings.load({"PLURALIGN_ADAPTER_DIR": "", "PLURALIGN_DATA_DIR": str(tmp_path)}).adapters_path == tmp_path / "adapters"
