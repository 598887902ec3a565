"""Purges of deleted users' vectors that a busy embedding cache put off (`service.users.vectors.OwedVectors`, the
data folder's vectors-owed/): what a pass of them costs while the cache is still held, and that they finish once
it is free (review of session 45)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time

import numpy as np
import pytest

import service.users.vectors as vectors
from pluralign.embed.cache import EmbeddingCache, text_key
from service.users.vectors import OwedVectors


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The jobs' cache (PLURALIGN_CACHE_DIR), holding the vectors of a deleted user's text (`cache.gone`) and of a
    kept one (`cache.kept`); no old cache under HOME."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    made = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    made.gone, made.kept = text_key("a deleted user's text"), text_key("a kept text")
    made.put("enc", [made.gone, made.kept], np.ones((2, 4), np.float32))
    yield made
    made.close()


@contextlib.contextmanager
def held(path):
    """A job's worker stopped inside a write of the cache at `path` for the block's length (then it lets go)."""
    worker = sqlite3.connect(path, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")
    try:
        yield worker
    finally:
        worker.rollback()
        worker.close()


def write_owed(path, caches, keys) -> None:
    """An owed purge of `keys` by the caches at `caches` at `path`, as this release writes one."""
    path.write_bytes(vectors._OWED_ENCODER.encode(vectors.OwedPurge(version=vectors.OWED_VERSION, caches=list(map(str, caches)),
                                                                     keys=keys)))


def test_a_pass_over_many_owed_purges_waits_on_a_busy_cache_once_not_once_a_purge(tmp_path, monkeypatch):
    """Each DELETE made while a stopped worker held the jobs' cache owes a purge (a file). A pass (each job's exit,
    twice, under the job runner's lock; each unfinished-DELETEs pass) tried them one by one, waiting `wait_s` on the
    held cache for each: 2 s x N DELETEs x 2 at every job's exit, with no job of any tenant started, cancelled or
    deleted meanwhile. Now one pass purges them all at once: one wait, then each file goes once the cache is free."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no old cache under HOME: only the jobs' one is tried
    users = [[f"user {u}'s text {i}" for i in range(3)] for u in range(6)]
    kept = [f"a kept text {i}" for i in range(4)]
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    keys = [text_key(t) for texts in users for t in texts] + [text_key(t) for t in kept]
    cache.put("enc", keys, np.ones((len(keys), 4), np.float32))
    owed = OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05)
    tries: list[int] = []

    class Counted(EmbeddingCache):
        def forget_keys(self, keys):
            tries.append(len(keys))
            return super().forget_keys(keys)

    with held(cache.path):  # a job's worker stopped inside a write
        for texts in users:  # one DELETE each: owed, not warned of
            assert owed.forget([text_key(t) for t in texts]) == []
        assert owed.owed() == len(users)
        monkeypatch.setattr(vectors, "EmbeddingCache", Counted)
        assert owed.retry() == len(users)  # still held: every purge still owed, none lost
        assert tries == [3 * len(users)], tries  # one purge of all their keys: one wait on the held cache
        assert owed.owed() == len(users)
    assert owed.retry() == 0  # free: all go at once
    assert owed.owed() == 0
    assert sorted(cache.get("enc", keys)) == sorted(text_key(t) for t in kept)
    cache.close()


def test_an_owed_purge_that_cannot_be_read_empties_the_caches_and_goes(cache, tmp_path, monkeypatch, caplog):
    """A file of vectors-owed/ that cannot be read (a disk error) has lost its keys: it stayed, logged at each pass, and
    the owed count with it, for ever (session 45). Now the caches it may be owed by are emptied (every vector overwritten:
    it is only a cache) and it goes, said once at WARNING; a readable one beside it is purged and goes as before."""
    import errno
    from pathlib import Path

    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    (folder / "a.keys").write_bytes(cache.gone)  # as session 45 wrote them: raw keys
    (folder / "b.keys").write_bytes(cache.gone)
    read_bytes = Path.read_bytes

    def disk_error(path):
        if path.name == "b.keys":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", disk_error)
    owed = OwedVectors(folder, wait_s=0.05)
    with caplog.at_level(logging.WARNING, "pluralign.service"):
        assert owed.retry() == 0 and owed.owed() == 0
    assert list(folder.iterdir()) == []
    assert cache.get("enc", [cache.gone, cache.kept]) == {}  # emptied: the kept vector is embedded again when needed
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "b.keys" in warned[0] and "emptied" in warned[0] and str(cache.path) in warned[0], warned


