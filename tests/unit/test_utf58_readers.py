"""utf58: the library's readers of artifacts and of the data folder's files take a file holding a byte that is not
UTF-8 as they take any damaged one: the error they document, naming the file. msgspec raises UnicodeDecodeError (a
ValueError, but not its DecodeError) for such a byte inside a string, and each of these caught DecodeError alone: a
bare "'utf-8' codec can't decode byte 0xff in position 3" came out, naming no file (or, where the damage means "no such
artifact", an error in place of None). Real files in a temp folder."""

from __future__ import annotations

import pytest

from pluralign.policy.adapters import META_FILE, AdapterError, read_meta
from pluralign.reward.em import memberships
from pluralign.reward.training_users import artifact_kind
from pluralign.reward.user_weights import UserWeights
from pluralign.store.deletions import Applied
from training.jobs.promotion import Promotions

NOT_UTF8 = b"b\xffo"


READERS = {  # (what the file is, its bytes, the reader given the temp folder, what it raises, its message's start)
    "adapter description": (META_FILE, b'{"schema_version": 1, "base_model": "' + NOT_UTF8 + b'"}', read_meta, AdapterError,
                            "{path}: not an adapter description"),
    "user weights": ("user_weights.json", b'{"schema_version": 1, "k": 2, "users": {"' + NOT_UTF8 + b'": [0, 0]}}',
                     lambda folder: UserWeights.load(folder / "user_weights.json"), ValueError, "{path}: not a user-weights file"),
    "EM memberships": ("users.jsonl", b'{"user_id": "' + NOT_UTF8 + b'"}\n', lambda folder: memberships(folder / "users.jsonl"),
                       ValueError, "{path}, line 1: not a user membership"),
    "applied deletions": ("deletions-applied.json", b'{"watermark": 1.0, "ids": {"' + NOT_UTF8 + b'": 1.0}}',
                          lambda folder: Applied.load(folder / "deletions-applied.json"), ValueError,
                          "{path}: not an applied-deletions file"),
    "promotions": ("promotions.json", b'{"' + NOT_UTF8 + b'": {}}', lambda folder: Promotions(folder / "promotions.json"),
                   ValueError, "{path}: not a promotions file"),
}


@pytest.mark.parametrize("name, data, reader, error, said", READERS.values(), ids=READERS.keys())
def test_a_file_holding_a_byte_that_is_not_utf8_is_refused_naming_it(tmp_path, name, data, reader, error, said):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(error) as raised:
        reader(tmp_path)
    assert str(raised.value).startswith(said.format(path=tmp_path / name)), raised.value


def test_an_artifact_whose_meta_is_not_utf8_is_no_artifact(tmp_path):
    """`artifact_kind` (which artifacts a DELETE rewrites): a meta.json that is not JSON is no PAL checkpoint or EM
    mixture; before, one holding a byte that is not UTF-8 raised UnicodeDecodeError."""
    (tmp_path / "meta.json").write_bytes(b'{"kind": "' + NOT_UTF8 + b'"}')
    assert artifact_kind(tmp_path) is None


def test_a_dead_letter_that_is_not_utf8_is_left_out_as_a_damaged_one(tmp_path):
    """A letter (msgspec MessagePack) whose text holds a byte that is not UTF-8 is left out of the listing and the counts
    as a damaged one is (`DeadLetters._refreshed`); before, UnicodeDecodeError out of every listing, count and DELETE."""
    import msgspec

    from pluralign.store.dead_letter import SUFFIX, DeadLetters

    (tmp_path / ("0" * 32 + SUFFIX)).write_bytes(msgspec.msgpack.encode({"error": "xyz"}).replace(b"xyz", NOT_UTF8))
    letters = DeadLetters(tmp_path)
    assert (letters.rows(), letters.owners(), letters.rows_for("acme", "ann")) == (0, set(), 0)
