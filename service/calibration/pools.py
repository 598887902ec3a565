"""A tenant's calibration pool: the prompts, with 2-8 answers each, that `POST /v1/users/{id}/next-comparison` asks a
user about when its request sends no `pool` of its own (docs/api.md, "A stored calibration pool").

One file per tenant, `<pools folder>/<sha256 of the tenant>.json` (`CalibrationPool`, msgspec JSON,
`format` POOL_FORMAT), written whole (temp file, fsync, rename, fsync of the folder: `pluralign.files.write_atomic`),
so a crash in the middle of a PUT leaves the pool before it or the new one, never part of either; removed by the
tenant's removal (`service.tenants`). The pools folder is `Settings.calibration_pools_path`: `<data folder>/calibration-pools`,
or PLURALIGN_CALIBRATION_POOLS_DIR, a folder the replicas share (writers take turns under `folder_lock`, which reaches
every pod of a lock-forwarding NFSv4 volume as for PLURALIGN_PAL_DIR; readers read the file at each request). The file is named by a hash so a tenant's name is never a path. It is the
tenant's, no user's: a user's export and DELETE leave it alone.

With several replicas behind a load balancer:
- each stored pool carries a `version` the folder gives it: its `LEDGER` (`PoolsLedger`, msgspec JSON) holds the last
  one given, read and bumped under the folder's lock at each PUT, so the PUT that wrote last is the one stored, whatever
  the clocks of the replicas that took them (by the clocks, a PUT whose replica's clock ran behind would be answered 200
  and dropped, the pool before having "arrived later"). Versions are never given twice, a DELETE between them or not;
- the pool's text vectors are stored beside it, `<sha256 of the tenant>.vectors` (`StoredVectors`, msgspec MessagePack,
  `format` VECTORS_FORMAT, with the pool's version and digest and the encoder's id), so a replica that did not take the
  PUT reads them instead of embedding every text (`service.calibration.vectors`);
- a tenant's removal notes in the ledger when it began (`PoolsLedger.removed`, kept REMOVAL_MEMORY_S): a PUT whose key
  was checked before that stores nothing (its clock is not compared with a later PUT's to keep it from replacing
  the pool of the tenant made again).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, folder_lock, fsync_dir, write_atomic

log = logging.getLogger("pluralign.calibration")
POOL_FORMAT = 1  # the file's schema: a reader refuses another one by its number (`other_schema`)
VECTORS_FORMAT = 1  # a `.vectors` file's schema: another one is not read (the texts embedded again)
LEDGER = "ledger"  # the pools folder's `PoolsLedger` (no `.json`: `adopt_own_pools` takes every `*.json` for a pool)
LEDGER_FORMAT = 1
# how long a tenant's removal is remembered for PUTs whose key was checked before it began (longer than any request)
REMOVAL_MEMORY_S = 3600.0


class CalibrationItem(Persisted, frozen=True):
    prompt: str
    answers: list[str]  # 2 to 8, as a request's `pool` item


class CalibrationPool(Persisted, kw_only=True, frozen=True):
    """A tenant's stored calibration pool, as `GET /v1/calibration-pool` shows it."""

    format: int = POOL_FORMAT
    pool: list[CalibrationItem]
    updated_at: float  # unix seconds: when the key of the PUT that stored it was checked (a removal begun later removes it)
    # given by the pools folder (`PoolsLedger`), larger for each pool stored there: the order of PUTs (0: stored
    # by a release that gave no versions)
    version: int = 0

    def items(self) -> list[tuple[str, list[str]]]:
        """(prompt, answers) of each item, in stored order: what `next_comparison` takes as a pool."""
        return [(item.prompt, list(item.answers)) for item in self.pool]

    def texts(self) -> list[str]:
        """Every text of the pool in the order its vectors are stored (`StoredVectors`): each prompt, then each answer of
        each item, in stored order (N = items + answers)."""
        return [*(item.prompt for item in self.pool), *(a for item in self.pool for a in item.answers)]

    def digest(self) -> str:
        """The sha256 (hex) of the pool's items as stored: which texts a `StoredVectors` holds the vectors of."""
        return hashlib.sha256(msgspec.json.encode(self.pool)).hexdigest()


