"""`service.runtime.refuse_another_model` with the deployment's default settings (session reviewupgrade51).

Session upgrade51's start check compares the population version a starting replica loaded from PLURALIGN_PAL_DIR with
the ones the live replicas' clock rows say they serve (real LanceDB in a temp dir, rows written by the replicas' own
writer, `pluralign.store.clocks.ReplicaClocks`). Its wait used `store_sync_ms` as a number, but the setting is None
unless set (`Settings.sync_seconds` gives 1 s with several replicas): with PLURALIGN_STORE_SYNC_MS unset, every start
whose model some live replica did not serve yet failed with a TypeError, the model promoted just before it included
(a rolling restart right after `pluralign promote`), where it should wait for the others to take it up; and a replica
on another folder got a traceback, not the one line naming PLURALIGN_PAL_DIR. Its test set the setting (200 ms)."""

from __future__ import annotations

import threading
import time

import pytest

from pluralign.store import Store
from pluralign.store.clocks import ReplicaClocks
from service.runtime import refuse_another_model
from service.settings import ReplicasDisagree, Settings

SWEEP_S = 0.1  # PLURALIGN_DELETION_SWEEP_S: the wait is 3 passes and a sync interval (1 s by default)


def beating(store: Store, served: list[str]):
    """Replica 1, live: its clock row written every pass, saying it serves `served[0]` (which the test may change)."""
    clocks = ReplicaClocks(store.db, 1, stale_after_s=60.0, replicas=2, folder_id="b" * 32, served=lambda: served[0])
    clocks.beat()
    stop = threading.Event()

    def run():
        while not stop.wait(SWEEP_S):
            clocks.beat()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return stop, thread


@pytest.fixture
def replica_1(tmp_path):
    store = Store(str(tmp_path / "shared-lancedb"), encoder_id="e", dim=4, sync_seconds=0.05)
    served = ["1111aaaa2222bbbb"]
    stop, thread = beating(store, served)
    yield store, served
    stop.set()
    thread.join()


def settings(tmp_path) -> Settings:
    """Replica 0 of 2, PLURALIGN_STORE_SYNC_MS unset (its documented default: 1,000 ms with several replicas)."""
    made = Settings(data_dir=str(tmp_path / "a"), store_uri=str(tmp_path / "shared-lancedb"), replicas=2,
                    replica_index=0, deletion_sweep_s=SWEEP_S)
    assert made.store_sync_ms is None and made.sync_seconds == 1.0
    return made


def test_a_start_right_after_a_promotion_waits_for_the_live_replica_to_take_the_model_up(tmp_path, replica_1):
    store, served = replica_1
    timer = threading.Timer(3 * SWEEP_S, lambda: served.__setitem__(0, "3333cccc4444dddd"))  # its watch takes it up
    began = time.monotonic()
    timer.start()
    try:
        refuse_another_model(settings(tmp_path), store, "3333cccc4444dddd")  # before: TypeError (None / 1000)
    finally:
        timer.cancel()
    assert time.monotonic() - began >= 3 * SWEEP_S  # it waited for replica 1's row to say so, then went on


def test_a_start_on_another_model_is_refused_naming_pal_dir_with_the_default_sync(tmp_path, replica_1):
    store, _ = replica_1
    with pytest.raises(ReplicasDisagree) as refused:  # before: TypeError, a traceback instead of the one line
        refuse_another_model(settings(tmp_path), store, "5555eeee6666ffff")
    said = str(refused.value)
    assert "PLURALIGN_PAL_DIR" in said and "5555eeee6666ffff" in said and "replica 1 serves 1111aaaa2222bbbb" in said


def test_a_start_beside_another_replica_starting_on_the_promoted_model_is_not_refused(tmp_path, replica_1):
    """Three replicas; a model promoted while replica 1 runs, and replicas 0 and 2 starting at once (a rollout starting
    pods in parallel): replica 2's row, new, says it serves the promoted model before replica 1 took it up. The wait
    ended there and refused replica 0 (only replicas whose rows it had seen first counted as serving it), naming a
    folder that holds the very model another replica serves."""
    store, served = replica_1
    promoted = "3333cccc4444dddd"
    replica_2 = ReplicaClocks(store.db, 2, stale_after_s=60.0, replicas=3, folder_id="c" * 32, served=lambda: promoted)
    timer = threading.Timer(2 * SWEEP_S, replica_2.beat)  # its first pass, with the model it started on
    timer.start()
    made = Settings(data_dir=str(tmp_path / "a"), store_uri=str(tmp_path / "shared-lancedb"), replicas=3,
                    replica_index=0, deletion_sweep_s=SWEEP_S)
    try:
        refuse_another_model(made, store, promoted)  # before: ReplicasDisagree, "replica 1 serves 1111aaaa2222bbbb"
    finally:
        timer.cancel()
