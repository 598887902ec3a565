"""A replica watching PLURALIGN_PAL_DIR never serves a model whose copy into it is under way (`service.pal_dir`).

The watch serves a new model once the folder has not changed for a whole pass. Until session replicas50 a copy that
paused between files for longer (`cp artifact/*` on a slow volume, a copy file by file, an rsync between files) was
taken up half done: meta.json and model.safetensors of the new model beside the user weights and prior of the one
before, all of matching shapes, loaded and were served under a version that is neither model's. Now meta.json
records the sha256 of the other files (`PALMeta.files`) and a model whose files differ is not loaded; two copies at
once that leave a mix are never served either."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from service.rewards import checkpoint_version
from tests.service.tiny import start_service, wait_passes

pytestmark = pytest.mark.slow  # one replica's start and passes over copies: ~10 s on two busy cores (`make test-scaleout`)

SWEEP_S = 0.2


def artifact(folder, seed: int, dim: int, encoder_id: str, accuracy: float):
    torch.manual_seed(seed)  # a job's artifact: another model of the same encoder, K and sizes, with its metrics
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["u1", "u2"], torch.randn(2, 2)), encoder_id, metrics={"val_acc": accuracy})
    return folder


def copy_part(source, folder, which: slice) -> None:
    """`cp` of `which` files of `source`, in the order `cp source/*` copies them (by name: meta.json first)."""
    for path in sorted(source.iterdir())[which]:
        shutil.copy(path, folder / path.name)


def test_a_copy_paused_part_way_is_not_served_and_two_copies_mixed_are_never_served(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    pal = tmp_path / "pal"
    shutil.copytree(tiny_pal_dir, pal)
    first = artifact(tmp_path / "first", 1, minilm.dim, minilm.encoder_id, 0.7)
    second = artifact(tmp_path / "second", 2, minilm.dim, minilm.encoder_id, 0.8)
    server, svc = start_service(tmp_path / "a", tiny_generator_dir, pal, minilm, store_uri=str(tmp_path / "lancedb"),
                                replicas=2, replica_index=0, deletion_sweep_s=SWEEP_S)

    def served() -> str:
        return acme.get("/health").json()["pal"]["version"]

    with server, svc.client("acme") as acme:
        old, new = served(), checkpoint_version(first)
        assert old == checkpoint_version(tiny_pal_dir) != new
        copy_part(first, pal, slice(0, 2))  # meta.json, model.safetensors; the copy pauses
        wait_passes(svc.runtime.pal_dir_watch, 3)  # the second pass to see the copy (the first to find it unchanged) would take it up
        assert served() == old  # before: the half-copied mix's version, served for the pause
        copy_part(first, pal, slice(2, None))
        deadline = time.monotonic() + 20 * SWEEP_S + 5
        while served() != new:
            assert time.monotonic() < deadline, "the whole copy was never served"
            time.sleep(0.05)

        # two operators' copies at once, the second's files landing between the first's: a mix, never served
        for name in ("meta.json", "model.safetensors"):
            shutil.copy(second / name, pal / name)
        shutil.copy(first / "user_weights.json", pal / "user_weights.json")
        wait_passes(svc.runtime.pal_dir_watch, 3)
        assert served() == new
