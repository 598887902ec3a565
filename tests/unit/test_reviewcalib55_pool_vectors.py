"""Review calib55: what a replica holds of a tenant's calibration pool when another PUT replaces it while a request of
the tenant is under way (`service.calibration.vectors.CalibrationVectors`), and what a PUT whose pool could not be
written leaves beside the pool before (`service.calibration.pools.write_pool`). Real files in a temp folder, two
replicas' memories, the tiny deterministic encoder of tests/unit/test_calib55_pool_vectors.py."""

from __future__ import annotations

import errno
import os

import msgspec
import pytest

from service.calibration.pools import read_pool, read_vectors, vectors_path, write_pool
from service.calibration.vectors import CalibrationVectors
from tests.unit.test_calib55_pool_vectors import ITEMS, WordEncoder, put

CHANGED = [("Tea or coffee?", ["Tea.", "Coffee, with milk."]), ITEMS[1]]


def test_a_pool_replaced_while_a_request_read_it_is_held_no_longer_than_the_next_pass(tmp_path):
    """A `{}` on replica a reads the pool (version 1); replica b's PUT replaces it before a's request reaches the pool's
    vectors; a's request goes on with the pool it read. a's next pass drops what it then held of version 1. Before, a
    took the new file's identity for version 1's: the pass kept the replaced pool's vectors (its texts' embeddings),
    held until the tenant's next `{}` on a, for good if none came."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    a = CalibrationVectors(1 << 20)
    put(folder, "acme", ITEMS, encoder)
    read = read_pool(folder, "acme")  # a's request
    put(folder, "acme", CHANGED, encoder)  # b's PUT, meanwhile
    assert a.rows(encoder, folder, "acme", read, ["Coffee, black."]).shape == (1, 8)  # answered from the pool it read
    a.drop_replaced(folder)  # a's next pass
    assert a.held_bytes("acme") == 0  # before: version 1's vectors still held


def test_a_request_that_read_the_pool_before_this_replicas_put_never_displaces_the_put(tmp_path):
    """A `{}` on replica a reads the pool; a PUT through a itself replaces it and holds the new pool's vectors; the `{}`
    then ends. a keeps holding the new pool's vectors: its next `{}` reads nothing. Before, the request's older version
    replaced them (the replaced pool's texts held again, the new pool's vectors read back from the folder)."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    a = CalibrationVectors(1 << 20)
    put(folder, "acme", ITEMS, encoder)
    read = read_pool(folder, "acme")
    texts = [*(p for p, _ in CHANGED), *(x for _, answers in CHANGED for x in answers)]
    vectors = encoder.encode(texts)
    stored = write_pool(folder, "acme", CHANGED, vectors=("words", vectors))
    a.keep("acme", stored, encoder, vectors, folder)  # what the PUT's controller does
    a.rows(encoder, folder, "acme", read, ["Tea."])
    reads = a.read
    a.rows(encoder, folder, "acme", read_pool(folder, "acme"), ["Coffee, with milk."])
    assert a.read == reads  # held since the PUT (before: read back from beside the pool)


def test_a_put_whose_pool_could_not_be_written_leaves_no_vectors_of_it(tmp_path, monkeypatch):
    """A PUT whose pool file fails at its fsync (ENOSPC) after its vectors were written keeps the pool before, and
    leaves beside it no vectors of the pool it did not store (those are its texts' embeddings). Before, the refused
    pool's vectors stayed in `<sha256>.vectors` until another replica embedded the pool before again."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    before = put(folder, "acme", ITEMS, encoder)
    real_fsync = os.fsync

    def full(fd):
        if ".json." in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):  # the pool's temp file, not the vectors' 
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="space"):
        put(folder, "acme", CHANGED, encoder)
    monkeypatch.undo()
    assert read_pool(folder, "acme") == before
    path = vectors_path(folder, "acme")
    if path.exists():  # only ever the pool before's
        assert msgspec.msgpack.decode(path.read_bytes())["digest"] == before.digest()
        assert read_vectors(folder, "acme", before, "words") is not None
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_a_pool_renamed_into_place_whose_folder_fsync_failed_keeps_its_vectors(tmp_path, monkeypatch):
    """The same failure after the pool's rename (the folder's fsync): the PUT's error is raised, the pool is the new one,
    and its vectors stay beside it (read by every replica, none embedding it again)."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    put(folder, "acme", ITEMS, encoder)
    real_fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}") == str(folder) and getattr(read_pool(folder, "acme"), "version", 0) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="space"):
        put(folder, "acme", CHANGED, encoder)
    monkeypatch.undo()
    stored = read_pool(folder, "acme")
    assert stored.items() == CHANGED and read_vectors(folder, "acme", stored, "words") is not None
