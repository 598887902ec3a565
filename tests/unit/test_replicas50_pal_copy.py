"""A population model copied into PLURALIGN_PAL_DIR file by file is not loaded until the copy ends.

deploy/README.md promotes a job's artifact with `cp artifact/* $PLURALIGN_PAL_DIR/`, which copies meta.json first.
Until session replicas50 the folder then held the new meta.json beside the model before: of the same shapes (same
encoder, K and sizes), it loaded, and a replica watching the folder served that mix once the copy paused for a pass.
Now meta.json records the sha256 of the model's other files (`PALMeta.files`, `EMMeta.files`) and loading checks them
(`pluralign.files.FilesDiffer`); a DELETE's rewrite records the new user weights' digest, and never for a mix."""

from __future__ import annotations

import shutil

import pytest
import torch

from pluralign.files import FilesDiffer
from pluralign.reward.em import EMConfig, EMMixture
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.training_users import forget_training_users

CONFIG = PALConfig(k=2, input_dim=4, latent_dim=4, hidden=8)


def pal(folder, seed: int, users: list[str]):
    torch.manual_seed(seed)
    save_pal(folder, PALModel(CONFIG), UserWeights.from_logits(users, torch.randn(len(users), 2)), "enc")
    return folder


def em(folder, seed: int, users: list[str]):
    torch.manual_seed(seed)
    mixture = EMMixture.from_heads(torch.randn(2, 8), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
    mixture.users = users
    mixture.fit_result.responsibilities = torch.full((len(users), 2), 0.5, dtype=torch.float64)
    return mixture.save(folder, "enc")


def copy_as_cp_does(artifact, folder, upto: int | None = None) -> None:
    """`cp artifact/* folder/`: one file after another, by name (meta.json first), the first `upto` of them."""
    for path in sorted(artifact.iterdir())[:upto]:
        shutil.copy(path, folder / path.name)


def test_a_pal_checkpoint_copied_over_another_of_the_same_shapes_loads_only_once_whole(tmp_path):
    served, artifact = pal(tmp_path / "pal", 0, ["old"]), pal(tmp_path / "artifact", 1, ["new"])
    copy_as_cp_does(artifact, served, upto=1)  # meta.json copied; model.safetensors, user_weights.json the ones before
    with pytest.raises(FilesDiffer, match="model.safetensors: not the file meta.json records"):
        load_pal(served, encoder_id="enc")  # before: loaded, the model before under the new description
    copy_as_cp_does(artifact, served, upto=2)  # and model.safetensors: user_weights.json still the one before
    with pytest.raises(FilesDiffer, match="user_weights.json"):
        load_pal(served, encoder_id="enc")
    copy_as_cp_does(artifact, served)
    model, weights, _ = load_pal(served, encoder_id="enc")
    assert weights.users() == ["new"]
    expected, _, _ = load_pal(artifact, encoder_id="enc")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values(), strict=True))


def test_an_em_mixture_copied_over_another_loads_only_once_whole(tmp_path):
    served, artifact = em(tmp_path / "pal", 0, ["old"]), em(tmp_path / "artifact", 1, ["new"])
    copy_as_cp_does(artifact, served, upto=2)  # heads.safetensors and meta.json; users.jsonl the one before
    with pytest.raises(FilesDiffer, match="users.jsonl"):
        EMMixture.load(served, "enc")
    copy_as_cp_does(artifact, served)
    assert EMMixture.load(served, "enc").users == ["new"]


@pytest.mark.parametrize("make", [pal, em])
def test_a_delete_keeps_a_whole_model_loading_and_never_makes_a_mix_load(tmp_path, make):
    load = (lambda f: load_pal(f, encoder_id="enc")[1].users()) if make is pal else (lambda f: EMMixture.load(f, "enc").users)
    whole = make(tmp_path / "whole", 0, ["a", "b", "c"])
    assert forget_training_users(whole, lambda user: user == "b", shared=True) == 1
    assert load(whole) == ["a", "c"]  # the rewrite recorded the new per-user file's digest

    mixed, artifact = make(tmp_path / "mixed", 0, ["a", "b", "c"]), make(tmp_path / "artifact", 1, ["x", "b"])
    per_user = "user_weights.json" if make is pal else "users.jsonl"
    for path in artifact.iterdir():  # a copy that stopped before the per-user file
        if path.name != per_user:
            shutil.copy(path, mixed / path.name)
    assert forget_training_users(mixed, lambda user: user == "b", shared=True) == 1  # "b" left the file there
    with pytest.raises(FilesDiffer, match=per_user):
        load(mixed)  # the rewrite did not record the digest of the file meta.json does not describe