@pytest.mark.parametrize("damage", ["not a database", "corrupt"])
def test_a_damaged_cache_is_removed_so_the_purges_it_owes_are_done(cache, tmp_path, caplog, damage):
    """A purge owed by a busy cache, which is then found damaged (a file that is not a database, or a corrupt one): it
    stayed owed for ever, the gauge above 0, and the WARNING said to find the process holding it with `fuser` (session
    45). Now the damaged cache is removed with its write-ahead log (it is only a cache: a copy set aside would keep the
    deleted user's vectors), said once at WARNING, and the purges it owed are done."""
    owed = OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05)
    with held(cache.path):
        assert owed.forget([cache.gone]) == [] and owed.owed() == 1
    cache.put("enc", [text_key(f"text {i}") for i in range(300)], np.ones((300, 384), np.float32))  # pages to damage
    cache.close()
    if damage == "not a database":
        cache.path.write_bytes(b"\x00" * 8192)
    else:
        with open(cache.path, "r+b") as f:  # the header whole, a page of the table in the middle overwritten
            f.seek(cache.path.stat().st_size // 2)
            f.write(b"\xff" * 8192)
    # what a worker killed mid-write leaves beside it: its write-ahead log (copies of pages, the deleted user's vector
    # among them) and shared-memory index, which a removal of the file alone would leave on disk
    for suffix in ("-wal", "-shm"):
        cache.path.with_name(cache.path.name + suffix).write_bytes(cache.gone * 64)
    caplog.clear()  # the DELETE's "is busy" line
    with caplog.at_level(logging.DEBUG, "pluralign.service"):
        assert owed.retry() == 0 and owed.owed() == 0
        assert owed.retry() == 0
    assert sorted(p.name for p in cache.path.parent.iterdir()) == []
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(cache.path) in warned[0] and "removed" in warned[0] and "fuser" not in warned[0], warned
    cache.__init__(cache.path)  # made again, empty, as the next job would (for the fixture's close)


def test_an_owed_purge_names_the_cache_it_is_owed_by(cache, tmp_path, caplog):
    """The files did not say which cache kept their keys: every pass tried both, and a damaged old cache under HOME (which
    the DELETE had warned of) kept every purge owed by the busy jobs' cache owed for ever. Now each file names the caches
    it is owed by, and a pass tries those only."""
    import json

    home = tmp_path / "home" / ".cache" / "pluralign" / "embeddings.sqlite"
    home.parent.mkdir(parents=True)
    home.write_bytes(b"a damaged old cache")
    owed = OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05)
    with held(cache.path):
        left = owed.forget([cache.gone])
        assert [(name, path) for name, path, _ in left] == [(vectors.HOME_CACHE, home)]  # the DELETE's warning, as before
        (path,) = owed.folder.iterdir()
        assert json.loads(path.read_bytes())["caches"] == [str(cache.path)]
    with caplog.at_level(logging.DEBUG, "pluralign.service"):
        assert owed.retry() == 0 and owed.owed() == 0
    assert sorted(cache.get("enc", [cache.gone, cache.kept])) == [cache.kept]
    assert home.read_bytes() == b"a damaged old cache"  # not this purge's cache: left to the operator the DELETE told


