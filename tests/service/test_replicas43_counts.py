"""Replicas set up unlike one another on one shared store (real LanceDB in a temp dir; replicas43): a replica
started with another PLURALIGN_REPLICAS than the live ones, or with an index a process on another data folder
runs as. Either divides the users unlike the others (`service.replicas.owner`: some users' adapter jobs queued
by two replicas, others' by none)."""

from __future__ import annotations

import re
import time
import types
from datetime import timedelta

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


def write_row(store: str, replica: int, replicas: int | None, instance: str, ago_s: float = 0.0) -> None:
    """Replica `replica`'s clock row, stamped now (or `ago_s` seconds ago: its last pass before it stopped), as its
    sweep's pass writes it (`replicas` None: the previous release's row, without the column)."""
    db = lancedb.connect(store)
    row = {"replica": [replica], "at": [time.time() - ago_s], "ahead_s": [0.0], "instance": [instance]}
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
    written = time.time()
    write_row(store, 0, 2, f"d:{FOLDER_A}:{'1' * 32}")

    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS") as refused:
        open_store(settings(tmp_path, "b", replicas=3, index=1), minilm)
    message = str(refused.value)
    assert "PLURALIGN_REPLICAS=3" in message and "replica 0 runs with PLURALIGN_REPLICAS=2" in message, message
    assert "60 s" in message, message  # how old the old count's rows must be: 3 passes, at least a minute

    with pytest.raises(ValueError, match="PLURALIGN_REPLICA_INDEX") as refused:
        open_store(settings(tmp_path, "b", replicas=2, index=0), minilm)
    assert "PLURALIGN_REPLICA_INDEX=0" in str(refused.value) and "another data folder" in str(refused.value)
    # replica 0 back on a new volume (its folder's id gone with the old one): the operator is told it need only wait, and
    # nothing of changing the count (reviewrp43; before: "To change how many replicas run, stop them all ...")
    assert "this replica's last run on a data folder since replaced" in str(refused.value), refused.value
    # a minute from the row's stamp, less the time this test took since (a full run under load: 1 s, "59 s")
    waited = time.time() - written
    again = re.search(r"start it again in (\d+) s", str(refused.value))
    assert again and round(60 - waited) - 1 <= int(again[1]) <= 60, (waited, str(refused.value))
    assert "how many replicas run" not in str(refused.value)

    open_store(settings(tmp_path, "a", replicas=2, index=0), minilm)  # replica 0 restarted on its own folder
    open_store(settings(tmp_path, "c", replicas=2, index=1), minilm)

    write_row(store, 1, None, "9" * 32)  # replica 1 of the previous release, rolling forward: says no count
    open_store(settings(tmp_path, "d", replicas=2, index=1), minilm)
    write_row(store, 2, None, "8" * 32)  # but a live replica 2 has no place among 2
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS=2 has no place for"):
        open_store(settings(tmp_path, "d", replicas=2, index=1), minilm)



class PreemptedOnce:
    """A store connection on which an earlier release's replica writes its clock row (its pass, every
    `deletion_sweep_s`) right after the clock table is first opened: between that open and the new column's
    addition, as it lands at times when the two run side by side in a rolling upgrade."""

    def __init__(self, store: str):
        self.db, self.store, self.preempted = lancedb.connect(store), store, False

    def open_table(self, name: str):
        table = self.db.open_table(name)
        if not self.preempted:
            self.preempted = True
            write_row(self.store, 1, None, "9" * 32)
        return table

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_replica_adding_the_clock_table_s_columns_while_an_earlier_release_writes_its_row_writes_its_own(tmp_path):
    """Review of replicas43. Lance refuses `add_columns` when another commit lands between its read and its write (a
    retryable commit conflict): a replica of the previous release writing its clock row then. Before: the refusal was
    taken for "added by another replica meanwhile", the table kept without the `replicas` column, and every pass of
    this replica's sweep failed writing its row for as long as it ran ("Field 'replicas' not found in target
    schema": its clock never compared, its count never seen). Now the addition is tried again on the newest version."""
    store = str(tmp_path / "shared-lancedb")
    write_row(store, 1, None, "9" * 32)  # the previous release's table and replica 1's row
    mine = clocks.ReplicaClocks(PreemptedOnce(store), 0, stale_after_s=60.0, replicas=2, folder_id=FOLDER_A)
    mine.beat()
    rows = {r["replica"]: r for r in clocks.recent_rows(lancedb.connect(store), 60.0)}
    assert rows[0]["replicas"] == 2 and clocks.folder_of(rows[0]["instance"]) == FOLDER_A, rows
    assert rows[1]["replicas"] is None


