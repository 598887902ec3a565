import pytest

from tests.service.tiny import minilm, start_service, tiny_generator_dir, tiny_pal_dir  # noqa: F401


@pytest.fixture
def serve(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):  # noqa: F811
    """Starts the service on `tmp_path/data` with an embedding cache of its own and the journal's pass
    left to the test: `serve(**settings)` -> (data folder, server, service). Called in the test, not
    here: the app's logging set-up then happens where caplog looks (started in setup, it doubled
    caplog's records)."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    return lambda **settings: (data, *start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, **{"deletion_sweep_s": 3600, **settings}))