def test_a_delete_while_purges_are_owed_does_not_wait_on_the_busy_cache_and_a_free_one_purges_at_once(tmp_path, monkeypatch):
    """While a stopped worker held the jobs' cache, every DELETE of any tenant waited its `wait_s` on it (2 s a cache,
    holding the store's maintenance lease all tenants share), though the last try had found it busy already (owed45).
    Now a DELETE made while purges are owed tries each cache without waiting and owes what a busy one kept; with the
    cache free again, a DELETE purges at once as before, and the pass still finishes what was owed."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ann, bob, cid, kept = ([text_key(f"{who}'s text {i}") for i in range(2)] for who in ("ann", "bob", "cid", "kept"))
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    cache.put("enc", ann + bob + cid + kept, np.ones((8, 4), np.float32))
    owed = OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05)
    waits: list[float] = []

    class Waited(EmbeddingCache):
        def __init__(self, path, wait_s):
            waits.append(wait_s)
            # SQLite's busy wait is C code no test timeout can cut: a DELETE about to wait an hour fails here instead
            assert wait_s < 60, f"a DELETE waits {wait_s:g} s on the cache a stopped worker holds"
            super().__init__(path, wait_s)

    monkeypatch.setattr(vectors, "EmbeddingCache", Waited)
    with held(cache.path):
        assert owed.forget(ann) == [] and owed.owed() == 1  # found busy after its wait: owed
        owed.wait_s = 3600.0  # as long as the worker stays stopped: a DELETE that waited would not answer
        assert owed.forget(bob) == [] and owed.owed() == 2  # owed at once, not waited for
        assert waits == [0.05, 0.0], waits
    owed.wait_s = 0.05
    assert owed.forget(cid) == [] and owed.owed() == 2  # the cache is free: purged at once, nothing more owed
    assert sorted(cache.get("enc", ann + bob + cid)) == sorted(ann + bob)
    assert owed.retry() == 0 and owed.owed() == 0  # the next pass: what was owed goes
    assert sorted(cache.get("enc", ann + bob + cid + kept)) == sorted(kept)
    cache.close()


def test_a_pass_that_still_cannot_purge_one_owed_for_long_warns_once_a_while(cache, tmp_path, caplog):
    """A purge owed for good (a worker hung forever) showed only at debug level. Now a pass that finds the oldest owed
    for over `OWED_WARN_S` says so at WARNING, naming the cache, and not again at the next pass (every job's exit)."""
    owed = OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05)
    with held(cache.path):
        assert owed.forget([cache.gone]) == []
        with caplog.at_level(logging.DEBUG, "pluralign.service"):
            caplog.clear()
            assert owed.retry() == 1  # owed a moment: not yet a warning
            assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
            (path,) = owed.folder.iterdir()
            long_ago = time.time() - vectors.OWED_WARN_S - 60
            os.utime(path, (long_ago, long_ago))
            assert owed.retry() == 1
            warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warned) == 1 and str(cache.path) in warned[0] and "fuser" in warned[0], warned
            caplog.clear()
            assert owed.retry() == 1
            assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # once a while, not once a pass
    assert owed.retry() == 0


def test_an_owed_purge_is_never_seen_half_written_by_another_replicas_pass(cache, tmp_path, monkeypatch):
    """Replicas share the data folder's vectors-owed/. A DELETE's owed purge was created under its final name
    (`*.keys`, empty) and then written: another replica's pass between the two read no keys, found nothing to purge
    and removed the file, and the keys were then written into the removed file: the DELETE answered, nothing owed,
    and the user's vectors stayed in the cache for good. Now the file is named `*.keys` only once written whole."""
    import pluralign.files as files

    gone, kept = cache.gone, cache.kept
    folder = tmp_path / "data" / "vectors-owed"
    this, other = OwedVectors(folder, wait_s=0.05), OwedVectors(folder, wait_s=0.05)  # two replicas
    real_open = os.open
    passes: list[int] = []

    def open_then_other_pass(path, *args, **kwargs):  # the other replica's pass right after a file there is opened
        fd = real_open(path, *args, **kwargs)
        if str(path).startswith(str(folder)) and not passes:
            passes.append(other.retry())
        return fd

    with held(cache.path):
        monkeypatch.setattr(files.os, "open", open_then_other_pass)
        assert this.forget([gone]) == []  # owed
        monkeypatch.setattr(files.os, "open", real_open)
        assert passes, "no file was opened in vectors-owed/"
        assert this.owed() == 1  # the purge is still owed, not lost to the other replica's pass
    assert other.retry() == 0
    assert sorted(cache.get("enc", [gone, kept])) == [kept]


