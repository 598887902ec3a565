"""Each replica's clock row says which population model it serves (`pluralign.store.clocks.served_pal`, session
upgrade51), so a start on another folder holding a different model is told (`service.runtime.refuse_another_model`).
A replica of an earlier release writes its row with the columns it knows and leaves `pal` as the newer release wrote it
(merge_insert keeps a column its source lacks): that stale value must not count as what it serves."""

from __future__ import annotations

import lancedb

from pluralign.store import clocks
from tests.service.test_replicas43_counts import FOLDER_A, write_row


def test_a_replica_says_what_it_serves_and_an_earlier_release_writing_over_its_row_says_nothing(tmp_path):
    store = str(tmp_path / "shared-lancedb")
    write_row(store, 1, 2, f"d:{'b' * 32}:{'9' * 32}")  # session 50's table and row: no `pal` column
    mine = clocks.ReplicaClocks(lancedb.connect(store), 0, stale_after_s=60.0, replicas=2, folder_id=FOLDER_A,
                                served=lambda: "1eaeee231c2a4ef4")
    mine.beat()  # adds the column to the earlier release's table
    rows = {r["replica"]: r for r in clocks.recent_rows(lancedb.connect(store), 60.0)}
    assert clocks.served_pal(rows[0]) == "1eaeee231c2a4ef4" and clocks.served_pal(rows[1]) is None
    write_row(store, 0, 2, f"d:{FOLDER_A}:{'8' * 32}")  # replica 0 rolled back to session 50: its own columns only
    row = {r["replica"]: r for r in clocks.recent_rows(lancedb.connect(store), 60.0)}[0]
    assert row["pal"] is not None and clocks.served_pal(row) is None  # the stale value is not what it serves
