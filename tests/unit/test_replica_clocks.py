"""`pluralign.store.clocks`: replicas' clocks compared through one LanceDB folder (a temp dir), each
replica's clock a settable value."""

from __future__ import annotations

from datetime import timedelta

import lancedb

from pluralign.store.clocks import ReplicaClocks


def connect(folder):
    """A connection that sees other connections' commits at every read (as replicas' do within `store_sync_ms`)."""
    return lancedb.connect(folder, read_consistency_interval=timedelta(0))


class Clock:
    def __init__(self, at: float):
        self.at = at

    def __call__(self) -> float:
        return self.at


def test_the_replica_behind_sees_the_lead_and_every_replica_reads_it(tmp_path):
    a_clock, b_clock = Clock(1000.0), Clock(995.0)  # b runs 5 s behind a
    a = ReplicaClocks(connect(tmp_path), 0, stale_after_s=60, clock=a_clock)
    b = ReplicaClocks(connect(tmp_path), 1, stale_after_s=60, clock=b_clock)
    assert a.beat().seconds == 0.0  # alone on the store
    skew = b.beat()
    assert skew.seconds == 5.0 and (skew.ahead, skew.behind) == (0, 1)
    assert "replica 0's clock runs at least 5.0 s ahead of replica 1's" in skew.words()
    a_clock.at += 1
    skew = a.beat()  # a's own reading sees b behind, not ahead: b's row tells it
    assert skew.seconds == 5.0 and skew.behind == 1 and "another replica's clock" in skew.words()


def test_a_skew_is_held_as_long_as_it_was_once_the_clock_is_set_right_and_a_stopped_replica_stops_counting(tmp_path, monkeypatch):
    import pluralign.store.clocks as clocks

    mono = Clock(0.0)
    monkeypatch.setattr(clocks.time, "monotonic", mono)
    a_clock, b_clock = Clock(1000.0), Clock(1003.0)  # b runs 3 s ahead
    a = ReplicaClocks(connect(tmp_path), 0, stale_after_s=30, clock=a_clock)
    b = ReplicaClocks(connect(tmp_path), 1, stale_after_s=30, clock=b_clock)
    b.beat()
    assert a.beat().seconds == 3.0
    b_clock.at = a_clock.at  # set right
    b.beat()
    mono.at += 1
    assert a.beat().seconds == 3.0  # rows b stamped before still carry times up to 3 s ahead
    mono.at += 3.5  # held until 3 s after the pass that saw it shrink
    b.beat()
    assert a.beat().seconds == 0.0
    b_clock.at += 10  # b ahead again, then stops: its last row stops counting after stale_after_s
    b.beat()
    assert a.beat().seconds == 10.0
    mono.at += 31
    assert a.beat().seconds == 10.0  # held as long as it lasted
    mono.at += 11
    assert a.beat().seconds == 0.0


def test_on_object_storage_replicas_creating_and_writing_the_table_at_once_all_count_and_a_shared_index_shows():
    """moto's S3 server as the bucket: three replicas' first passes at once (each creates the table, two lose
    the race), then passes at the same moment (merge_insert commits that conflict, retried by Lance), and
    the versions' removal at once: no pass fails, every replica's row is there, a 4 s lead is seen by the
    replica behind; a fourth process with replica 0's index is noticed by both."""
    from tests.s3 import S3Server
    from tests.together import at_once

    with S3Server("pluralign-clocks") as s3:
        def replica(i: int, at: float) -> ReplicaClocks:
            db = lancedb.connect(s3.uri("clocks"), storage_options=s3.options, read_consistency_interval=timedelta(0))
            return ReplicaClocks(db, i, stale_after_s=60, clock=Clock(at))

        replicas = [replica(0, 1000.0), replica(1, 1000.0), replica(2, 996.0)]  # 2 runs 4 s behind
        for _ in range(2):  # the first creates the table (two lose that race), the second's commits conflict (store61: 3)
            results = at_once(*(r.beat for r in replicas))
            assert not [x for x in results if isinstance(x, BaseException)], results
        assert sorted(row["replica"] for row in replicas[0]._open().to_arrow().to_pylist()) == [0, 1, 2]
        assert replicas[2].skew.seconds >= 4.0 and replicas[2].skew.behind == 2
        import pluralign.store.clocks as clocks

        tidy = clocks.TIDY_EVERY
        try:
            clocks.TIDY_EVERY = 1
            results = at_once(*(r.beat for r in replicas))
            assert not [x for x in results if isinstance(x, BaseException)], results
        finally:
            clocks.TIDY_EVERY = tidy
        twin = replica(0, 1000.0)
        twin.beat()
        replicas[0].beat()
        twin.beat()
        assert replicas[0].index_shared() and twin.index_shared() and not replicas[1].index_shared()


def test_a_replicas_beats_remove_the_clock_tables_old_versions_every_tidy_every_passes(tmp_path, monkeypatch):
    """Each beat commits a version; without the tidy the table kept every one of them (one a second
    and replica, for as long as the service runs)."""
    import pluralign.store.clocks as clocks

    monkeypatch.setattr(clocks, "TIDY_EVERY", 4)
    monkeypatch.setattr(clocks, "KEEP_VERSIONS", timedelta(0))
    clock = Clock(1000.0)
    a = ReplicaClocks(connect(tmp_path), 0, stale_after_s=60, clock=clock)
    for _ in range(12):
        clock.at += 1
        a.beat()
    table = connect(tmp_path).open_table(clocks.TABLE)
    assert len(table.list_versions()) <= 4  # the newest, and at most the 3 beats since the last tidy
    assert table.to_arrow().column("at").to_pylist() == [1012.0]
