"""PLURALIGN_PAL_DIR shared by replicas: each replica's DELETEs (and the other replicas' deletion records it applies)
rewrite the checkpoint's user weights there, so two processes rewrite one file.

Before session 49 nothing ordered them: each read user_weights.json, removed its user and wrote the file back whole
(atomically, so never torn), and the one writing second wrote back the row the first had just removed: a deleted
user's row came back, and meta.json's `users` count disagreed with the file. Now the read and the rewrite are made
under a lock beside the folder (`pluralign.files.folder_lock`)."""

from __future__ import annotations

import multiprocessing

import msgspec
import torch

from pluralign.files import lock_file
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.training_users import forget_training_users

USERS = 15  # per process


def remove_one_by_one(folder: str, prefix: str, start) -> None:
    start.wait()
    for i in range(USERS):
        forget_training_users(folder, lambda user, name=f"{prefix}{i}": user == name, shared=True)


def test_two_processes_removing_users_from_one_checkpoint_lose_no_removal(tmp_path):
    folder = tmp_path / "pal"
    users = [f"{p}{i}" for p in ("a", "b") for i in range(USERS)] + ["kept"]
    torch.manual_seed(0)
    save_pal(folder, PALModel(PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)),
             UserWeights.from_logits(users, torch.zeros(len(users), 2)), "enc")
    fork = multiprocessing.get_context("fork")  # torch is imported already: a fork starts in ms, a spawn in seconds
    start = fork.Event()
    procs = [fork.Process(target=remove_one_by_one, args=(str(folder), p, start)) for p in ("a", "b")]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    _, weights, meta = load_pal(folder, encoder_id="enc")
    assert weights.users() == ["kept"]  # before: some of a's or b's rows were back
    assert meta.users == 1 == len(msgspec.json.decode((folder / "user_weights.json").read_bytes())["users"])
    assert lock_file(folder).exists() and sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "user_weights.json"]
