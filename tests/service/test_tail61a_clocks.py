"""The replicas' clock comparison (`pluralign.store.clocks.ReplicaClocks`) on a real LanceDB in a temp dir, without an
app: what keeps, in the default suite, the checks of two flows over two in-process replicas that `make test-scaleout`
runs (tests/service/test_review37b_replicas.py, ~1.4 CPU-s each against a few hundredths here). The service's side of
a refusal (/health `degraded`, a DELETE's 503 `clocks_disagree` naming the replica) is kept by
tests/service/test_replica37_clock_skew.py's default test."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import lancedb
import pyarrow as pa

from pluralign.store import clocks

STALE_S = 60.0


def connect(path) -> lancedb.DBConnection:
    return lancedb.connect(path, read_consistency_interval=timedelta(0))  # as a replica's store: its reads see new commits


def test_two_processes_started_as_the_same_replica_each_see_the_other_and_say_it_once(tmp_path, caplog):
    """Both run as replica 0 (PLURALIGN_REPLICA_INDEX the same on two machines), the second's clock 5 s behind. Each
    finds its row written by another process between its own passes: `index_shared` (which refuses DELETEs), an error
    naming the setting logged once by each, however many passes see it again."""
    store = tmp_path / "shared-lancedb"
    a = clocks.ReplicaClocks(connect(store), 0, STALE_S, folder_id="a" * 32)
    b = clocks.ReplicaClocks(connect(store), 0, STALE_S, clock=lambda: time.time() - 5.0, folder_id="b" * 32)
    with caplog.at_level(logging.ERROR, logger="pluralign.store"):
        for _ in range(3):  # passes of both, interleaved as their sweeps' would be
            a.beat()
            b.beat()
    assert a.index_shared() and b.index_shared()
    said = [r.getMessage() for r in caplog.records if "PLURALIGN_REPLICA_INDEX=0" in r.getMessage()]
    assert len(said) == 2, said

    alone = clocks.ReplicaClocks(connect(tmp_path / "alone"), 0, STALE_S, folder_id="c" * 32)
    for _ in range(3):
        alone.beat()
    assert not alone.index_shared()  # its own row, read back at each pass, is not another process's


def test_a_row_of_a_replica_scaled_away_long_ago_is_not_a_skew_at_a_start(tmp_path):
    """Replica 2 of 3 measured a 5 s skew, then the service was scaled to 2 a day ago: its row stays. A process starting
    counts a row first seen already older than a live one can be as stopped (no skew: DELETEs answered at once), until
    the row changes: then it counts again."""
    store = tmp_path / "shared-lancedb"
    row = {"replica": [2], "at": [time.time() - 86_400], "ahead_s": [5.0], "instance": ["gone"], "replicas": [None],
           "pal": [None], "pal_weights": [None], "pal_model": [None]}
    connect(store).create_table(clocks.TABLE, pa.table(row, schema=clocks.clock_schema()))
    mine = clocks.ReplicaClocks(connect(store), 0, STALE_S, replicas=2, folder_id="a" * 32)
    for _ in range(2):
        assert mine.beat().seconds == 0.0 and mine.counts == {}

    back = clocks.ReplicaClocks(connect(store), 2, STALE_S, replicas=3, folder_id="d" * 32)  # replica 2 back, as it was
    back.beat()
    mine.beat()
    assert mine.counts == {2: 3} and "replica 2 runs with PLURALIGN_REPLICAS=3" in clocks.counts_words(mine.counts, 2)
