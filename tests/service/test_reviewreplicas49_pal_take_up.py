"""A replica takes up a model copied into PLURALIGN_PAL_DIR while it started (`service.pal_dir.PalDirWatch`).

In session 49 the watch took the folder as it found it when the runtime was built for what was served: a copy that
ended after the start had read the folder (a rolling restart during the operator's `cp`) and before the watch was
made went unseen, and that replica served the model it had read (the one before, or half the copy) until the folder
changed again, while the others served the new one. Now the watch's first passes compare the folder's population
version with the one served, as for any change."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from service.rewards import UserRewards, checkpoint_version
from tests.service.tiny import start_service

pytestmark = pytest.mark.slow  # one replica's start and a few passes: ~5 s on two busy cores (`make test-scaleout`)

SWEEP_S = 0.2


def test_a_model_copied_in_while_the_replica_started_is_served(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    torch.manual_seed(2)
    artifact = tmp_path / "artifact"  # a job's artifact: another model of the same encoder and K
    save_pal(artifact, PALModel(PALConfig(k=2, input_dim=minilm.dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["u1"], torch.randn(1, 2)), minilm.encoder_id)
    loading = UserRewards.load_or_bootstrap

    def read_then_copied(folder, encoder, shared_data):  # the operator's `cp` ends just after the start read the folder
        rewards = loading(folder, encoder, shared_data)
        for path in sorted(artifact.iterdir()):
            shutil.copy(path, pal / path.name)
        return rewards

    monkeypatch.setattr(UserRewards, "load_or_bootstrap", staticmethod(read_then_copied))
    server, svc = start_service(tmp_path / "a", tiny_generator_dir, pal, minilm, store_uri=str(tmp_path / "lancedb"),
                                replicas=2, replica_index=0, deletion_sweep_s=SWEEP_S)
    new = checkpoint_version(pal)
    assert new != checkpoint_version(tiny_pal_dir)  # the start read the one before
    with server, svc.client("acme") as acme:
        deadline = time.monotonic() + 20 * SWEEP_S + 5
        while acme.get("/health").json()["pal"]["version"] != new:  # before: the one read, for good
            assert time.monotonic() < deadline, "the model copied in during the start was never served"
            time.sleep(0.05)
