"""A DELETE during a plain copy of one EM mixture over another (session reviewupgrade51).

`cp b/* $PLURALIGN_PAL_DIR/` copies heads.safetensors, then meta.json, then users.jsonl. Paused between them, the
folder holds b's heads and description beside a's users.jsonl, which no replica serves (meta.json's digests,
replicas50). A DELETE of one of a's training users meanwhile rewrote that users.jsonl and left meta.json as it was
(the file was not the one meta.json records): the folder then looked like what an older release's DELETE leaves after a
promotion, a per-user file rewritten after its description, and a start, and since upgrade51 a running replica's
watch, recorded its digest and served b's heads with a's memberships; the watch kept them after the copy ended (the
population version leaves users.jsonl out), until a restart. A DELETE that rewrites a per-user file its mixture's
description does not record now writes the description again after it, as a PAL checkpoint's DELETE always did, so the
mix stays refused until the copy ends."""

from __future__ import annotations

import shutil

import pytest
import torch

from pluralign.files import FilesDiffer, write_atomic
from pluralign.reward.em import USERS_FILE, EMConfig, EMMixture, forget_users, memberships
from service.rewards import UserRewards


def mixture(folder, seed: int, users):
    torch.manual_seed(seed)
    made = EMMixture.from_heads(torch.randn(2, 8), torch.log(torch.tensor([0.5, 0.5])), EMConfig(k=2))
    made.users = list(users)
    made.fit_result.responsibilities = torch.rand(len(users), 2, dtype=torch.float64).softmax(-1)
    return made.save(folder, "enc")


def test_a_delete_during_a_paused_copy_of_another_mixture_does_not_make_the_mix_servable(tmp_path):
    served = mixture(tmp_path / "pal", 0, ["acme/ann", "acme/bob"])
    new = mixture(tmp_path / "artifact", 1, ["acme/cid", "acme/dan"])
    for name in ("heads.safetensors", "meta.json"):  # `cp artifact/* pal/` paused before users.jsonl
        shutil.copy(new / name, served / name)
    assert forget_users(served, lambda user: user == "acme/bob") == 1  # a DELETE of one of the old model's users
    with pytest.raises(FilesDiffer):  # before: the mix loaded, the digest of the old users.jsonl recorded
        UserRewards.load_after_rewrites(served, "enc")
    shutil.copy(new / USERS_FILE, served / USERS_FILE)  # the copy ends
    assert UserRewards.load_after_rewrites(served, "enc").model.users == ["acme/cid", "acme/dan"]


def test_an_older_releases_delete_then_this_ones_leave_a_mixture_that_is_taken_up(tmp_path):
    """The case an unrecorded rewrite is taken up for: a release before replicas50 deleted a user from a promoted
    mixture (users.jsonl rewritten, meta.json left), then this release deleted another, before any start recorded it."""
    served = mixture(tmp_path / "pal", 0, ["acme/ann", "acme/bob", "acme/cid"])
    kept = [line + b"\n" for _, line, row in memberships(served / USERS_FILE) if row.user_id != "acme/bob"]
    write_atomic(served / USERS_FILE, b"".join(kept))  # the older release's DELETE
    assert forget_users(served, lambda user: user == "acme/cid") == 1
    assert UserRewards.load_after_rewrites(served, "enc").model.users == ["acme/ann"]
