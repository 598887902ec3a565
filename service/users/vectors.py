"""The vectors of a deleted user's texts leave the embedding caches: at once when they can, else owed.

A DELETE cleans the cache the training jobs share and the old one under HOME (`forget_embedding_keys`). A
job's worker writes to the first one; stopped, paused or hung inside a transaction (a SIGSTOP, a debugger,
a node under memory pressure), it holds the cache's lock, and a DELETE that waited on it (60 s a cache,
twice in one DELETE) hung its request and then left the vectors behind for good (full run of session 45).
Now a DELETE waits `PURGE_WAIT_S` at most; the keys of what a busy cache kept are written to disk
(`OwedVectors`, one fsynced file per purge), and each pass of the unfinished DELETEs (at start and every
`deletion_sweep_s`) and each job's exit tries them again until the cache lets them go. While purges are owed (the
last try found a cache busy), a DELETE waits on no cache again: it tries each once and owes what a busy one kept
(before owed45 every DELETE of any tenant waited its 2 s a cache on the stopped worker, holding the store's maintenance
lease). Purges owed are counted by /metrics (`pluralign_vectors_owed`) and /health (`vectors_owed`), and a pass that
still cannot purge one owed for over `OWED_WARN_S` says so at WARNING.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from pluralign.embed.cache import CacheBusy, EmbeddingCache, default_cache_path, home_cache_path
from pluralign.files import fsync_dir, write_atomic

log = logging.getLogger("pluralign.service")

JOBS_CACHE = "the embedding cache the training jobs share"
HOME_CACHE = "the old embedding cache in the service account's home folder (~/.cache/pluralign)"
# how long a purge waits for a cache another process holds: a live job's worker holds the write lock for one
# batch (`pluralign.embed.cache.PUT_ROWS` rows, milliseconds); longer is a worker stopped or hung there
PURGE_WAIT_S = 2.0
OWED_FOLDER = "vectors-owed"  # under the data folder: the keys (32 bytes each) of vectors a busy cache kept
# a purge owed this long (seconds) names a worker that will not let go by itself (stopped, hung): a pass that still
# cannot purge it logs a WARNING (at most once this long), where before only a debug line said so
OWED_WARN_S = 600.0

Left = list[tuple[str, Path | None, Exception]]


def forget_embedding_keys(keys: Sequence[bytes], wait_s: float = PURGE_WAIT_S) -> Left:
    """Remove the vectors of a deleted user's texts, by their keys (`pluralign.embed.cache.text_key`), from the
    embedding cache the admin area's jobs fill (PAL/EM training embeds every snapshot row into it; a vector is keyed
    by its text's hash), and from the CLI's default cache in ~/.cache, which the service's jobs filled before their
    cache moved into the data folder (an upgraded install's). Nothing is created where there is no cache; no home
    folder (HOME unset) is no cache there. Every cache is tried, and each that could not be looked into or rewritten
    (damaged, its folder or HOME not readable; CacheBusy: another process held it for over `wait_s` seconds) is
    returned as (its name in words, its path when known, the error); [] when all were cleaned."""
    if not keys:
        return []
    try:
        jobs = default_cache_path()
    except ValueError:  # no home folder and no PLURALIGN_CACHE_DIR: the jobs had no cache there either
        jobs = None
    left: Left = []
    seen: set[Path] = set()
    for name, path in ((JOBS_CACHE, jobs), (HOME_CACHE, home_cache_path())):
        if path is None:
            continue
        try:
            if not path.is_file() or path.resolve() in seen:  # is_file raises for a folder it may not look into
                continue
            seen.add(path.resolve())
            cache = EmbeddingCache(path, wait_s=wait_s)
            try:
                cache.forget_keys(keys)
            finally:
                cache.close()
        except (OSError, ValueError, sqlite3.Error) as exc:
            left.append((name, path, exc))
    return left


class OwedVectors:
    """Purges of deleted users' vectors that a busy cache (`CacheBusy`) put off, one file of keys each in
    `folder`, on disk (fsynced, `write_atomic`) before `forget` returns: a crash or a stop still leaves
    them for `retry` at the next start. A file is named `*.keys` only once written whole: replicas share `folder`,
    and another's `retry` that read one half written (empty, just created) purged nothing and removed it."""

    def __init__(self, folder: Path, wait_s: float = PURGE_WAIT_S):
        self.folder = folder
        self.wait_s = wait_s
        self._lock = threading.Lock()  # a file is read by `retry` only once written whole
        self._warned_at = -OWED_WARN_S  # time.monotonic() of the last WARNING of a purge owed for long

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.keys")) if self.folder.is_dir() else []

    def owed(self) -> int:
        """How many purges are owed (files in `folder`); 0 when the folder cannot be read or is not there."""
        try:
            return len(self._files())
        except OSError:
            return 0

    def forget(self, keys: Sequence[bytes]) -> Left:
        """Remove the vectors of `keys` (`text_key`s) from the caches, waiting `wait_s` at most for each, or not at all
        while purges are owed (the last try found a cache busy: a worker stopped there may hold it for good; `retry`
        waits for it, once a pass); those a busy cache kept are owed (written here) and go at a later `retry`. Returns
        what could not be cleaned and is not owed: a damaged or unreadable cache, or a busy one whose keys could not
        be written (then that error)."""
        keys = list(dict.fromkeys(keys))
        wait_s = 0.0 if self.owed() else self.wait_s
        left = forget_embedding_keys(keys, wait_s)
        busy = [(name, path) for name, path, exc in left if isinstance(exc, CacheBusy)]
        if not busy:
            return left
        try:
            with self._lock:
                if not self.folder.is_dir():
                    self.folder.mkdir(parents=True, exist_ok=True)
                    fsync_dir(self.folder.parent)  # the folder's name on disk too
                write_atomic(self.folder / f"{uuid.uuid4().hex}.keys", b"".join(keys))
        except OSError as exc:  # a full disk: then they stay, as in a damaged cache, and the DELETE says so
            log.error("the vectors a busy embedding cache kept could not be noted for a later purge in %s: %s", self.folder, exc)
            return left
        for name, path in busy:
            log.warning("%s (%s) is busy (another process has held its lock for over %g s: a job's worker stopped or hung "
                        "there): the vectors of a deleted user's texts leave it at the next pass", name, path, wait_s)
        return [entry for entry in left if not isinstance(entry[2], CacheBusy)]

    def retry(self) -> int:
        """Try the owed purges again, all in one purge of their keys: a cache still busy is waited for once a pass
        (`wait_s`), not once an owed purge (each job's exit runs a pass, twice, under the job runner's lock). Every
        file read goes once every cache let the keys go; one that cannot be read stays (logged), the others are still
        tried. Returns the purges still owed."""
        with self._lock:
            files = self._files()
        unreadable, read, keys = 0, [], []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:  # unreadable (its folder's permissions changed): the others are still tried
                log.error("an owed purge of a deleted user's vectors could not be read (%s): %s", path, exc)
                unreadable += 1
                continue
            read.append(path)
            keys += [data[i : i + 32] for i in range(0, len(data) - len(data) % 32, 32)]
        left = forget_embedding_keys(keys, self.wait_s) if keys else []
        if left:
            self._say_still_owed(read, left)
            return unreadable + len(read)
        for path in read:
            path.unlink(missing_ok=True)
        return unreadable

    def _say_still_owed(self, read: list[Path], left: Left) -> None:
        """Log the purges a pass could not finish: at debug level, or at WARNING (at most once `OWED_WARN_S`) once the
        oldest has been owed for over `OWED_WARN_S`: a worker that will not let go by itself holds that cache."""
        try:
            age = time.time() - min(path.stat().st_mtime for path in read)
        except (OSError, ValueError):  # gone meanwhile (another replica's pass), or none read
            age = 0.0
        now = time.monotonic()
        loud = age > OWED_WARN_S and now - self._warned_at >= OWED_WARN_S
        if loud:
            self._warned_at = now
        for name, cache, exc in left:
            log.log(logging.WARNING if loud else logging.DEBUG,
                    "%d owed purges of deleted users' vectors from %s (%s) wait, the oldest for %.0f s: %s (find the process "
                    "holding it with `fuser %s` and end or continue it)", len(read), name, cache, age, exc, cache)
