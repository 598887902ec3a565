"""Review late55a of calibration pools in a shared folder (`service.calibration.pools`): what a PUT that fails, or a
killed process, leaves in the folder. Real files in a temp folder, the tiny deterministic encoder of
tests/unit/test_calib55_pool_vectors.py."""

from __future__ import annotations

import errno
import os

import pytest

from service.calibration.pools import LEDGER, pool_path, read_ledger, read_pool, vectors_path
from tests.unit.test_calib55_pool_vectors import ITEMS, WordEncoder, put

CHANGED = [("Tea or coffee?", ["Tea.", "Coffee, with milk."]), ITEMS[1]]


def test_a_put_that_could_not_replace_a_damaged_pool_leaves_no_vectors_of_it(tmp_path, monkeypatch):
    """The pool there cannot be read (a cut write on the volume); a PUT replacing it fails at its pool's fsync (ENOSPC)
    after its vectors were written. Before (review calib55's check read the pool there, and its error was taken for
    "leave them"), the refused pool's vectors, its texts' embeddings, stayed beside the damaged file."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    put(folder, "acme", ITEMS, encoder)
    pool_path(folder, "acme").write_bytes(b'{"format": 1, "po')
    vectors_path(folder, "acme").unlink()
    real_fsync = os.fsync

    def full(fd):
        if ".json." in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):  # the pool's temp file, not the vectors'
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="space"):
        put(folder, "acme", CHANGED, encoder)
    monkeypatch.undo()
    assert pool_path(folder, "acme").read_bytes() == b'{"format": 1, "po'
    assert not vectors_path(folder, "acme").exists()


def test_a_put_removes_what_killed_writers_left_in_the_folder(tmp_path):
    """A process killed while it wrote the ledger, or the tenant's pool or vectors, leaves its temp file
    (`.ledger.<random>`, `.<sha256>.json.<random>`: that PUT's texts). Every writer of those files holds the folder's
    lock, so one found under it is a dead one's. Before, a `.ledger.*` was never removed, and a pool's only by the
    tenant's DELETE: a tenant that PUT again kept the killed PUT's texts on the volume."""
    folder, encoder = tmp_path / "pools", WordEncoder()
    put(folder, "acme", ITEMS, encoder)
    left = [folder / f".{LEDGER}.k1ll3d", folder / f".{pool_path(folder, 'acme').name}.k1ll3d",
            folder / f".{vectors_path(folder, 'acme').name}.k1ll3d"]
    for path in left:
        path.write_bytes(b"what a killed writer had written")
    other = folder / f".{pool_path(folder, 'globex').name}.k1ll3d"  # another tenant's: its own PUT or DELETE takes it
    other.write_bytes(b"globex's texts")
    stored = put(folder, "acme", CHANGED, encoder)
    assert read_pool(folder, "acme") == stored and read_ledger(folder).version == stored.version
    assert [p for p in left if p.exists()] == []
    assert other.exists()


def test_a_removal_is_noted_in_the_ledger_for_an_hour_not_until_the_next_put(tmp_path):
    """docs/admin.md (Tenants, step 3): the ledger notes when a tenant's removal began "for an hour". Before, a noted
    removal (the sha256 of the tenant's name) stayed until the next PUT of any tenant: for good in a folder no one PUT
    to again, another removal's note keeping it too. Now a note writes the ledger without those past the hour, and
    `forget_old_removals` (each pass of the tenant removals and of the deletion sweep) drops them."""
    import time

    from service.calibration.pools import REMOVAL_MEMORY_S, forget_old_removals, remove_pool

    folder, encoder = tmp_path / "pools", WordEncoder()
    put(folder, "acme", ITEMS, encoder)
    long_ago = time.time() - 2 * REMOVAL_MEMORY_S
    remove_pool(folder, "acme", removal_began=long_ago)
    assert forget_old_removals(folder) == 1
    assert read_ledger(folder).removed == {} and read_ledger(folder).version == 1
    remove_pool(folder, "initech", removal_began=long_ago)
    remove_pool(folder, "hooli", removal_began=time.time())  # the note of another removal drops the old ones
    assert list(read_ledger(folder).removed) == [pool_path(folder, "hooli").name]
    assert forget_old_removals(folder) == 0 and forget_old_removals(tmp_path / "none") == 0
