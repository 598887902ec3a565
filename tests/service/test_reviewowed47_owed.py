"""Owed purges of deleted users' vectors (`service.users.vectors.OwedVectors`) against a damaged embedding cache whose
removal stops part way (review of owed47)."""

from __future__ import annotations

import errno
import os

from pluralign.embed.cache import text_key
from service.users.vectors import OwedVectors
from tests.service.test_reviewflaky45_owed import cache, write_owed  # noqa: F401 (the fixture)


def test_a_damaged_cache_whose_removal_stops_part_way_stays_owed_until_its_log_is_gone(cache, tmp_path, monkeypatch):  # noqa: F811
    """`discard_cache` removed the cache's file first, then its write-ahead log: a removal stopped in between (a disk
    error on the log, the service killed there) left the log, copies of pages with the deleted user's vector among them,
    and the next pass, finding no cache file, took the purge for done: the owed count fell to 0 and the log stayed for
    good. Now the logs go first and the file last, so until every one is gone the damaged file is there for the next
    pass to find and remove again."""
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    write_owed(folder / "a.owed", [cache.path], [cache.gone])
    cache.close()
    cache.path.write_bytes(b"\x00" * 8192)  # damaged: not a database
    wal = cache.path.with_name(cache.path.name + "-wal")
    wal.write_bytes(cache.gone * 64)
    unlink, failed = os.unlink, []

    def stops_at_the_log(path, *args, **kwargs):  # once: the disk refuses the log's removal (or the pass is killed there)
        if str(path) == str(wal) and not failed:
            failed.append(path)
            raise OSError(errno.EIO, "Input/output error", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", stops_at_the_log)
    owed = OwedVectors(folder, wait_s=0.05)
    assert owed.retry() == 1 and failed  # not done: the log is still there
    assert owed.retry() == 0 and owed.owed() == 0  # the next pass finds the damaged file again and finishes
    assert sorted(p.name for p in cache.path.parent.iterdir()) == []  # the log, the deleted user's vector in it, gone
    cache.__init__(cache.path)  # made again, empty, as the next job would (for the fixture's close)
    assert cache.get("enc", [cache.gone, text_key("a kept text")]) == {}


def test_a_damaged_cache_behind_a_link_goes_with_the_logs_beside_the_link_too(cache, tmp_path):  # noqa: F811
    """The cache moved onto another disk behind a symbolic link after a worker was killed in it: its write-ahead log
    and shared-memory index stayed beside the link (SQLite, which follows the link, writes new ones beside the file it
    leads to). Before owed47 a damaged cache's removal took the link with the logs beside it; owed47's took the file the
    link leads to with the logs beside that, and left these, the deleted user's vector in them, for good. Now both go;
    the link stays."""
    disk = tmp_path / "disk" / "embeddings.sqlite"
    disk.parent.mkdir()
    cache.close()
    cache.path.rename(disk)
    cache.path.symlink_to(disk)
    disk.write_bytes(b"\x00" * 8192)  # damaged: not a database
    beside = [cache.path.with_name(cache.path.name + suffix) for suffix in ("-wal", "-shm")]
    for log in beside:
        log.write_bytes(cache.gone * 64)
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    write_owed(folder / "a.owed", [cache.path], [cache.gone])
    assert OwedVectors(folder, wait_s=0.05).retry() == 0
    assert not any(log.exists() for log in beside) and list(disk.parent.iterdir()) == []
    assert cache.path.is_symlink()
    cache.__init__(cache.path)  # made again, empty, as the next job would (for the fixture's close)
