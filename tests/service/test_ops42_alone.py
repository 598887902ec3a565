"""An operator's mistake on a shared store: one process started without PLURALIGN_REPLICAS (so as the store's only
one) beside replicas (real LanceDB in a temp dir; ops42)."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, clocks
from service.runtime import open_store
from service.settings import Settings


def test_a_process_started_alone_on_a_store_replicas_share_is_refused_naming_the_setting(tmp_path, minilm):
    """Before: it started and served what it read at its start. Feedback through the replicas never showed in it, a
    user DELETEd through them stayed, and once their DELETE removed old versions its reads answered 503 "a file of it is
    damaged" (measured with `pluralign serve` on moto's S3), while its own DELETEs purged beside their appends without
    their lease. Now its start stops with one error naming PLURALIGN_REPLICAS, before its feedback log moves anything in
    (`pluralign serve`: that line, exit 2)."""
    store = str(tmp_path / "shared-lancedb")
    replica = Store(store, minilm.encoder_id, minilm.dim, sync_seconds=0.2)  # replica 0 of 2, as its runtime opens it
    clocks.ReplicaClocks(replica.db, 0, stale_after_s=60.0).beat()  # its sweep's pass: its clock's row in the store
    alone = Settings(data_dir=str(tmp_path / "b"), store_uri=store)  # PLURALIGN_REPLICAS left out
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS") as refused:
        open_store(alone, minilm)
    message = str(refused.value)
    assert "replica 0" in message and store in message and "PLURALIGN_REPLICA_INDEX" in message
    assert "60 s" in message  # how long after the last replica stopped a start alone is taken (3 passes, at least a minute)
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS"):  # PLURALIGN_STORE_SYNC_MS set, PLURALIGN_REPLICAS not
        open_store(Settings(data_dir=str(tmp_path / "b"), store_uri=store, store_sync_ms=200), minilm)
    # its replicas' settings open it as before, and a replica stopped that long ago no longer counts
    open_store(Settings(data_dir=str(tmp_path / "c"), store_uri=store, replicas=2, replica_index=1), minilm)
    assert list(clocks.recent_replicas(replica.db, 60.0)) == [0]
    assert clocks.recent_replicas(replica.db, 60.0, now=time.time() + 61) == {}