def test_an_owed_purge_another_pass_finished_meanwhile_does_not_empty_the_caches(cache, tmp_path, monkeypatch, caplog):
    """Two passes over vectors-owed/ run at once (another replica's; in one service, a job's exit beside the
    unfinished-DELETEs pass): one lists a file the other then purges and removes. Its read found the file gone, which
    the pass took for a file that cannot be read: it emptied every cache (each vector another tenant's job had embedded,
    embedded again at the next training) and warned that the purge's keys were lost. A file gone meanwhile was done by
    the other pass: this one leaves the caches as they are and says nothing."""
    folder = tmp_path / "data" / "vectors-owed"
    this, other = OwedVectors(folder, wait_s=0.05), OwedVectors(folder, wait_s=0.05)  # two replicas (or two passes)
    with held(cache.path):
        assert this.forget([cache.gone]) == [] and this.owed() == 1
    files = OwedVectors._files

    def listed_then_other_pass(self):  # the other pass runs between this one's listing and its read
        listed = files(self)
        assert other.retry() == 0
        return listed

    monkeypatch.setattr(this, "_files", listed_then_other_pass.__get__(this))
    caplog.clear()  # the DELETE's "is busy" line
    with caplog.at_level(logging.WARNING, "pluralign.service"):
        assert this.retry() == 0 and this.owed() == 0
    assert sorted(cache.get("enc", [cache.gone, cache.kept])) == [cache.kept]  # the deleted user's gone, the rest kept
    assert [r.getMessage() for r in caplog.records] == []


def test_an_owed_purge_written_before_session_46_is_done_in_both_caches(cache, tmp_path):
    """An install upgraded with purges still owed: vectors-owed/ holds session 45's `*.keys` files (raw 32-byte keys,
    not naming their caches), which are owed by both caches. A pass purges their keys from the jobs' cache and the old
    one under HOME, keeps every other vector, and removes the file; the owed count falls to 0."""
    home = EmbeddingCache(tmp_path / "home" / ".cache" / "pluralign" / "embeddings.sqlite")
    other = text_key("another deleted user's text")
    home.put("enc", [cache.gone, other, cache.kept], np.ones((3, 4), np.float32))
    cache.put("enc", [other], np.ones((1, 4), np.float32))
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    (folder / "a.keys").write_bytes(cache.gone)  # as session 45 wrote them
    (folder / "b.keys").write_bytes(other + b"cut short")  # a partial key at the end is no key
    owed = OwedVectors(folder, wait_s=0.05)
    assert owed.owed() == 2
    assert owed.retry() == 0 and owed.owed() == 0 and list(folder.iterdir()) == []
    for kept_in in (cache, home):
        assert sorted(kept_in.get("enc", [cache.gone, other, cache.kept])) == [cache.kept], kept_in.path
    home.close()


def test_an_owed_purge_whose_entry_is_a_link_to_nothing_is_not_counted_for_ever(cache, tmp_path, caplog):
    """An entry of vectors-owed/ that is still there but whose keys are gone (a symbolic link to a file that no longer
    exists: a data folder restored or moved with links) has lost its keys as a file that cannot be read has: the caches
    are emptied and it goes. Since the review of session 46 a read's FileNotFoundError was taken for a file another pass
    had removed: the pass skipped it and reported nothing owed (`retry()` 0) while `owed()` (/health's `vectors_owed`,
    /metrics) counted it for ever, and every later DELETE waited on no busy cache (it thinks purges are owed)."""
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    (folder / "a.owed").symlink_to(tmp_path / "elsewhere" / "a.owed")
    owed = OwedVectors(folder, wait_s=0.05)
    assert owed.owed() == 1
    with caplog.at_level(logging.WARNING, "pluralign.service"):
        assert owed.retry() == 0
    assert owed.owed() == 0 and list(folder.iterdir()) == []
    assert cache.get("enc", [cache.gone, cache.kept]) == {}  # its keys lost: emptied, as for a file that cannot be read
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "a.owed" in warned[0] and "emptied" in warned[0], warned


