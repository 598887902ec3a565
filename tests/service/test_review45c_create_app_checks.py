"""`create_app(settings)` (the app factory a caller builds the service with, `pluralign serve` aside) reads the
population model's description and the FSPO adapter before any model loads (reviewsuite45c). suite45c made
`pluralign serve` read them itself, before the app's imports, so the serve tests that had guarded `create_app`'s
own check (test_break21b, test_left22a) pass without it: deleted from `create_app`, no test failed, and such a
caller loaded the encoder and the generator, opened the tables and bootstrapped a population model first (7.7 s
here), then failed on another error, or on none, for the FSPO adapter."""

from __future__ import annotations

import logging

import msgspec
import pytest

from pluralign.policy.adapters import META_FILE, AdapterMeta


def damaged_pal(folder):
    folder.mkdir()
    (folder / "meta.json").write_text("[1, 2]")
    return {"pal_dir": str(folder)}, f"{folder / 'meta.json'}: not a PAL checkpoint description"


def fspo_without_weights(folder):
    folder.mkdir()
    (folder / META_FILE).write_bytes(msgspec.json.encode(AdapterMeta(kind="fspo", base_model="tiny", shots=0, data_version="t")))
    return {"fspo_adapter": str(folder)}, f"PLURALIGN_FSPO_ADAPTER (setting fspo_adapter): adapter {folder} lacks adapter_config.json"


@pytest.mark.parametrize("damage", [damaged_pal, fspo_without_weights])
def test_create_app_refuses_a_damaged_description_or_adapter_before_any_model_loads(tmp_path, tiny_generator_dir, caplog, damage):
    from service.app import create_app
    from service.settings import Settings

    setting, error = damage(tmp_path / "artifact")
    data = tmp_path / "data"
    settings = Settings(data_dir=str(data), generator=str(tiny_generator_dir), encoder="minilm",
                        shared_data=str(tmp_path / "no-persona-data"), **setting)
    with caplog.at_level(logging.INFO, logger="pluralign.service"), pytest.raises(ValueError) as refused:
        create_app(settings)
    assert str(refused.value).startswith(error), refused.value
    assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith("setup [")]  # no model loading began
    assert not (data / "lancedb").exists()  # nor a table opened
