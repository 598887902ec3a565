"""A tenant's calibration pool: the prompts, with 2-8 answers each, that `POST /v1/users/{id}/next-comparison` asks a
user about when its request sends no `pool` of its own (docs/api.md, "A stored calibration pool").

One file per tenant, `<pools folder>/<sha256 of the tenant>.json` (`CalibrationPool`, msgspec JSON,
`format` POOL_FORMAT), written whole (temp file, fsync, rename, fsync of the folder: `pluralign.files.write_atomic`),
so a crash in the middle of a PUT leaves the pool before it or the new one, never part of either; removed by the
tenant's removal (`service.tenants`). The pools folder is `Settings.calibration_pools_path`: `<data folder>/calibration-pools`,
or PLURALIGN_CALIBRATION_POOLS_DIR, a folder the replicas share (writers take turns under `folder_lock`, which reaches
every pod of a lock-forwarding NFSv4 volume as for PLURALIGN_PAL_DIR; readers read the file at each request). The file is named by a hash so a tenant's name is never a path. It is the
tenant's, no user's: a user's export and DELETE leave it alone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import msgspec

from pluralign.data.record import Persisted
from pluralign.files import folder_lock, fsync_dir, write_atomic

log = logging.getLogger("pluralign.calibration")
POOL_FORMAT = 1  # the file's schema: a reader refuses another one by its number (`other_schema`)


class CalibrationItem(Persisted, frozen=True):
    prompt: str
    answers: list[str]  # 2 to 8, as a request's `pool` item


class CalibrationPool(Persisted, kw_only=True, frozen=True):
    """A tenant's stored calibration pool, as `GET /v1/calibration-pool` shows it."""

    format: int = POOL_FORMAT
    pool: list[CalibrationItem]
    updated_at: float  # unix seconds: when the key of the PUT that stored it was checked (a removal begun later removes it)

    def items(self) -> list[tuple[str, list[str]]]:
        """(prompt, answers) of each item, in stored order: what `next_comparison` takes as a pool."""
        return [(item.prompt, list(item.answers)) for item in self.pool]


class CalibrationPoolUnreadable(RuntimeError):
    """The tenant's pool file is there but cannot be read (damaged, another release's format): its message names the
    file. Never taken as "no pool": `{}` would then ask other users' stored comparisons instead."""


def pool_path(folder: Path, tenant: str) -> Path:
    """Where `tenant`'s calibration pool is kept in the pools folder `folder` (`Settings.calibration_pools_path`): named
    by the sha256 (hex) of the tenant's name."""
    return folder / f"{hashlib.sha256(tenant.encode()).hexdigest()}.json"


def read_pool(folder: Path, tenant: str) -> CalibrationPool | None:
    """The tenant's calibration pool, or None when it stored none. Raises CalibrationPoolUnreadable naming the file for
    one that is not such a pool or of another format; OSError (other than a missing file) as it comes."""
    return _read_file(pool_path(folder, tenant))


