"""A replica watching PLURALIGN_PAL_DIR never serves a model whose copy into it is under way (`service.pal_dir`).

The watch serves a new model once the folder has not changed for a whole pass. Until session replicas50 a copy that
paused between files for longer (`cp artifact/*` on a slow volume, a copy file by file, an rsync between files) was
taken up half done: meta.json and model.safetensors of the new model beside the user weights and prior of the one
before, all of matching shapes, loaded and were served under a version that is neither model's. Now meta.json
records the sha256 of the other files (`PALMeta.files`) and a model whose files differ is not loaded; two copies at
once that leave a mix are never served either."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, UserWeights, save_pal
from service.rewards import checkpoint_version
from tests.service.tiny import start_service

pytestmark = pytest.mark.slow  # one replica's start and passes over ~4 s of copies: ~10 s on two busy cores (`make test-scaleout`)

SWEEP_S = 0.2


def artifact(folder, seed: int, dim: int, encoder_id: str, accuracy: float):
    torch.manual_seed(seed)  # a job's artifact: another model of the same encoder, K and sizes, with its metrics
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(["u1", "u2"], torch.randn(2, 2)), encoder_id, metrics={"val_acc": accuracy})
    return folder


def copy_slowly(source, folder, pause_after: int, pause_s: float) -> None:
    """`cp source/* folder/`, pausing `pause_s` after the first `pause_after` files (meta.json first, by name)."""
    for i, path in enumerate(sorted(source.iterdir())):
        if i == pause_after:
            time.sleep(pause_s)
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
        writer = threading.Thread(target=copy_slowly, args=(first, pal, 2, 15 * SWEEP_S))  # meta.json, model.safetensors: then 3 s
        writer.start()
        seen = set()
        while writer.is_alive():
            seen.add(served())
            time.sleep(0.05)
        writer.join()
        assert seen == {old}  # before: the half-copied mix's version, served for the pause
        deadline = time.monotonic() + 20 * SWEEP_S + 5
        while served() != new:
            assert time.monotonic() < deadline, "the whole copy was never served"
            time.sleep(0.05)

        # two operators' copies at once, the second's files landing between the first's: a mix, never served
        for name in ("meta.json", "model.safetensors"):
            shutil.copy(second / name, pal / name)
        shutil.copy(first / "user_weights.json", pal / "user_weights.json")
        time.sleep(6 * SWEEP_S + 0.5)
        assert served() == new
