"""Replicas set up unlike one another on one shared store (real LanceDB in a temp dir; replicas43): a replica
started with another PLURALIGN_REPLICAS than the live ones, or with an index a process on another data folder
runs as. Either divides the users unlike the others (`service.replicas.owner`: some users' adapter jobs queued
by two replicas, others' by none)."""

from __future__ import annotations

import time

import lancedb
import pyarrow as pa
import pytest

from pluralign.store import Store, clocks
from service.runtime import open_store
from service.settings import Settings

FOLDER_A = "a" * 32  # replica 0's data folder id (its `replica-folder-id` file)

# the clock table as the previous release made it (no `replicas` column) and a row as its replicas wrote it
OLD_SCHEMA = pa.schema([pa.field("replica", pa.int32(), nullable=False), pa.field("at", pa.float64(), nullable=False),
                        pa.field("ahead_s", pa.float64(), nullable=False), pa.field("instance", pa.string(), nullable=True)])


def write_row(store: str, replica: int, replicas: int | None, instance: str) -> None:
    """Replica `replica`'s clock row, stamped now, as its sweep's pass writes it (`replicas` None: the previous
    release's row, without the column)."""
    db = lancedb.connect(store)
    row = {"replica": [replica], "at": [time.time()], "ahead_s": [0.0], "instance": [instance]}
    schema = OLD_SCHEMA if replicas is None else OLD_SCHEMA.append(pa.field("replicas", pa.int32(), nullable=True))
    if replicas is not None:
        row["replicas"] = [replicas]
    if clocks.TABLE in db.list_tables().tables:
        db.open_table(clocks.TABLE).merge_insert("replica").when_matched_update_all().when_not_matched_insert_all().execute(
            pa.table(row, schema=schema))
    else:
        db.create_table(clocks.TABLE, pa.table(row, schema=schema))


def settings(tmp_path, folder: str, replicas: int, index: int) -> Settings:
    return Settings(data_dir=str(tmp_path / folder), store_uri=str(tmp_path / "shared-lancedb"), replicas=replicas,
                    replica_index=index)


def test_a_replica_set_up_unlike_the_live_ones_is_refused_at_start_naming_the_setting_and_both_values(tmp_path, minilm):
    """Replica 0 runs with PLURALIGN_REPLICAS=2 from data folder a. Before: a replica started with
    PLURALIGN_REPLICAS=3, or as replica 0 from another data folder, opened the store and served, and the users were
    divided two ways at once (a reviewer measured up to a third of users with two owners or none). Now its start
    stops with one line naming the setting, both values and the seconds to wait (`pluralign serve`: exit 2); replica
    0's own restart on folder a, replica 1 of 2, and a row of the previous release (no `replicas` column) still open it."""
    store = str(tmp_path / "shared-lancedb")
    Store(store, minilm.encoder_id, minilm.dim, sync_seconds=0.2)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "replica-folder-id").write_text(FOLDER_A)
    write_row(store, 0, 2, f"d:{FOLDER_A}:{'1' * 32}")

    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS") as refused:
        open_store(settings(tmp_path, "b", replicas=3, index=1), minilm)
    message = str(refused.value)
    assert "PLURALIGN_REPLICAS=3" in message and "replica 0 runs with PLURALIGN_REPLICAS=2" in message, message
    assert "60 s" in message, message  # how old the old count's rows must be: 3 passes, at least a minute

    with pytest.raises(ValueError, match="PLURALIGN_REPLICA_INDEX") as refused:
        open_store(settings(tmp_path, "b", replicas=2, index=0), minilm)
    assert "PLURALIGN_REPLICA_INDEX=0" in str(refused.value) and "another data folder" in str(refused.value)

    open_store(settings(tmp_path, "a", replicas=2, index=0), minilm)  # replica 0 restarted on its own folder
    open_store(settings(tmp_path, "c", replicas=2, index=1), minilm)

    write_row(store, 1, None, "9" * 32)  # replica 1 of the previous release, rolling forward: says no count
    open_store(settings(tmp_path, "d", replicas=2, index=1), minilm)
    write_row(store, 2, None, "8" * 32)  # but a live replica 2 has no place among 2
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS=2 has no place for"):
        open_store(settings(tmp_path, "d", replicas=2, index=1), minilm)