class StoredVectors(Persisted, kw_only=True, frozen=True):
    """The vectors of a stored pool's texts (`CalibrationPool.texts`), in `<sha256 of the tenant>.vectors` beside it."""

    format: int = VECTORS_FORMAT
    version: int  # the pool's (`CalibrationPool.version`)
    digest: str  # the pool's (`CalibrationPool.digest`): vectors of other texts are never read for these
    encoder: str  # `pluralign.embed.cache.encoder_cache_id` of the encoder that embedded them
    dim: int
    vectors: bytes  # (N, dim) float32, little-endian, row i the vector of `texts()[i]`

    def array(self, n: int) -> np.ndarray | None:
        """The (n, dim) float32 vectors, or None when the file holds another number of them."""
        if self.dim <= 0 or len(self.vectors) != n * self.dim * 4:
            return None
        return np.frombuffer(self.vectors, dtype="<f4").reshape(n, self.dim).astype(np.float32)


class PoolsLedger(Persisted, kw_only=True):
    """What the pools folder orders its PUTs by, in its file LEDGER (read and written under its lock)."""

    format: int = LEDGER_FORMAT
    version: int = 0  # the last `CalibrationPool.version` given in this folder
    # pool file name -> when a removal of its tenant began (unix seconds, the removal's replica's clock), REMOVAL_MEMORY_S
    removed: dict[str, float] = msgspec.field(default_factory=dict)


_Versioned = TypeVar("_Versioned", bound=Persisted)  # a file of the pools folder: `CalibrationPool`, `PoolsLedger`
LEDGER_NAMED = "the calibration pools ledger"  # as a request's 503 and /health name it (`CalibrationPoolUnreadable.what`)
POOL_NAMED = "the tenant's calibration pool"


class CalibrationPoolUnreadable(RuntimeError):
    """The tenant's pool file, or the pools folder's ledger, is there but cannot be read (damaged, another release's
    format): its message names the file, for the log. Never taken as "no pool": `{}` would then ask other users' stored
    comparisons instead. `what`: which of the two, without its path (LEDGER_NAMED, POOL_NAMED), as a request's answer
    names it (`service.errors.storage_failure_of`: a 503 `storage_unavailable`); `where`: the file."""

    def __init__(self, message: str, what: str, where: Path):
        super().__init__(message)
        self.what, self.where = what, str(where)


def pool_path(folder: Path, tenant: str) -> Path:
    """Where `tenant`'s calibration pool is kept in the pools folder `folder` (`Settings.calibration_pools_path`): named
    by the sha256 (hex) of the tenant's name."""
    return folder / f"{hashlib.sha256(tenant.encode()).hexdigest()}.json"


def vectors_path(folder: Path, tenant: str) -> Path:
    """Where the vectors of `tenant`'s calibration pool are kept (`StoredVectors`): beside the pool, `<sha256>.vectors`."""
    return pool_path(folder, tenant).with_suffix(".vectors")


def read_vectors(folder: Path, tenant: str, pool: CalibrationPool, encoder: str) -> np.ndarray | None:
    """The (N, dim) float32 vectors of `pool`'s texts (`CalibrationPool.texts`) stored beside it by the encoder whose
    `encoder_cache_id` is `encoder`, or None where there are none for this version of the pool: no file (a pool stored
    by a release that stored none, a crash between the two files), one of another version or digest (a PUT writing now),
    another encoder's (a rolling change of PLURALIGN_ENCODER), another format, a damaged file (a WARNING naming it).
    The caller then embeds the texts itself. Raises OSError (other than a missing file) as it comes."""
    path = vectors_path(folder, tenant)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        if msgspec.msgpack.decode(data, type=dict).get("format") != VECTORS_FORMAT:
            return None
        stored = msgspec.msgpack.decode(data, type=StoredVectors)
    except DECODE_ERRORS as exc:
        log.warning("%s is not a calibration pool's vectors (damaged?), its texts embedded again: %s", path, exc)
        return None
    if (stored.version, stored.digest, stored.encoder) != (pool.version, pool.digest(), encoder):
        return None
    return stored.array(len(pool.texts()))


