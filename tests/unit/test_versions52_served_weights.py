"""The start check of replicas sharing PLURALIGN_PAL_DIR (`service.runtime.refuse_another_model`) compares what does not
depend on the release (session versions52): each clock row says the digest of the weights its writer serves
(`service.rewards.weights_digest`), not only the population version, which hashes the meta.json fields its release
knows. Real LanceDB in a temp dir, rows written by the replicas' own writer (`pluralign.store.clocks.ReplicaClocks`),
real PAL checkpoints on disk."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lancedb
import pytest
import torch

import service.rewards as rewards
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from pluralign.store import Store, clocks
from pluralign.store.clocks import ReplicaClocks
from service.rewards import checkpoint_version, weights_digest
from service.runtime import refuse_another_model
from service.settings import ReplicasDisagree, Settings
from tests.service.test_replicas43_counts import FOLDER_A, write_row

SWEEP_S = 0.1  # PLURALIGN_DELETION_SWEEP_S: a start waits 3 passes and a sync interval for the others to take a model up


def checkpoint(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=2, hidden=4)),
             UserWeights.from_logits(["t/a"], torch.randn(1, 2)), "enc")
    return folder


def a_later_release(monkeypatch) -> None:
    """This process from now on reads meta.json as a later release does: it knows (and hashes) `calibration` too."""
    known = rewards._described_fields
    monkeypatch.setattr(rewards, "_described_fields", lambda meta: (known(meta) or frozenset()) | {"calibration"})


def a_later_releases_version(folder: Path, monkeypatch) -> str:
    """The version a later release computes for `folder` (`a_later_release`, undone on return)."""
    with monkeypatch.context() as m:
        a_later_release(m)
        return checkpoint_version(folder)


@pytest.fixture
def replica_1(tmp_path):
    """Replica 1, live: its clock row written every pass, saying it serves `served["version"]`, `served["weights"]`."""
    store = Store(str(tmp_path / "shared-lancedb"), encoder_id="enc", dim=4, sync_seconds=0.05)
    served: dict[str, str | None] = {"version": None, "weights": None}
    beats = ReplicaClocks(store.db, 1, stale_after_s=60.0, replicas=2, folder_id="b" * 32,
                          served=lambda: served["version"], served_weights=lambda: served["weights"])
    with beating(beats, SWEEP_S) as thread:
        yield store, served, beats, thread


@contextmanager
def beating(beats: ReplicaClocks, every_s: float) -> Iterator[threading.Thread]:
    """A thread, not started (the test starts it), writing `beats`' clock row every `every_s` until the block ends."""
    stop = threading.Event()

    def run():
        while not stop.wait(every_s):
            beats.beat()

    thread = threading.Thread(target=run, daemon=True)
    yield thread
    stop.set()
    if thread.is_alive():
        thread.join()


def settings(tmp_path) -> Settings:
    return Settings(data_dir=str(tmp_path / "a"), store_uri=str(tmp_path / "shared-lancedb"), replicas=2,
                    replica_index=0, deletion_sweep_s=SWEEP_S, store_sync_ms=50)


def test_two_releases_serving_one_folder_are_not_refused_and_two_models_are(tmp_path, replica_1, monkeypatch):
    """Before: replica 1, of a later release whose meta.json has a field this release skips (`calibration`), served
    the shared folder under another version than this release computes for it, and this replica's start on the very
    same folder was refused ("holds population model …, while replica 1 serves …"). A folder holding other weights is
    still refused, naming both models' weights."""
    store, served, beats, thread = replica_1
    shared = checkpoint(tmp_path / "shared" / "pal", seed=0)
    meta = json.loads((shared / "meta.json").read_text())
    (shared / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}}))  # the later release's
    later = a_later_releases_version(shared, monkeypatch)
    assert later != checkpoint_version(shared)  # the two releases' versions of one folder differ
    served.update(version=later, weights=weights_digest(shared))
    beats.beat()
    thread.start()
    row = {r["replica"]: r for r in store.recent_clock_rows(60)}[1]
    assert clocks.served_pal(row) == later and clocks.served_pal_weights(row) == weights_digest(shared)
    refuse_another_model(settings(tmp_path), store, checkpoint_version(shared), weights_digest(shared))  # before: refused
    other = checkpoint(tmp_path / "other-deployment" / "pal", seed=1)
    assert weights_digest(other) != weights_digest(shared)
    with pytest.raises(ReplicasDisagree) as refused:
        refuse_another_model(settings(tmp_path), store, checkpoint_version(other), weights_digest(other))
    said = str(refused.value)
    assert "PLURALIGN_PAL_DIR" in said and str(weights_digest(other)) in said and f"replica 1 serves {later}" in said, said
    assert str(weights_digest(shared)) in said, said


def test_an_earlier_releases_row_is_compared_by_version_and_the_digest_is_the_weights_alone(tmp_path, replica_1):
    """A row of a release before versions52 says a version only (no `pal_weights`): compared by it, as that release
    compared. And the digest is of the weights' bytes alone: a DELETE's rewrite of user_weights.json or a field added
    to meta.json leaves it as it was."""
    store, served, beats, thread = replica_1
    beats.served_weights = None  # replica 1 is of the earlier release: its row has no `pal_weights`
    shared = checkpoint(tmp_path / "shared" / "pal", seed=0)
    served.update(version=checkpoint_version(shared))
    beats.beat()
    thread.start()
    assert clocks.served_pal_weights({r["replica"]: r for r in store.recent_clock_rows(60)}[1]) is None
    refuse_another_model(settings(tmp_path), store, checkpoint_version(shared), weights_digest(shared))
    with pytest.raises(ReplicasDisagree):
        refuse_another_model(settings(tmp_path), store, "0123456789abcdef", weights_digest(shared))
    before = weights_digest(shared)
    meta = json.loads((shared / "meta.json").read_text())
    (shared / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}}))
    (shared / "user_weights.json").write_text((shared / "user_weights.json").read_text() + " ")
    assert weights_digest(shared) == before and weights_digest(tmp_path / "shared") is None


def test_an_earlier_release_writing_over_a_replicas_row_leaves_no_weights_said(tmp_path):
    """A replica rolled back to an earlier release writes its row with the columns it knows: the `pal_weights` this
    release wrote stays in the row, under another instance, and must not count as what it serves (as `pal`)."""
    store = str(tmp_path / "shared-lancedb")
    mine = ReplicaClocks(lancedb.connect(store), 0, stale_after_s=60.0, replicas=2, folder_id=FOLDER_A,
                         served=lambda: "1eaeee231c2a4ef4", served_weights=lambda: "99aa88bb77cc66dd")
    mine.beat()
    row = {r["replica"]: r for r in clocks.recent_rows(lancedb.connect(store), 60.0)}[0]
    assert clocks.served_pal_weights(row) == "99aa88bb77cc66dd"
    write_row(store, 0, 2, f"d:{FOLDER_A}:{'8' * 32}")  # replica 0 rolled back to session 50: its own columns only
    row = {r["replica"]: r for r in clocks.recent_rows(lancedb.connect(store), 60.0)}[0]
    assert row["pal_weights"] is not None and clocks.served_pal_weights(row) is None
