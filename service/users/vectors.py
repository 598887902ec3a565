"""The vectors of a deleted user's texts leave the embedding caches: at once when they can, else owed.

A DELETE cleans the cache the training jobs share and the old one under HOME (`forget_embedding_keys`). A
job's worker writes to the first one; stopped, paused or hung inside a transaction (a SIGSTOP, a debugger,
a node under memory pressure), it holds the cache's lock, and a DELETE waiting on it (60 s a cache,
twice in one DELETE) would hang its request and then leave the vectors behind for good.
A DELETE waits `PURGE_WAIT_S` at most; the keys of what a busy cache kept are written to disk
(`OwedVectors`, one fsynced file per purge), and each pass of the unfinished DELETEs (at start and every
`deletion_sweep_s`) and each job's exit tries them again until the cache lets them go. While purges are owed (the
last try found a cache busy), a DELETE waits on no cache again: it tries each once and owes what a busy one kept
(else every DELETE of any tenant would wait its 2 s a cache on the stopped worker, holding the store's maintenance
lease). Purges owed are counted by /metrics (`pluralign_vectors_owed`) and /health (`vectors_owed`), and a pass that
still cannot purge one owed for over `OWED_WARN_S` says so at WARNING. That count is the folder's files as listed at
start and at each pass, kept as this process writes and removes them (`OwedVectors.owed`): /health is answered on the
event loop, and a listing there grew with every purge put off (an object store down, a worker stopped for hours) while
every other tenant's request waited on it.

Each owed purge names the caches it is owed by (`OwedPurge`), so a pass tries those only (a file from before session
46, raw keys, is owed by both). A cache that a pass finds damaged (`CacheDamaged`: not a SQLite file, or a corrupt one)
is removed, with its write-ahead log, rather than kept: it is only a cache (removing it costs the next job the time to
embed again), and a copy set aside would keep the deleted users' vectors on disk; the purges owed by it are then done
(else the owed count would stay above 0 for ever, and the WARNING say to look for a process holding it). A purge's file
that cannot be read or decoded has lost its keys: the caches it may be owed by are emptied instead (`EmbeddingCache.clear`,
every vector overwritten), then it goes (kept, it would stay, and the owed count with it, for ever). A file a later
release wrote (after going back to this one) is left for that release, and counted: this one cannot tell what it owes,
so it empties the caches it may be owed by, as for one that cannot be read, once a file (`OwedVectors.retry`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import msgspec

from pluralign.embed.cache import (
    CacheBusy,
    CacheDamaged,
    EmbeddingCache,
    default_cache_path,
    discard_cache,
    home_cache_path,
)
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
# keys (32 bytes each) of owed purges a pass reads, merges and purges at a time (2 MiB; one file more at most): with a
# cache busy, a job's forget-at-exit note of millions of keys is owed as thousands of files, and a pass that read them
# all at once held every key, several times over, at each pass while it stayed busy
RETRY_KEYS = 65_536

Left = list[tuple[str, Path | None, Exception]]
# of `OwedPurge`, the `*.owed` files; `*.keys` files (raw 32-byte keys, owed by every cache) came before. A later version
# keeps `version` a top-level number: an earlier release leaves its files as they are (`OwedVectors.retry`)
OWED_VERSION = 1


class OwedPurge(msgspec.Struct):
    """One `*.owed` file of vectors-owed/: the keys (`text_key`s) of a deleted user's texts that the caches at `caches`
    (paths) kept, busy when the DELETE tried them."""

    version: int
    caches: list[str]
    keys: list[bytes]


class _OwedVersion(msgspec.Struct):
    """The version of a `*.owed` file, whatever else it holds (a later release's may hold fields this one does not know)."""

    version: int


_OWED_ENCODER = msgspec.json.Encoder()
_OWED_DECODER = msgspec.json.Decoder(OwedPurge)
_OWED_VERSION_DECODER = msgspec.json.Decoder(_OwedVersion)


def _caches() -> list[tuple[str, Path]]:
    """(name in words, path) of the caches a DELETE cleans (`forget_embedding_keys`), those that have a path here."""
    try:
        jobs = default_cache_path()
    except ValueError:  # no home folder and no PLURALIGN_CACHE_DIR: the jobs had no cache there either
        jobs = None
    return [(name, path) for name, path in ((JOBS_CACHE, jobs), (HOME_CACHE, home_cache_path())) if path is not None]


def _cache_name(path: Path) -> str:
    return next((name for name, known in _caches() if known == path), "an embedding cache")


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
    left: Left = []
    seen: set[Path] = set()
    for name, path in _caches():
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
    """Purges of deleted users' vectors that a busy cache (`CacheBusy`) put off, one file each in `folder` (`OwedPurge`,
    `*.owed`; `*.keys` from before session 46), on disk (fsynced, `write_atomic`) before `forget` returns: a crash or a
    stop still leaves them for `retry` at the next start. A file is named `*.owed` only once written whole: replicas
    share `folder`, and another's `retry` that read one half written (empty, just created) purged nothing and removed it.
    Made once a start, before the service serves: the files the last process left are counted then (`owed`)."""

    def __init__(self, folder: Path, wait_s: float = PURGE_WAIT_S):
        self.folder = folder
        self.wait_s = wait_s
        # a file is read by `retry` only once written whole; a listing (`_files`) and a file written or removed here
        # with its name added to or taken from `_names` come one after the other
        self._lock = threading.Lock()
        self._warned_at = -OWED_WARN_S  # time.monotonic() of the last WARNING of a purge owed for long
        self._later_done: set[Path] = set()  # the files a later release wrote whose caches this process emptied
        self._names: set[str] = set()  # what `owed` counts: the files' names as last listed, with those written and removed since
        try:
            self._files()
        except OSError:  # a folder that cannot be read: counted at the first pass that can (which logs why it cannot)
            pass

    def _files(self) -> list[Path]:
        """The owed purges' files, listed now; what `owed` counts from now on (called under `_lock`, or before any other
        thread has the object)."""
        files = sorted([*self.folder.glob("*.keys"), *self.folder.glob("*.owed")]) if self.folder.is_dir() else []
        self._names = {path.name for path in files}
        return files

    def owed(self) -> int:
        """How many purges are owed: the files in `folder` when it was last listed (as this was made, at each `retry`),
        with those this process wrote and removed since; 0 for a folder that is not there. Lists nothing (/health and
        /metrics read it, /health on the event loop): a file written or removed there by another process (a folder
        shared by hand, an operator) counts from the next pass (`deletion_sweep_s` at most)."""
        return len(self._names)

    def forget(self, keys: Sequence[bytes]) -> Left:
        """Remove the vectors of `keys` (`text_key`s) from the caches, waiting `wait_s` at most for each, or not at all
        while purges are owed (the last try found a cache busy: a worker stopped there may hold it for good; `retry`
        waits for it, once a pass); those a busy cache kept are owed (written here, naming that cache) and go at a later
        `retry`. Returns what could not be cleaned and is not owed: a damaged or unreadable cache, or a busy one whose
        keys could not be written (then that error)."""
        keys = list(dict.fromkeys(keys))
        wait_s = 0.0 if self.owed() else self.wait_s  # counted, not listed: each batch of a DELETE listed the folder
        left = forget_embedding_keys(keys, wait_s)
        busy = [(name, path) for name, path, exc in left if isinstance(exc, CacheBusy)]
        if not busy:
            return left
        purge = OwedPurge(version=OWED_VERSION, caches=[str(path) for _, path in busy], keys=keys)
        try:
            with self._lock:
                if not self.folder.is_dir():
                    self.folder.mkdir(parents=True, exist_ok=True)
                    fsync_dir(self.folder.parent)  # the folder's name on disk too
                name = f"{uuid.uuid4().hex}.owed"
                write_atomic(self.folder / name, _OWED_ENCODER.encode(purge))
                self._names.add(name)
        except OSError as exc:  # a full disk: then they stay, as in a damaged cache, and the DELETE says so
            log.error("the vectors a busy embedding cache kept could not be noted for a later purge in %s: %s", self.folder, exc)
            return left
        for name, path in busy:
            log.warning("%s (%s) is busy (another process has held its lock for over %g s: a job's worker stopped or hung "
                        "there): the vectors of a deleted user's texts leave it at the next pass", name, path, wait_s)
        return [entry for entry in left if not isinstance(entry[2], CacheBusy)]

    def retry(self) -> int:
        """Try the owed purges again, read and merged `RETRY_KEYS` keys at a time (one file more at most), each cache
        once a group with the keys it owes in it (a cache still busy is waited for once a pass, `wait_s`, not once an
        owed purge or a group: each job's exit runs a pass, twice, under the job runner's lock). A damaged cache is removed (`_discard`), which completes what it owed; the caches a file that cannot be
        read may be owed by are emptied (its keys are lost). Each file goes once every cache it names let its keys go. A
        file a later release wrote (`version` above `OWED_VERSION`) is left as it is, for that release, and the caches it
        may be owed by are emptied, once a file (`_done_for_later`): this one cannot tell which vectors it names, and the
        users it names were told their DELETE was done (kept, the caches would hold the vectors
        for as long as this release ran). Returns the purges still owed, a later release's among them."""
        with self._lock:
            files = self._files()
        later: dict[Path, int] = {}  # a later release's: its version
        failed: dict[Path, Exception] = {}  # a cache that failed is not tried again this pass (its files stay)
        still: list[Path] = []
        group: list[tuple[Path, list[Path], list[bytes] | None]] = []
        size = 0
        for path in files:  # read, merged and purged RETRY_KEYS keys at a time
            found = self._read(path)
            if found is None:  # another pass did it since the listing: out of the count
                self._counted_out(path)
            elif isinstance(found, int):
                later[path] = found
            else:
                group.append((path, *found))
                size += len(found[1] or ())
                if size >= RETRY_KEYS:
                    still += self._retry_group(group, {}, failed)
                    group, size = [], 0
        # None: every vector (a later release's file not done here yet)
        owed_by: dict[Path, set[bytes] | None] = {}
        if set(later) - self._later_done:
            owed_by = dict.fromkeys((cache for _, cache in _caches()), None)
        still += self._retry_group(group, owed_by, failed)
        self._done_for_later(later, failed)
        if failed:
            self._say_still_owed(still, [(_cache_name(cache), cache, exc) for cache, exc in failed.items()])
        return len(still) + len(later)

    def _retry_group(self, purges: list[tuple[Path, list[Path], list[bytes] | None]], owed_by: dict[Path, set[bytes] | None],
                     failed: dict[Path, Exception]) -> list[Path]:
        """Purge `purges` (path, caches, keys; keys None when lost), each cache of them (and of `owed_by`, the keys it
        owes already) once with all their keys, but one in `failed` (it failed this pass: not waited for again), which
        gains those that fail now; each file goes once every cache it names let its keys go. Returns the files still owed."""
        for _, caches, keys in purges:
            for cache in caches:
                if keys is None or (cache in owed_by and owed_by[cache] is None):
                    owed_by[cache] = None
                else:
                    owed_by.setdefault(cache, set()).update(keys)
        for cache, keys in owed_by.items():
            if cache not in failed and (exc := self._purge(cache, keys)) is not None:
                failed[cache] = exc
        still = [path for path, caches, _ in purges if any(cache in failed for cache in caches)]
        for path, caches, keys in purges:
            if path not in still and not self._remove(path, caches, keys):
                still.append(path)
        return still

    def _read(self, path: Path) -> tuple[list[Path], list[bytes] | None] | int | None:
        """(the caches, the keys) of the owed purge at `path`; keys None when it cannot be read or decoded (then it may
        be owed by any cache); None when it is gone (another pass, here or another replica's, did it since the listing:
        its keys were not lost, and emptying the caches for it would cost every tenant's next job its embeddings). An
        entry still there that reads as missing (a symbolic link to nothing) has lost its keys: unreadable, not gone
        (skipped, it stayed counted by `owed` for ever while `retry` said nothing was owed). Its version (an int) for a
        file a later release wrote (not taken for one that cannot be read: both caches emptied, and
        the file removed before that release could do it)."""
        try:
            data = path.read_bytes()
            if path.suffix == ".keys":  # before session 46: raw keys, owed by every cache
                return [cache for _, cache in _caches()], [data[i : i + 32] for i in range(0, len(data) - len(data) % 32, 32)]
            version = _OWED_VERSION_DECODER.decode(data).version
            if version > OWED_VERSION:
                return version
            if version != OWED_VERSION:
                raise ValueError(f"version {version}, this release writes and reads {OWED_VERSION}")
            purge = _OWED_DECODER.decode(data)
            return [Path(cache) for cache in purge.caches], purge.keys
        except (OSError, ValueError, msgspec.DecodeError) as exc:  # its permissions changed, a disk error, cut short
            if isinstance(exc, FileNotFoundError) and not os.path.lexists(path):  # gone; a link to nothing is still there
                return None
            log.debug("an owed purge of deleted users' vectors cannot be read (%s): %s", path, exc)
            return [cache for _, cache in _caches()], None

    def _purge(self, cache: Path, keys: set[bytes] | None) -> Exception | None:
        """Remove `keys` from `cache` (None: every vector); a damaged cache is removed (`_discard`). The error when it
        could not be done (busy, not readable), else None."""
        try:
            if not cache.is_file():  # no cache there (removed, never made): nothing of theirs in it
                return None
            found = EmbeddingCache(cache, wait_s=self.wait_s)
            try:
                if keys is None:
                    found.clear()
                else:
                    found.forget_keys(sorted(keys))
            finally:
                found.close()
        except CacheDamaged as exc:
            return self._discard(cache, exc)
        except (OSError, ValueError, sqlite3.Error) as exc:  # CacheBusy; its folder not readable; another kind of file
            return exc
        return None

    @staticmethod
    def _discard(cache: Path, damage: CacheDamaged) -> OSError | None:
        """Remove the damaged `cache` (with its write-ahead log: `discard_cache`), said once at WARNING; the OSError when it
        could not be removed."""
        try:
            discard_cache(cache)
        except OSError as exc:
            log.error("%s (%s) is damaged (%s) and could not be removed (%s): the owed purges of deleted users' vectors from "
                      "it wait until it is; remove it by hand", _cache_name(cache), cache, damage, exc)
            return exc
        log.warning("%s (%s) was damaged (%s) and has been removed, so the owed purges of deleted users' vectors from it are "
                    "done (a copy set aside would have kept those vectors). It is only a cache: the next job embeds again what "
                    "it needs (once slower); nothing else is lost. Damaged again soon: check the disk it is on",
                    _cache_name(cache), cache, damage)
        return None

    def _done_for_later(self, later: dict[Path, int], failed: dict[Path, Exception]) -> None:
        """Note the files a later release wrote (`later`: path -> version) as done here once this pass emptied the caches
        they may be owed by (none `failed`: else the next pass tries again), said at WARNING once a file."""
        if any(cache in failed for _, cache in _caches()):
            return
        for path, version in later.items():
            if path in self._later_done:
                continue
            self._later_done.add(path)
            log.warning("an owed purge of deleted users' vectors (%s) was written by a later release of pluralign (version %d; "
                        "this one reads %d and cannot tell which vectors it names): the caches it may be owed by (%s) were "
                        "emptied instead (only caches: the next job embeds again what it needs). It is left as it is, and "
                        "counted, for that release; staying on this one, remove it (each start empties the caches again while "
                        "it is there; docs/operations.md, 'Going back to an earlier version')", path, version, OWED_VERSION,
                        ", ".join(str(cache) for _, cache in _caches()) or "none here")

    def _counted_out(self, path: Path) -> None:
        with self._lock:  # not between a listing and its count (`_files`): one that listed it would count it again
            self._names.discard(path.name)

    def _remove(self, path: Path, caches: list[Path], keys: list[bytes] | None) -> bool:
        """Remove the owed purge's file at `path`, done, and count it out (`owed`); False (logged) when it cannot be."""
        try:
            with self._lock:  # removed and counted out between two listings, not across one (`_counted_out`)
                path.unlink(missing_ok=True)
                self._names.discard(path.name)
        except OSError as exc:
            log.error("an owed purge of deleted users' vectors is done but its file could not be removed (%s: %s); remove it "
                      "by hand", path, exc)
            return False
        if keys is None:
            log.warning("an owed purge of deleted users' vectors could not be read (%s), so its keys were lost: the caches it "
                        "may have been owed by (%s) were emptied instead, and it is done. They are only caches: the next job "
                        "embeds again what it needs (once slower)", path, ", ".join(map(str, caches)) or "none here")
        return True

    def _say_still_owed(self, still: list[Path], left: Left) -> None:
        """Log the purges a pass could not finish: at debug level, or at WARNING (at most once `OWED_WARN_S`) once the
        oldest has been owed for over `OWED_WARN_S`, with what to do for each cache's problem."""
        try:
            age = time.time() - min(path.stat().st_mtime for path in still)
        except (OSError, ValueError):  # gone meanwhile (another replica's pass), or none
            age = 0.0
        now = time.monotonic()
        loud = age > OWED_WARN_S and now - self._warned_at >= OWED_WARN_S
        if loud:
            self._warned_at = now
        for name, cache, exc in left:
            log.log(logging.WARNING if loud else logging.DEBUG,
                    "%d owed purges of deleted users' vectors from %s (%s) wait, the oldest for %.0f s: %s (%s)", len(still),
                    name, cache, age, exc, _advice(cache, exc))


def _advice(cache: Path | None, exc: Exception) -> str:
    """What the operator does about `exc`, the reason a purge owed by `cache` still waits."""
    if isinstance(exc, CacheBusy):
        return f"find the process holding it with `fuser {cache}` and end or continue it"
    if isinstance(exc, OSError):
        return f"this account cannot open it: check the permissions of {cache} and of its folder"
    return f"not an embedding cache this release can open: move {cache} away if it is not one"
