"""Review of replicas50: a population model whose per-user file was rewritten without meta.json's digest of it.

Since session replicas50 meta.json records the sha256 of a model's other files (`PALMeta.files`, `EMMeta.files`) and a
load refuses files that differ (`pluralign.files.FilesDiffer`). Two ordinary paths rewrite the per-user file and leave
the digest as it was: a DELETE by a release before replicas50 during a rolling upgrade (its `em.forget_users` rewrote
users.jsonl only; it reads the new meta.json of an EM mixture, which it never parsed), and a DELETE of this release
killed between its two writes (the per-user file, then meta.json). Until this review a replica then refused to START on
that folder (the start's load raised FilesDiffer) until someone promoted again, and every DELETE of one of the mixture's
training users answered 500 and kept the user's row in the mixture served from memory. Now the start (under the
folder's lock, no promotion under way) re-records the digest of a per-user file written after meta.json when every
other file is the one meta.json records, with a WARNING naming the file; a copy under way (its per-user file changed
before the meta.json copied first, by ctime) is still refused."""

from __future__ import annotations

import logging
import shutil

import msgspec
import pytest
import torch

from pluralign.files import FilesDiffer, write_atomic
from pluralign.reward.em import USERS_FILE, EMConfig, EMMixture, memberships
from pluralign.reward.pal import PALConfig, PALModel, UserWeights, load_pal, save_pal
from pluralign.reward.pal_checkpoint import USER_WEIGHTS_FILE, forget_weight_rows
from pluralign.reward.training_users import forget_training_users
from tests.service.test_break20_delete_b import logged
from tests.service.tiny import start_service

USERS = ["acme/ann", "acme/bob", "acme/cid"]


def em_mixture(folder, dim: int, encoder_id: str):
    torch.manual_seed(0)
    mixture = EMMixture.from_heads(torch.randn(2, 2 * dim), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
    mixture.users = list(USERS)
    mixture.fit_result.responsibilities = torch.full((len(USERS), 2), 0.5, dtype=torch.float64)
    return mixture.save(folder, encoder_id)


def delete_as_release_49_did(folder, user: str) -> None:
    """`em.forget_users` of the release before replicas50 (785ccfcb), still running beside new replicas: users.jsonl
    rewritten without the user's row, meta.json (and so its digest of users.jsonl) left as it was."""
    kept = [line + b"\n" for _, line, row in memberships(folder / USERS_FILE) if row.user_id != user]
    write_atomic(folder / USERS_FILE, b"".join(kept))


def test_an_em_mixture_an_older_release_deleted_users_from_is_served_and_its_deletes_go_on(tmp_path, tiny_generator_dir, minilm):
    pal = em_mixture(tmp_path / "pal", minilm.dim, minilm.encoder_id)
    delete_as_release_49_did(pal, "acme/bob")  # a replica of the release before, during a rolling upgrade
    with pytest.raises(FilesDiffer):
        EMMixture.load(pal, minilm.encoder_id)  # the state it left
    with logged("pluralign.service", logging.WARNING) as records:
        server, svc = start_service(tmp_path / "data", tiny_generator_dir, pal, minilm)  # before: FilesDiffer, no start
    with server, svc.client("acme") as acme:
        assert svc.runtime.rewards.kind == "em" and svc.runtime.rewards.model.users == ["acme/ann", "acme/cid"]
        assert EMMixture.load(pal, minilm.encoder_id).users == ["acme/ann", "acme/cid"]  # the digest recorded anew
        # the older replica deletes another user while this one serves the mixture; then this one's DELETE of a
        # training user: before, 500 (its reload refused users.jsonl) and the user's row kept in the mixture served
        delete_as_release_49_did(pal, "acme/ann")
        assert acme.delete("/v1/users/cid").status_code == 200
        assert svc.runtime.rewards.model.users == []
        assert EMMixture.load(pal, minilm.encoder_id).users == []
    said = [text for text in records if str(pal / USERS_FILE) in text]
    assert said and "meta.json" in said[0], records


def test_a_start_takes_up_a_pal_checkpoint_whose_delete_was_killed_between_its_two_writes(tmp_path, tiny_generator_dir, minilm):
    pal = tmp_path / "pal"
    torch.manual_seed(0)
    save_pal(pal, PALModel(PALConfig(k=2, input_dim=minilm.dim, latent_dim=8, hidden=16)),
             UserWeights.from_logits(USERS, torch.randn(3, 2)), minilm.encoder_id)
    forget_weight_rows(pal / USER_WEIGHTS_FILE, lambda user: user == "acme/bob", k=2)  # `forget_users`' first write; killed
    with pytest.raises(FilesDiffer):
        load_pal(pal)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, pal, minilm)  # before: FilesDiffer, no start
    with server, svc.client("acme") as acme:
        assert acme.get("/health").json()["pal"]["k"] == 2
    assert load_pal(pal)[1].users() == ["acme/ann", "acme/cid"]


@pytest.mark.parametrize("copy", [shutil.copy, shutil.copy2])
def test_a_start_still_refuses_a_copy_under_way(tmp_path, tiny_generator_dir, minilm, copy):
    """`cp artifact/*` paused after meta.json (copied first, by name): the per-user file there is the model before's,
    changed before meta.json was; no start serves that mix. `cp -p` (shutil.copy2) keeps the artifact's times, its
    meta.json's older than the users.jsonl a DELETE rewrote in the folder since: told apart by the inode's change time,
    which a copy sets (by mtime alone that mix was taken for a DELETE's rewrite and served)."""
    artifact = tmp_path / "artifact"
    torch.manual_seed(1)
    mixture = EMMixture.from_heads(torch.randn(2, 2 * minilm.dim), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
    mixture.users = ["acme/zed"]
    mixture.fit_result.responsibilities = torch.full((1, 2), 0.5, dtype=torch.float64)
    mixture.save(artifact, minilm.encoder_id)  # trained before the DELETE below
    pal = em_mixture(tmp_path / "pal", minilm.dim, minilm.encoder_id)
    assert forget_training_users(pal, lambda user: user == "acme/bob") == 1  # this release's DELETE, whole
    for name in ("heads.safetensors", "meta.json"):
        copy(artifact / name, pal / name)
    before = msgspec.json.decode((pal / "meta.json").read_bytes())
    with pytest.raises(FilesDiffer, match=USERS_FILE):
        start_service(tmp_path / "data", tiny_generator_dir, pal, minilm)
    assert msgspec.json.decode((pal / "meta.json").read_bytes()) == before
