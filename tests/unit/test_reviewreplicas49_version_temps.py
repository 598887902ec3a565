"""The population version (`service.rewards.checkpoint_version`) of a PLURALIGN_PAL_DIR holding the temp file of a rewrite
(`write_atomic`'s ".<file>.<random>", under way in another replica, or left by one killed part way).

Replicas share the folder since session 49 and each rewrites it for every DELETE. The version hashed every file, temp
files too: a replica started while such a file was there served the same model under another version than the
others, and each user served by both in turn was refitted at every switch (their `pal_version` differed)."""

from __future__ import annotations

from service.rewards import checkpoint_version
from tests.unit.test_break18_cli import tiny_pal


def test_a_rewrites_temp_file_leaves_the_version_as_it_is(tmp_path):
    pal = tiny_pal(tmp_path / "pal", input_dim=4)
    version = checkpoint_version(pal)
    (pal / ".user_weights.json.k2j4x9").write_bytes(b'{"schema_version": 1, "k": 2, "pri')  # half a rewrite
    assert checkpoint_version(pal) == version
