"""A DELETE reads an EM artifact's users.jsonl (a membership row per training user) whole only when its
bytes may name the deleted user, as scale37 made it for PAL's user_weights.json (`Forget.may_name`).
Before: every DELETE decoded every line of every EM artifact's file to find none of the user's."""

from __future__ import annotations

import msgspec
import pytest

from pluralign.reward import em
from pluralign.store.deletions import Forget, key_hash


@pytest.fixture
def artifact(tmp_path):
    rows = [em.UserMembership(user_id=f"acme/u{i}", cluster=i % 2, posterior=[0.5, 0.5]) for i in range(50)]
    (tmp_path / em.USERS_FILE).write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in rows))
    return tmp_path


def test_a_file_that_cannot_name_the_user_is_not_decoded(artifact, monkeypatch):
    before = (artifact / em.USERS_FILE).read_bytes()
    monkeypatch.setattr(em, "memberships", lambda path: pytest.fail("decoded a file that cannot name acme/zed"))
    assert em.forget_users(artifact, Forget.key("acme/zed")) == 0
    assert (artifact / em.USERS_FILE).read_bytes() == before


def test_a_file_that_names_the_user_or_a_hash_is_read_and_rewritten(artifact):
    assert em.forget_users(artifact, Forget.key("acme/u7")) == 1
    assert b"acme/u7\"" not in (artifact / em.USERS_FILE).read_bytes()
    by_hash = Forget(hashes=frozenset([key_hash("acme/u8")]), until={key_hash("acme/u8"): float("inf")},
                     made_until={key_hash("acme/u8"): float("inf")})
    assert em.forget_users(artifact, by_hash) == 1  # a hash cannot be looked for in the bytes: every file is read
    assert len((artifact / em.USERS_FILE).read_bytes().splitlines()) == 48
