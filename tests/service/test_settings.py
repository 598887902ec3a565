"""Settings: defaults < TOML file < PLURALIGN_* variables < explicit overrides; bad values refused."""

from __future__ import annotations

import pytest

from service.settings import Settings


def test_settings_layers(tmp_path):
    toml = tmp_path / "pluralign.toml"
    toml.write_text('data_dir = "/srv/pluralign"\ncandidates = 6\nshots = 2\n')
    env = {"PLURALIGN_CONFIG": str(toml), "PLURALIGN_SHOTS": "3", "PLURALIGN_RERANK": "true"}
    settings = Settings.load(env, candidates=5)
    assert (settings.data_dir, settings.candidates, settings.shots, settings.rerank) == ("/srv/pluralign", 5, 3, True)
    assert settings.lancedb_uri == "/srv/pluralign/lancedb" and str(settings.pal_path) == "/srv/pluralign/pal"
    assert Settings.load({}).data_dir == "./data"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="candidates"):
        Settings.load({"PLURALIGN_CANDIDATES": "many"})
    with pytest.raises(ValueError, match="at least 2"):
        Settings.load({"PLURALIGN_CANDIDATES": "1"})
    with pytest.raises(ValueError, match="unknown field"):
        Settings.load({}, colour="blue")
