"""Review of session small47b (library input checks): what its Store check on `encoder_id` refused on the
service's own path, and what its docs said that was not so."""

from __future__ import annotations

import pytest


def test_an_empty_encoder_setting_is_named_not_loaded_as_minilm_under_no_id(tmp_path):
    from service.runtime import Runtime
    from service.settings import Settings

    # pathlib reads "" as the working folder: PLURALIGN_ENCODER= (an emptied variable) passed the check as a folder,
    # loaded MiniLM under the encoder id "", and since small47b the store refused that id at every start
    # ("`encoder_id` must name the encoder ..."), naming no setting, after seconds of loading
    settings = Settings.load({"PLURALIGN_ENCODER": "", "PLURALIGN_DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(ValueError, match=r"^PLURALIGN_ENCODER \(setting encoder\): unknown encoder ''"):
        settings.check_models()  # `pluralign serve`, before anything loads
    with pytest.raises(ValueError, match=r"^PLURALIGN_ENCODER \(setting encoder\): unknown encoder ''"):
        Runtime.build(settings)  # create_app's path


def test_a_model_folder_named_by_a_path_without_a_name_is_named_by_the_folder_it_is(tmp_path, monkeypatch):
    from service.encoders import folder_encoder_id

    folder = tmp_path / "my-encoder"
    folder.mkdir()
    monkeypatch.chdir(folder)
    # PLURALIGN_ENCODER=. (the service started in the model's folder): its id was "" (Path(".").name), which the store
    # refuses since small47b, so the service no longer started
    assert folder_encoder_id(".") == folder_encoder_id("./") == "my-encoder"
    # every other folder keeps the id it had (a store made with it opens as before)
    assert folder_encoder_id(str(folder)) == folder_encoder_id("../my-encoder/") == "my-encoder"
    assert folder_encoder_id("..") == ".."