def test_a_count_changed_as_deploy_readme_says_raises_no_alarm_and_a_live_replica_of_another_count_does(tmp_path):
    """Review of replicas43. Three replicas stopped 61 s ago (3 passes and a bit, as deploy/README.md says to change the
    count), then started with PLURALIGN_REPLICAS=2. Their rows are not recent enough to refuse the start, but the
    running check took every row it had not yet watched stop changing for 3 passes as live: for its first minute each
    new replica logged an error, /health said `degraded` and `pluralign_replica_counts_disagree` was 1 (replicas 1 and 2
    "run with PLURALIGN_REPLICAS=3"): an alert paged at every count change done right. Now a row counts once it was
    written again since this replica first read it; a live replica set up with another count is still said one pass
    later."""
    store = str(tmp_path / "shared-lancedb")
    for i, folder in enumerate("abc"):
        write_row(store, i, 3, f"d:{folder * 32}:{str(i) * 32}", ago_s=61.0)
    db = lancedb.connect(store, read_consistency_interval=timedelta(0))  # as a replica's store: its reads see new commits
    mine = clocks.ReplicaClocks(db, 0, stale_after_s=60.0, replicas=2, folder_id=FOLDER_A)
    mine.beat()
    assert mine.counts == {}  # before: {1: 3, 2: 3}
    write_row(store, 1, 3, f"d:{'b' * 32}:{'9' * 32}")  # replica 1 started again, with the old count: live
    mine.beat()
    assert mine.counts == {1: 3}
    assert "replica 1 runs with PLURALIGN_REPLICAS=3" in clocks.counts_words(mine.counts, 2)


def test_a_count_left_in_a_row_an_earlier_release_wrote_over_is_not_compared():
    """Review of replicas43: the guard no test held (mutated away, every test passed). A replica rolled back to the
    previous release writes its row with the columns it knows: `instance` becomes its random hex, `replicas` keeps what
    the newer release wrote (measured: merge_insert leaves a column its source lacks as it was). That count may be
    stale (the count changed since), so it is compared only under an instance naming a data folder."""
    now = time.time()
    rolled_back = {"replica": 1, "at": now, "ahead_s": 0.0, "instance": "9" * 32, "replicas": 2}
    assert clocks.counts_disagree([rolled_back], 3) == {}
    newer = {**rolled_back, "instance": f"d:{FOLDER_A}:{'1' * 32}"}
    assert clocks.counts_disagree([newer], 3) == {1: 2}


def test_a_count_change_done_as_docs_operations_says_starts_every_new_replica_and_raises_no_alarm(tmp_path, minilm, monkeypatch):
    """docs/operations.md, "Changing the replica count", step by step: three replicas of PLURALIGN_REPLICAS=3 run
    (their sweeps' passes write their clock rows, as `DeletionSweep` builds `ReplicaClocks`), all are stopped, a
    replica of the new count started at once is refused with the seconds to wait, and the two of PLURALIGN_REPLICAS=2
    started that much later (this process's clocks moved on: no test waits a minute) open the store, and their passes
    raise no alarm (counts {} and no clock skew) though replica 2's row stays in the table for good."""
    from service.deletions import folder_id

    store = str(tmp_path / "shared-lancedb")
    Store(store, minilm.encoder_id, minilm.dim, sync_seconds=0.2)

    def db():
        return lancedb.connect(store, read_consistency_interval=timedelta(0))  # a replica's store: sees new commits

    old = [clocks.ReplicaClocks(db(), i, stale_after_s=60.0, replicas=3, folder_id=folder_id(tmp_path / folder))
           for i, folder in enumerate("abc")]
    for _ in range(2):
        for replica in old:
            assert replica.beat().seconds == 0.0 and replica.counts == {}
    # 1. every replica stopped (their passes stop); 2. a replica started with the new count now is told how long to wait
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS=2") as refused:
        open_store(settings(tmp_path, "a", replicas=2, index=0), minilm)
    wait = float(re.search(r"this start is taken (\d+) s from now", str(refused.value)).group(1))
    assert 55 <= wait <= 60, refused.value  # 3 passes of PLURALIGN_DELETION_SWEEP_S (10 s by default), at least a minute

    # 3. that long later, both start with PLURALIGN_REPLICAS=2 on the folders they had (a and b; c is kept, unused)
    moved_on = [wait - 3.0]
    later = types.SimpleNamespace(time=lambda: time.time() + moved_on[0], monotonic=lambda: time.monotonic() + moved_on[0])
    monkeypatch.setattr(clocks, "time", later)
    with pytest.raises(ValueError, match="PLURALIGN_REPLICAS=2"):  # a few seconds short of it: still refused
        open_store(settings(tmp_path, "a", replicas=2, index=0), minilm)
    moved_on[0] = wait + 1.0
    new = []
    for i, folder in enumerate("ab"):
        open_store(settings(tmp_path, folder, replicas=2, index=i), minilm)
        new.append(clocks.ReplicaClocks(db(), i, stale_after_s=60.0, clock=later.time, replicas=2,
                                        folder_id=folder_id(tmp_path / folder)))
    for _ in range(3):
        for replica in new:
            assert replica.beat().seconds == 0.0 and replica.counts == {} and not replica.index_shared()
    assert {r["replica"]: r["replicas"] for r in clocks.recent_rows(db(), 10.0, now=later.time())} == {0: 2, 1: 2}
