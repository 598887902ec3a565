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


# A DELETE with other replicas on the store waits `sync_seconds` + `READ_MARGIN_S` (2 s) before removing the
# old versions it purged, for a reader on another process that chose one just before (`Store._purge_tables`).
# A test's replicas are in its own process, and a read that outlives the margin anyway is read again
# (`READ_ATTEMPTS`): a tenth of a second keeps the wait, the removal after it and the lease held meanwhile,
# and saves ~1.9 s of each replica DELETE (suite45b: 46 of them in the default suite's replica tests).
SHORT_READ_MARGIN_S = 0.1


@pytest.fixture
def short_read_margin(monkeypatch):
    """`pluralign.store.tables.READ_MARGIN_S` is `SHORT_READ_MARGIN_S` for the test (a module-scoped fixture
    patches it the same way with `pytest.MonkeyPatch.context()`)."""
    from pluralign.store import tables

    monkeypatch.setattr(tables, "READ_MARGIN_S", SHORT_READ_MARGIN_S)


@pytest.fixture
def quick_retries(monkeypatch):
    """The ingest worker's retries of a failed move 0.01 s apart, growing to 0.04 s (`RETRY_S`, `MAX_RETRY_S`), for the
    test: a record's three tries in a tenth of a second."""
    from pluralign.store import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "RETRY_S", 0.01)
    monkeypatch.setattr(ingest_module, "MAX_RETRY_S", 0.04)
