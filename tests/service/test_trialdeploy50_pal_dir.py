"""Found by an operator rolling one of two replicas (session trialdeploy50): restarted with a PLURALIGN_PAL_DIR that held
nothing (a mistyped path, the shared volume not mounted), it bootstrapped a population model of its own there and served
it (/health: k=4, version 8448690d...) beside the other replica's promoted one (k=3, 982a0478...), fitting users
against two population models, with no word in its log. Such a start now stops, naming PLURALIGN_PAL_DIR."""

from __future__ import annotations

import time

import pytest

from tests.service.tiny import start_service


@pytest.mark.slow  # ~9 s (three service starts): make test-scaleout runs it
def test_a_replica_whose_pal_dir_is_empty_beside_a_live_replica_stops_instead_of_serving_a_model_of_its_own(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    store = str(tmp_path / "shared-lancedb")
    shared = dict(store_uri=store, replicas=2, store_sync_ms=200)
    server, live = start_service(tmp_path / "b", tiny_generator_dir, tiny_pal_dir, minilm, replica_index=1, **shared)
    with server:
        deadline = time.monotonic() + 30
        while not live.runtime.store.recent_clock_rows(60) and time.monotonic() < deadline:
            time.sleep(0.05)  # replica 1's clock row: it runs on the store
        assert live.runtime.store.recent_clock_rows(60)
        empty = tmp_path / "not-mounted" / "pal"
        with pytest.raises(ValueError) as refused:
            start_service(tmp_path / "a", tiny_generator_dir, empty, minilm, replica_index=0, **shared)
        said = str(refused.value)
        assert "PLURALIGN_PAL_DIR" in said and str(empty) in said and "replica 1" in said, said
        assert not empty.exists() or not any(empty.iterdir())  # nothing bootstrapped there
        # the shared folder, which holds the model replica 1 serves, starts replica 0 as ever
        second, started = start_service(tmp_path / "a", tiny_generator_dir, tiny_pal_dir, minilm, replica_index=0, **shared)
        with second:
            assert started.runtime.rewards.version == live.runtime.rewards.version