def test_an_owed_purge_a_later_release_wrote_is_left_for_it_and_counted_its_caches_emptied_once(cache, tmp_path, caplog):
    """A release rolled back to on a data folder where a later one owes purges: a `*.owed` file of a later `version`
    (with a field this release does not know) was taken for one that cannot be read, so a pass emptied both caches
    and removed the file, the owed count falling to 0 though the later release had not done it. Since owed47 it is left
    as it is and counted, one WARNING a file. Until review owed47 the caches were kept too: the vectors of the users the
    later release deleted stayed in them for as long as this release ran (their DELETEs had answered 200, with no
    warning). Now the caches it may be owed by are emptied, as for a file whose keys are lost, once a file (not again
    each pass: what jobs embed since is kept); a purge this release wrote beside it is still done."""
    import json

    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    later = {"version": vectors.OWED_VERSION + 1, "caches": [str(cache.path)], "keys": [], "owed_since": 1.7e9}
    (folder / "later.owed").write_text(json.dumps(later))
    mine = text_key("a user deleted under this release")
    cache.put("enc", [mine], np.ones((1, 4), np.float32))
    write_owed(folder / "mine.owed", [cache.path], [mine])
    owed = OwedVectors(folder, wait_s=0.05)
    with caplog.at_level(logging.WARNING, "pluralign.service"):
        assert owed.retry() == 1 and owed.owed() == 1
        assert cache.get("enc", [cache.gone, cache.kept, mine]) == {}  # the later release's deleted user's vectors gone
        cache.put("enc", [cache.kept], np.ones((1, 4), np.float32))  # a job embeds again
        assert owed.retry() == 1
    assert [p.name for p in folder.iterdir()] == ["later.owed"] and json.loads((folder / "later.owed").read_text()) == later
    assert sorted(cache.get("enc", [cache.kept])) == [cache.kept]  # emptied once, not again each pass
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "later.owed" in warned[0] and "later release" in warned[0] and "emptied" in warned[0], warned


def test_a_damaged_cache_behind_a_link_is_removed_where_it_is_not_only_its_link(cache, tmp_path):
    """The jobs' cache kept on another disk: PLURALIGN_CACHE_DIR's embeddings.sqlite is a symbolic link to it (SQLite
    opens the file the link leads to and writes its logs beside that one, so a DELETE's purge through the link reaches
    it). Found damaged by an owed pass, it was 'removed' by unlinking the link alone: the file, a deleted user's vector
    in it and in its write-ahead log, stayed on disk, and no later purge could find it. Now the file the link leads to
    goes, with its logs; the link stays, for the next job to make the cache again there."""
    disk = tmp_path / "disk" / "embeddings.sqlite"
    disk.parent.mkdir()
    cache.close()
    cache.path.rename(disk)
    cache.path.symlink_to(disk)
    cache.__init__(cache.path)
    other = text_key("another deleted user's text")
    cache.put("enc", [other], np.ones((1, 4), np.float32))
    assert OwedVectors(tmp_path / "data" / "vectors-owed", wait_s=0.05).forget([other]) == []  # through the link
    assert sorted(EmbeddingCache(disk).get("enc", [cache.gone, other, cache.kept])) == sorted([cache.gone, cache.kept])
    cache.close()
    disk.write_bytes(b"\x00" * 8192)  # damaged: not a database
    disk.with_name(disk.name + "-wal").write_bytes(cache.gone * 64)
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    write_owed(folder / "a.owed", [cache.path], [cache.gone])
    owed = OwedVectors(folder, wait_s=0.05)
    assert owed.retry() == 0 and owed.owed() == 0
    assert list(disk.parent.iterdir()) == []  # the file and its log, the deleted user's vector in both, gone
    assert cache.path.is_symlink()  # the operator's link kept: the cache is made again on that disk
    cache.__init__(cache.path)  # made again, empty, as the next job would (for the fixture's close)
    assert disk.is_file() and cache.get("enc", [cache.gone, cache.kept]) == {}


