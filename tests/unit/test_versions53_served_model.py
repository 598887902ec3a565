"""Replicas sharing PLURALIGN_PAL_DIR compare at start everything that changes what is served (session versions53):
each clock row says its model's digest (`pal_model`, `service.rewards.model_digest`: the weights, the meta.json fields
that say how they are read, PAL's population prior), not only its weights' (`pal_weights`, session versions52's). Two
folders of the same weights and another population prior read as the same model until then: a replica started on
the other one fitted every new user around another prior. Real LanceDB in a temp dir, rows written by the replicas' own
writer (`pluralign.store.clocks.ReplicaClocks`), real PAL checkpoints on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.pal_checkpoint import forget_users
from pluralign.store import Store, clocks
from pluralign.store.clocks import ReplicaClocks
from service.rewards import UserRewards, checkpoint_version, model_digest, weights_digest
from service.runtime import refuse_another_model
from service.settings import ReplicasDisagree, Settings
from tests.unit.test_versions52_served_weights import beating

SWEEP_S = 0.1


def checkpoint(folder: Path, seed: int, users: tuple[str, ...] = ("t/a", "t/b")) -> Path:
    torch.manual_seed(seed)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=2, hidden=4)),
             UserWeights.from_logits(list(users), torch.randn(len(users), 2)), "enc")
    return folder


def with_another_prior(source: Path, folder: Path) -> Path:
    """A copy of `source` whose population prior is another: the same model.safetensors, byte for byte."""
    _, weights, _ = load_pal(source, encoder_id="enc")
    model, _, _ = load_pal(source, encoder_id="enc")
    weights.set_prior(weights.prior() + torch.tensor([0.75, -0.75]))
    save_pal(folder, model, weights, "enc")
    return folder


@pytest.fixture
def replica_1(tmp_path):
    """Replica 1 of this release, live: its clock row written every pass, saying it serves the model of `served[0]`."""
    store = Store(str(tmp_path / "shared-lancedb"), encoder_id="enc", dim=4, sync_seconds=0.05)
    served: list[Path] = []
    beats = ReplicaClocks(store.db, 1, stale_after_s=60.0, replicas=2, folder_id="b" * 32,
                          served=lambda: checkpoint_version(served[0]), served_weights=lambda: weights_digest(served[0]),
                          served_model=lambda: model_digest(served[0]))
    with beating(beats, SWEEP_S) as thread:
        yield store, served, beats, thread


def start(tmp_path, store, folder: Path) -> None:
    """This replica's start check, having loaded the model at `folder` as a start does."""
    rewards = UserRewards.load(folder, "enc", 4)
    settings = Settings(data_dir=str(tmp_path / "a"), store_uri=str(tmp_path / "shared-lancedb"), replicas=2,
                        replica_index=0, deletion_sweep_s=SWEEP_S, store_sync_ms=50)
    refuse_another_model(settings, store, rewards.version, rewards.weights, rewards.digest)


def test_a_folder_of_the_same_weights_and_another_prior_is_refused_at_start(tmp_path, replica_1):
    store, served, beats, thread = replica_1
    shared = checkpoint(tmp_path / "shared" / "pal", seed=0)
    other = with_another_prior(shared, tmp_path / "restored" / "pal")
    assert weights_digest(other) == weights_digest(shared)  # what replicas compared until session versions53
    assert model_digest(other) != model_digest(shared)
    served.append(shared)
    beats.beat()
    thread.start()
    row = {r["replica"]: r for r in store.recent_clock_rows(60)}[1]
    assert clocks.served_pal_model(row) == model_digest(shared)
    start(tmp_path, store, shared)  # the same folder: not refused
    with pytest.raises(ReplicasDisagree) as refused:  # before: not refused (the same weights), served beside theirs
        start(tmp_path, store, other)
    said = str(refused.value)
    assert "PLURALIGN_PAL_DIR" in said and str(model_digest(other)) in said and str(model_digest(shared)) in said, said


def test_the_digest_leaves_out_what_serves_nothing(tmp_path):
    """A DELETE's rewrite of the training users' rows, another release's meta.json field, metrics and the prior
    written with other digits of the same float32 leave the digest as it was; another variant of the same weights'
    bytes would not (it is read otherwise), nor another prior."""
    folder = checkpoint(tmp_path / "pal", seed=0)
    digest = model_digest(folder)
    assert forget_users(folder, lambda user: user == "t/a") == 1
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}, "metrics": {"acc": 0.5}}))
    written = json.loads((folder / "user_weights.json").read_text())
    (folder / "user_weights.json").write_text(json.dumps({**written, "prior": [v + 1e-12 for v in written["prior"]]}))
    assert model_digest(folder) == digest
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "meta.json").write_text(json.dumps({**meta, "variant": "b" if meta["variant"] != "b" else "a"}))
    assert model_digest(copy) != digest
    (copy / "meta.json").write_text(json.dumps(meta))
    (copy / "user_weights.json").write_text(json.dumps({**written, "prior": [v + 0.5 for v in written["prior"]]}))
    assert model_digest(copy) != digest


def test_a_later_release_reading_one_more_field_gives_a_folder_without_it_the_same_digest(tmp_path, monkeypatch):
    """A later release that reads one more meta.json field saying how the weights are read (SERVED_FIELDS) gives a
    folder that lacks it the digest this release gives it: the digest is what replicas of two releases compare at
    start and what `promote --if-version` takes off either's /health. Until review versions53 an absent field was
    hashed as null, and the two releases' digests of every folder without it differed."""
    import service.rewards as rewards

    folder = checkpoint(tmp_path / "pal", seed=0)
    digest = model_digest(folder)
    monkeypatch.setitem(rewards.SERVED_FIELDS, "pal", (*rewards.SERVED_FIELDS["pal"], "calibration"))
    assert model_digest(folder) == digest  # before: another digest
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "calibration": {"temperature": 1.3}}))
    assert model_digest(folder) != digest  # a folder holding it is read otherwise by that release
