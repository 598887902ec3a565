"""What the refusal of a process started alone on a store replicas share tells its operator (ops42's check,
reviewed: real LanceDB in a temp dir; the tables' encoder is named only, no model loads)."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest

from pluralign.store import Store, clocks
from service.runtime import open_store
from service.settings import Settings

ENCODER = SimpleNamespace(encoder_id="reviewo42-encoder", dim=8)  # what open_store reads of an encoder


def _refusal(tmp_path, uri: str, **settings) -> str:
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS") as refused:
        open_store(Settings(data_dir=str(tmp_path / "alone"), store_uri=uri, **settings), ENCODER)
    return str(refused.value)


def _wait_s(message: str) -> int:
    found = re.search(r"start this one again in (\d+) s", message)
    assert found, message
    return int(found.group(1))


def test_a_row_stamped_by_a_clock_running_ahead_is_named_with_the_wait_it_really_makes(tmp_path):
    """A replica whose clock ran 10 minutes ahead stopped (scaled away): its row counts, by this machine's clock, for 11
    minutes. Before: the refusal said its row was written "within the last 60 s" and to start again "60 s after the last
    of them stopped", and each start a minute later was refused again, with no word of why."""
    uri = str(tmp_path / "shared")
    replica = Store(uri, ENCODER.encoder_id, ENCODER.dim, sync_seconds=0.2)
    clocks.ReplicaClocks(replica.db, 1, stale_after_s=60.0, clock=lambda: time.time() + 600).beat()
    message = _refusal(tmp_path, uri)
    assert re.search(r"replica 1's row is stamped (599|600) s ahead of this machine's clock", message), message
    assert 655 <= _wait_s(message) <= 660


def test_the_wait_is_what_is_left_of_the_sweep_passes_after_the_last_row(tmp_path):
    """The last row written 30 s ago, with PLURALIGN_DELETION_SWEEP_S 40 (3 passes: 120 s): 90 s are left, by this
    machine's clock (a scaled-down replica's own row counts too: it cannot tell it from another's)."""
    uri = str(tmp_path / "shared")
    replica = Store(uri, ENCODER.encoder_id, ENCODER.dim, sync_seconds=0.2)
    clocks.ReplicaClocks(replica.db, 0, stale_after_s=120.0, clock=lambda: time.time() - 30).beat()
    message = _refusal(tmp_path, uri, deletion_sweep_s=40.0)
    assert re.search(r"replica 0's row was written (30|31) s ago", message), message
    assert 88 <= _wait_s(message) <= 90
    message = _refusal(tmp_path, uri, deletion_sweep_s=40.0, store_sync_ms=200)  # PLURALIGN_STORE_SYNC_MS set alone
    assert 88 <= _wait_s(message) <= 90


def test_a_damaged_clock_table_stops_the_start_with_an_error_naming_it(tmp_path):
    """A store replicas once shared (scaled down to one long ago) whose `replica_clocks` table lost a file. Before: the
    alone check read it and the start ended in Lance's raw RuntimeError (a traceback; until ops42 such a start never
    read that table). Now: a StoreError naming the table and what to do, as for the store's other tables."""
    uri = str(tmp_path / "shared")
    replica = Store(uri, ENCODER.encoder_id, ENCODER.dim, sync_seconds=0.2)
    clocks.ReplicaClocks(replica.db, 0, stale_after_s=60.0, clock=lambda: time.time() - 3600).beat()
    for data in (tmp_path / "shared" / f"{clocks.TABLE}.lance" / "data").iterdir():
        data.unlink()
    for settings in ({}, {"store_sync_ms": 200}):
        with pytest.raises(ValueError, match=rf"table `{clocks.TABLE}` at {re.escape(uri)} cannot be read") as refused:
            open_store(Settings(data_dir=str(tmp_path / "alone"), store_uri=uri, **settings), ENCODER)
        assert "whether replicas share" in str(refused.value)


def test_a_start_refused_as_alone_leaves_the_tables_the_replicas_made_meanwhile(tmp_path, monkeypatch):
    """`pluralign serve` on a local store (a shared folder), the replicas started beside it: while its models load they
    make their tables and beat their clocks, and once open it is refused (ops42). Before: the failed start undid every
    top-level entry new in the store folder (`left_as_found`, meant for a store only it used), so the replicas' tables,
    the feedback they had moved in with them, were removed under them. Now the refusal leaves the store as it is (its
    own data folder is still left as found)."""
    import service.app
    from training.commands.serve import start

    shared, data = tmp_path / "shared", tmp_path / "data"
    settings = Settings.load(environ={}, data_dir=str(data), store_uri=str(shared))

    def create_app_while_the_replicas_start(settings):  # the models load meanwhile; then the runtime opens the store
        replica = Store(str(shared), ENCODER.encoder_id, ENCODER.dim, sync_seconds=0.2)
        clocks.ReplicaClocks(replica.db, 0, stale_after_s=60.0).beat()
        open_store(settings, ENCODER)

    monkeypatch.setattr(service.app, "create_app", create_app_while_the_replicas_start)
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS"):
        start(settings, [settings.lancedb_uri])  # as `pluralign serve` calls it: a local store, PLURALIGN_REPLICAS unset
    made = sorted(p.name for p in shared.iterdir()) if shared.is_dir() else []
    assert "preferences.lance" in made and f"{clocks.TABLE}.lance" in made, made
    assert not data.exists()  # its own data folder, made by the start: removed
    assert list(Store(str(shared), ENCODER.encoder_id, ENCODER.dim, sync_seconds=0.2).recent_replicas(60.0)) == [0]