def keep_vectors(folder: Path, tenant: str, pool: CalibrationPool, encoder: str, vectors: np.ndarray) -> bool:
    """Store `vectors` ((N, dim) of `pool.texts()`, embedded by `encoder`, an `encoder_cache_id`) beside the tenant's
    pool, unless that pool is no longer `pool` (replaced or removed meanwhile) or vectors of it are there already:
    a replica that embedded a pool stored without them (by an older release) spares the others. Whether it wrote.
    Takes the folder's lock. Raises OSError as it comes."""
    with folder_lock(folder):
        try:
            now = _read_file(pool_path(folder, tenant))
        except CalibrationPoolUnreadable:
            return False
        if now is None or (now.version, now.digest()) != (pool.version, pool.digest()) or read_vectors(folder, tenant, pool, encoder) is not None:
            return False
        _write_vectors(folder, tenant, pool, encoder, vectors)
        return True


def _write_vectors(folder: Path, tenant: str, pool: CalibrationPool, encoder: str, vectors: np.ndarray) -> None:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    write_atomic(vectors_path(folder, tenant), msgspec.msgpack.encode(StoredVectors(
        version=pool.version, digest=pool.digest(), encoder=encoder, dim=int(vectors.shape[1]), vectors=vectors.tobytes())))


def read_ledger(folder: Path) -> PoolsLedger:
    """The pools folder's ledger (an empty one where there is none yet). Raises CalibrationPoolUnreadable naming the file
    for one that cannot be read (never taken for an empty one: versions would be given again)."""
    ledger = _read_versioned(folder / LEDGER, PoolsLedger, LEDGER_FORMAT, "a calibration pools ledger", LEDGER_NAMED,
                             other_format="run the release that wrote it",
                             damaged="set its `version` above every pool's of the folder, or remove it with every pool")
    return PoolsLedger() if ledger is None else ledger


def _next_version(folder: Path, ledger: PoolsLedger, *pools: CalibrationPool | None) -> PoolsLedger:
    """`ledger` with the next version given (past every pool's of `pools` too) and removals older than REMOVAL_MEMORY_S
    forgotten, on disk before any pool of that version is (a crash after it skips a version, never gives one twice).
    Called under the folder's lock."""
    ledger = PoolsLedger(version=max([ledger.version, *(p.version for p in pools if p is not None)]) + 1,
                         removed=_recent(ledger.removed))
    write_atomic(folder / LEDGER, msgspec.json.encode(ledger))
    return ledger


def read_pool(folder: Path, tenant: str) -> CalibrationPool | None:
    """The tenant's calibration pool, or None when it stored none. Raises CalibrationPoolUnreadable naming the file for
    one that is not such a pool or of another format; OSError (other than a missing file) as it comes."""
    return _read_file(pool_path(folder, tenant))


def _read_file(path: Path) -> CalibrationPool | None:
    """The calibration pool in the file `path`, as `read_pool`."""
    return _read_versioned(path, CalibrationPool, POOL_FORMAT, "a calibration pool", POOL_NAMED,
                           other_format="run the release that wrote it, or PUT the pool again",
                           damaged="PUT the pool again, or remove the file")