def _read_file(path: Path) -> CalibrationPool | None:
    """The calibration pool in the file `path`, as `read_pool`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        found = msgspec.json.decode(data, type=dict).get("format")
        if found != POOL_FORMAT:
            raise CalibrationPoolUnreadable(f"{path}: a calibration pool of format {found!r}, which this release does not read "
                                            f"(it reads format {POOL_FORMAT}): run the release that wrote it, or PUT the pool again")
        return msgspec.json.decode(data, type=CalibrationPool)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CalibrationPoolUnreadable(f"{path} is not a calibration pool (damaged?): {exc}; PUT the pool again, or "
                                        "remove the file") from None


def write_pool(folder: Path, tenant: str, items: list[tuple[str, list[str]]], arrived: float | None = None) -> CalibrationPool:
    """Store `items` as the tenant's calibration pool in place of any before, whole and durably (its rename survives a
    power loss); `arrived`: when its request arrived (unix seconds; default now), its `updated_at`. A pool whose PUT
    arrived later (`updated_at` past `arrived`) is kept: this one is taken as stored and replaced by it at once. Until
    review late54 a PUT authenticated before its tenant's removal began on another replica, that wrote after the tenant
    was made again and stored its own pool, replaced that pool: the new tenant was asked the removed tenant's prompts,
    then lost its pool when this replica's pass removed what had arrived before the removal (`remove_pool_before`).
    An unreadable pool there is replaced. Returns what this PUT stored. Raises OSError (a full disk: the pool before
    is kept, whole)."""
    pool = CalibrationPool(pool=[CalibrationItem(prompt=p, answers=list(a)) for p, a in items],
                           updated_at=time.time() if arrived is None else arrived)
    path = pool_path(folder, tenant)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with folder_lock(path.parent):  # a DELETE meanwhile would take this PUT's temp file for one a killed PUT left
        _replace_unless_newer(path, pool)
    return pool


def _replace_unless_newer(path: Path, pool: CalibrationPool) -> bool:
    """Write `pool` to `path` unless the pool there arrived later (`write_pool`; its folder's lock held); whether it did."""
    try:
        newer = _read_file(path)
    except CalibrationPoolUnreadable:
        newer = None
    if newer is not None and newer.updated_at > pool.updated_at:
        return False
    write_atomic(path, msgspec.json.encode(pool))
    return True


def adopt_own_pools(settings) -> int:
    """Move the calibration pools this replica's own data folder keeps (stored while it served alone) into the folder
    PLURALIGN_CALIBRATION_POOLS_DIR names (`Settings`), when it names another; how many it moved. Called at a start,
    before any request (`pluralign serve` before what undoes a failed start, which would remove a pools folder it
    made in the data folder, the pools moved there with it; `Runtime.build` again): once the setting is there no request reads the own folder, and until review late54 such a pool
    stayed there unread (GET and DELETE a 404, `{}` asking other users' comparisons, the tenant's texts on disk). A pool
    the shared folder holds from a later PUT is kept (`write_pool`'s rule), the older one dropped; an unreadable one is
    left where it is, a WARNING naming it. A removal of the tenant since is applied by the deletion sweep's pass over
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
        with folder_lock(shared):
            _replace_unless_newer(shared / path.name, pool)
        with folder_lock(own):
            path.unlink(missing_ok=True)
            fsync_dir(own)
        moved += 1
    if moved:
        log.info("moved %d calibration pool(s) from %s into PLURALIGN_CALIBRATION_POOLS_DIR %s", moved, own, shared)
    return moved


def remove_pool(folder: Path, tenant: str) -> bool:
    """Remove the tenant's calibration pool, and the temp files of PUTs a killed process left beside it
    (`.<name>.<random>`: the new pool's texts, never renamed into place); whether there was a pool. The removal is on
    disk when this returns (the folder fsynced). Takes turns with `write_pool` (`folder_lock` on the pools folder):
    until review pool54 a DELETE meanwhile removed the temp file of a PUT still writing, whose rename then failed
    (a 500). Raises OSError as it comes."""
    path = pool_path(folder, tenant)
    if not path.parent.is_dir():
        return False
    with folder_lock(path.parent):
        left = list(path.parent.glob(f".{path.name}.*"))
        for temp in left:
            temp.unlink(missing_ok=True)
        try:
            os.unlink(path)
        except FileNotFoundError:
            if left:
                fsync_dir(path.parent)
            return False
        fsync_dir(path.parent)
        return True


def remove_pool_before(folder: Path, tenant: str, before: float) -> bool:
    """Remove the tenant's calibration pool if its PUT arrived before `before` (unix seconds: a removal of the tenant
    that began then, which another replica answered); whether it did. A pool that cannot be read is left, a WARNING
    naming it (the removal's own replica removed the tenant's whatever it held). Takes turns with `write_pool`."""
    path = pool_path(folder, tenant)
    if not path.exists():
        return False
    with folder_lock(path.parent):
        try:
            pool = read_pool(folder, tenant)
        except CalibrationPoolUnreadable as exc:
            log.warning("a removal of a tenant left its calibration pool, which cannot be read: %s", exc)
            return False
        if pool is None or pool.updated_at >= before:
            return False
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return True


def own_pools_unwritten(settings) -> bool:
    """Whether no PUT writes the calibration pools' folder of this replica's own data folder (`Settings`): with several
    replicas a PUT is refused unless PLURALIGN_CALIBRATION_POOLS_DIR names another (shared) folder."""
    return not settings.calibration_pools_dir or settings.calibration_pools_path.absolute() != settings.own_calibration_pools_path.absolute()