def test_the_owed_count_lists_no_folder_and_is_the_folders_after_a_restart_and_at_each_pass(cache, tmp_path, monkeypatch):
    """ops62: `owed()` (/health's `vectors_owed` and /metrics', read on the event loop) listed vectors-owed/ at each call.
    Now the folder is counted when an `OwedVectors` is made (at start, before the service serves) and at each pass, and
    the count kept as this process writes and removes files: a read lists nothing. A restart counts what the last
    process left; a file another process wrote there (a folder shared by hand) is counted from this one's next pass."""
    from tests.service.test_ops60_health_readers import listings_of

    folder = tmp_path / "data" / "vectors-owed"
    first = OwedVectors(folder, wait_s=0.05)
    with held(cache.path):  # a job's worker stopped inside a write: each DELETE's purge is owed
        assert first.forget([cache.gone]) == [] and first.forget([text_key("bob's text")]) == []
        restarted = OwedVectors(folder, wait_s=0.05)  # the next start (`Runtime.build`) on the same data folder
        with listings_of(monkeypatch, folder) as listed:
            assert first.owed() == 2 and restarted.owed() == 2 and restarted.owed() == 2
        assert listed[0] == 0, f"{listed[0]} listings of the owed purges' folder for three reads of the count"
        assert first.forget([text_key("cid's text")]) == []  # the other process (or the old one, still stopping) owes one more
        assert restarted.owed() == 2  # not seen until this one's next pass lists the folder
        assert restarted.retry() == 3 and restarted.owed() == 3  # still held: all three owed
    assert restarted.retry() == 0 and restarted.owed() == 0 and list(folder.iterdir()) == []
    assert first.owed() == 3  # the other's count: until its own next pass
    assert first.retry() == 0 and first.owed() == 0
    assert sorted(cache.get("enc", [cache.gone, cache.kept])) == [cache.kept]


def test_a_pass_purges_the_owed_keys_a_bounded_number_at_a_time_and_waits_on_a_busy_cache_once(cache, tmp_path,
                                                                                                monkeypatch):
    """review ops62: a job's exit purges its forget-at-exit note 8,192 keys at a time, but with the cache busy each of
    those reads is an owed purge, and the pass right after (and every pass while it stays busy) read every owed file and
    merged all their keys at once: a note of 300,000 keys held ~50 MiB there. Now a pass holds `RETRY_KEYS` at most
    (2 here) beyond one file, and still tries a busy cache once (its files stay), not once a group."""
    monkeypatch.setattr(vectors, "RETRY_KEYS", 2)
    folder = tmp_path / "data" / "vectors-owed"
    folder.mkdir(parents=True)
    theirs = [text_key(f"user {i}'s text") for i in range(6)]
    cache.put("enc", theirs, np.ones((6, 4), np.float32))
    for i in range(3):  # three chunks of a note a busy cache put off, 2 keys each (with the deleted user's for the last)
        write_owed(folder / f"{i}.owed", [cache.path], [*theirs[2 * i : 2 * i + 2], *([cache.gone] if i == 2 else [])])
    owed = OwedVectors(folder, wait_s=0.05)
    largest, tries = [0], [0]
    real = EmbeddingCache.forget_keys

    def counted(self, keys):
        largest[0], tries[0] = max(largest[0], len(keys)), tries[0] + 1
        return real(self, keys)

    monkeypatch.setattr(EmbeddingCache, "forget_keys", counted)
    with held(cache.path):
        assert owed.retry() == 3 and owed.owed() == 3
    assert tries[0] == 1, f"a pass tried the busy cache {tries[0]} times"
    assert owed.retry() == 0 and owed.owed() == 0 and list(folder.iterdir()) == []
    assert largest[0] <= 3, f"a pass purged {largest[0]} owed keys at once"
    assert cache.get("enc", [*theirs, cache.gone, cache.kept]).keys() == {cache.kept}