def _read_versioned(path: Path, kind: type[_Versioned], expected: int, what: str, named: str, other_format: str,
                    damaged: str) -> _Versioned | None:
    """The `kind` (a msgspec Struct with a `format` field) in the JSON file `path`, or None when there is no file.
    Raises CalibrationPoolUnreadable naming the file and `what` it should be (`named`: what a request's 503 calls it):
    for another `format` than `expected` (its message ends with `other_format`, what to do) and for a file that is not
    such a JSON object (damaged: its message ends with `damaged`); OSError (other than a missing file) as it comes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        found = msgspec.json.decode(data, type=dict).get("format")
        if found != expected:
            raise CalibrationPoolUnreadable(f"{path}: {what} of format {found!r}, which this release does not read "
                                            f"(it reads format {expected}): {other_format}",
                                            named, path)
        return msgspec.json.decode(data, type=kind)
    except DECODE_ERRORS as exc:
        raise CalibrationPoolUnreadable(f"{path} is not {what} (damaged?): {exc}; {damaged}", named, path) from None


def write_pool(folder: Path, tenant: str, items: list[tuple[str, list[str]]], arrived: float | None = None,
               vectors: tuple[str, np.ndarray] | None = None) -> CalibrationPool | None:
    """Store `items` as the tenant's calibration pool in place of any before, whole and durably (its rename survives a
    power loss), with the next version the folder gives (`PoolsLedger`): the PUT that writes last is the one stored
    and its version is the largest, whatever the replicas' clocks (kept by the later
    `updated_at`, by the clock of the replica that took it, a later PUT through a replica whose clock ran
    behind would be answered 200 and dropped). `arrived`: when its request arrived (unix seconds; default now), its
    `updated_at`. `vectors`: (`encoder_cache_id`, (N, dim) vectors of the pool's `texts()`), stored beside it first.
    An unreadable pool there is replaced. Returns what this PUT stored, or None, storing nothing, when a removal of the
    tenant began after `arrived` (`remove_pool`'s `removal_began`; the removal's clock against this one's, as every
    removal's record is read): stored, such a late PUT would replace the pool of the tenant made again under
    the same name, which would then lose it when the removal's pass removed what had arrived before it. Raises OSError (a
    full disk: the pool before is kept, whole, and no vectors of this pool beside it), CalibrationPoolUnreadable for a
    ledger that cannot be read."""
    arrived = time.time() if arrived is None else arrived
    path = pool_path(folder, tenant)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with folder_lock(path.parent):  # a DELETE meanwhile would take this PUT's temp file for one a killed PUT left
        ledger = read_ledger(folder)
        if ledger.removed.get(path.name, -math.inf) > arrived:
            return None
        _remove_killed_writes(folder, LEDGER, path.name, vectors_path(folder, tenant).name)
        try:
            before = _read_file(path)
        except CalibrationPoolUnreadable:
            before = None
        ledger = _next_version(folder, ledger, before)
        pool = CalibrationPool(pool=[CalibrationItem(prompt=p, answers=list(a)) for p, a in items], updated_at=arrived,
                               version=ledger.version)
        if vectors is not None:
            _write_vectors(folder, tenant, pool, *vectors)
        else:
            vectors_path(folder, tenant).unlink(missing_ok=True)
        try:
            write_atomic(path, msgspec.json.encode(pool))
        except OSError:  # the pool before kept: beside it no vectors of this one, never stored (left, they would
            # stay, this PUT's texts' embeddings, until a replica embedded the pool before again). The pool's own error
            # is the one answered; one renamed into place whose folder's fsync failed keeps its vectors
            with contextlib.suppress(OSError):
                if vectors is not None and _version_there(path) != pool.version:
                    vectors_path(folder, tenant).unlink(missing_ok=True)
                    fsync_dir(folder)
            raise
    return pool


def _version_there(path: Path) -> int | None:
    """The version of the pool in the file `path`, None for none or one that cannot be read (not an error: such a
    pool's error would be taken for the new pool's, and a failed PUT's vectors would stay beside it)."""
    try:
        pool = _read_file(path)
    except CalibrationPoolUnreadable:
        return None
    return None if pool is None else pool.version


def _remove_killed_writes(folder: Path, *names: str) -> None:
    """Remove the temp files (`.<name>.<random>`, `pluralign.files.atomic_writer`'s) of the files `names` of the pools
    folder that a killed process left: every writer of them holds the folder's lock, taken by the caller, so one found
    is no live writer's. Left, a killed ledger write's would never be removed, and a killed PUT's pool (its
    texts) only by the tenant's DELETE."""
    prefixes = tuple(f".{name}." for name in names)
    with os.scandir(folder) as entries:  # one look at the folder (a glob each would list it once a name)
        left = [entry.path for entry in entries if entry.name.startswith(prefixes)]
    for temp in left:
        Path(temp).unlink(missing_ok=True)


def _adopt(folder: Path, name: str, pool: CalibrationPool) -> bool:
    """Write `pool`, found under `name` in a replica's own folder, into the shared pools folder `folder` with the next
    version it gives, unless the pool there arrived later (by `updated_at`: pools of two folders have no versions in
    common) or the tenant's removal began after it arrived; whether it did. Called under `folder`'s lock."""
    ledger = read_ledger(folder)
    if ledger.removed.get(name, -math.inf) > pool.updated_at:
        return False
    try:
        there = _read_file(folder / name)
    except CalibrationPoolUnreadable:
        there = None
    if there is not None and there.updated_at > pool.updated_at:
        return False
    ledger = _next_version(folder, ledger, there)
    (folder / name).with_suffix(".vectors").unlink(missing_ok=True)  # embedded again at first use, and kept
    write_atomic(folder / name, msgspec.json.encode(msgspec.structs.replace(pool, version=ledger.version)))
    return True


def adopt_own_pools(settings) -> int:
    """Move the calibration pools this replica's own data folder keeps (stored while it served alone) into the folder
    PLURALIGN_CALIBRATION_POOLS_DIR names (`Settings`), when it names another; how many it moved. Called at a start,
    before any request (`pluralign serve` before what undoes a failed start, which would remove a pools folder it
    made in the data folder, the pools moved there with it; `Runtime.build` again): once the setting is there no request reads the own folder, and a pool left
    there would stay unread (GET and DELETE a 404, `{}` asking other users' comparisons, the tenant's texts on disk). A pool
    the shared folder holds from a later PUT is kept (`_adopt`: by `updated_at`, two folders' versions not comparable), the older one dropped; an unreadable one is
    left where it is, a WARNING naming it, and so is every pool while the shared folder's ledger cannot be read. A removal of the tenant since is applied by the deletion sweep's pass over
    its record (`remove_pool_before`). Raises OSError as it comes."""
    own, shared = settings.own_calibration_pools_path, settings.calibration_pools_path
    if not settings.calibration_pools_dir or own.absolute() == shared.absolute() or not own.is_dir():
        return 0
    moved = 0
    for path in sorted(own.glob("*.json")):
        try:
            pool = _read_file(path)
        except CalibrationPoolUnreadable as exc:
            log.warning("a calibration pool in this replica's own data folder, not moved to PLURALIGN_CALIBRATION_POOLS_DIR %s "
                        "(no request reads it there): %s", shared, exc)
            continue
        if pool is None:
            continue
        shared.mkdir(mode=0o700, exist_ok=True)  # its parent checked at start (`check_calibration_pools_dir`): never made
        try:
            with folder_lock(shared):
                _adopt(shared, path.name, pool)
        except CalibrationPoolUnreadable as exc:  # its ledger (a WARNING: a traceback would stop the start)
            log.warning("a calibration pool in this replica's own data folder, not moved to PLURALIGN_CALIBRATION_POOLS_DIR %s "
                        "(no request reads it there; moved at a start once the ledger is mended): %s", shared, exc)
            continue
        with folder_lock(own):
            path.unlink(missing_ok=True)
            path.with_suffix(".vectors").unlink(missing_ok=True)
            fsync_dir(own)
        moved += 1
    if moved:
        log.info("moved %d calibration pool(s) from %s into PLURALIGN_CALIBRATION_POOLS_DIR %s", moved, own, shared)
    return moved


def remove_pool(folder: Path, tenant: str, removal_began: float | None = None) -> bool:
    """Remove the tenant's calibration pool and its vectors, and the temp files of PUTs a killed process left beside
    them (`.<name>.<random>`: the new pool's texts, never renamed into place); whether there was a pool. The removal is
    on disk when this returns (the folder fsynced). Takes turns with `write_pool` (`folder_lock` on the pools folder):
    else a DELETE meanwhile would remove the temp file of a PUT still writing, whose rename would then fail
    (a 500). `removal_began`: the tenant's removal's start (unix seconds), noted in the folder's ledger so that no PUT
    whose key was checked before it stores anything after (`write_pool`). Raises OSError as it comes."""
    path = pool_path(folder, tenant)
    if not path.parent.is_dir():
        return False
    with folder_lock(path.parent):
        if removal_began is not None:
            _note_removal(folder, path.name, removal_began)
        left = [*path.parent.glob(f".{path.name}.*"), *path.parent.glob(f".{path.with_suffix('.vectors').name}.*")]
        for temp in left:
            temp.unlink(missing_ok=True)
        had_vectors = _unlink(path.with_suffix(".vectors"))
        if not _unlink(path):
            if left or had_vectors:
                fsync_dir(path.parent)
            return False
        fsync_dir(path.parent)
        return True


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _note_removal(folder: Path, name: str, began: float) -> None:
    """The ledger notes that the tenant of the pool file `name` was removed from `began` (unix seconds); under the lock.
    A ledger that cannot be read is left (a WARNING; the removal goes on, and PUTs are 503s `storage_unavailable` naming it until it is mended)."""
    try:
        ledger = read_ledger(folder)
    except CalibrationPoolUnreadable as exc:
        log.warning("a removal of a tenant could not note itself in the calibration pools' ledger: %s", exc)
        return
    if ledger.removed.get(name, -math.inf) < began:
        removed = {**_recent(ledger.removed), name: began}  # those past REMOVAL_MEMORY_S go with it
        write_atomic(folder / LEDGER, msgspec.json.encode(PoolsLedger(version=ledger.version, removed=removed)))


def _recent(removed: dict[str, float]) -> dict[str, float]:
    """The removals of `removed` (`PoolsLedger.removed`) that began within REMOVAL_MEMORY_S."""
    oldest = time.time() - REMOVAL_MEMORY_S
    return {name: at for name, at in removed.items() if at >= oldest}


def forget_old_removals(folder: Path) -> int:
    """Drop from the pools folder's ledger the removals noted more than REMOVAL_MEMORY_S ago (`PoolsLedger.removed`: the
    sha256 of a removed tenant's name), so none is kept past its hour whether or not a PUT comes (`_next_version`
    drops them too); how many went. Read without the lock, written under it only where one is that old: called at
    each pass of the tenant removals and of the deletion sweep. A ledger that cannot be read is left (0: a PUT is a
    503 `storage_unavailable` naming it). Raises OSError as it comes."""
    try:
        if _recent(removed := read_ledger(folder).removed) == removed:
            return 0
        with folder_lock(folder):
            ledger = read_ledger(folder)
            kept = _recent(ledger.removed)
            if len(kept) != len(ledger.removed):
                write_atomic(folder / LEDGER, msgspec.json.encode(PoolsLedger(version=ledger.version, removed=kept)))
            return len(ledger.removed) - len(kept)
    except CalibrationPoolUnreadable:
        return 0


def remove_pool_before(folder: Path, tenant: str, before: float) -> bool:
    """Remove the tenant's calibration pool (and its vectors) if its PUT arrived before `before` (unix seconds: a
    removal of the tenant that began then, which another replica answered); whether it did. A pool that cannot be read
    is left, a WARNING naming it (the removal's own replica removed the tenant's whatever it held). Takes turns with
    `write_pool`, and notes the removal for PUTs still to write (`remove_pool`)."""
    path = pool_path(folder, tenant)
    if not path.exists():
        return False
    with folder_lock(path.parent):
        _note_removal(folder, path.name, before)
        try:
            pool = read_pool(folder, tenant)
        except CalibrationPoolUnreadable as exc:
            log.warning("a removal of a tenant left its calibration pool, which cannot be read: %s", exc)
            return False
        if pool is None or pool.updated_at >= before:
            return False
        path.with_suffix(".vectors").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return True


def own_pools_unwritten(settings) -> bool:
    """Whether no PUT writes the calibration pools' folder of this replica's own data folder (`Settings`): with several
    replicas a PUT is refused unless PLURALIGN_CALIBRATION_POOLS_DIR names another (shared) folder."""
    return not settings.calibration_pools_dir or settings.calibration_pools_path.absolute() != settings.own_calibration_pools_path.absolute()
