"""Finished jobs' files go once `job_retention_s` has passed (`PLURALIGN_JOB_RETENTION_S`, 7 days;
0 keeps every job).

Which jobs go is `training.jobs.retention.expired` (audits, served artifacts and the newest job of
each user's or population's lineage stay). For each, the runner's `purge` removes its record, log,
output, result and artifact folder, and the data snapshot it trained on goes with it. Files of
the data folder and artifact folders that no job names any more (a job record purged by an older
version, a snapshot written for a submit that then failed, a temp file a killed write left, a file
put there by hand) go `ORPHAN_GRACE_S` after the retention, reckoned from the stamp of a snapshot's
name (`<name>-<ms>.jsonl`), else from the file's modification time: a snapshot is written just
before its job is queued, so a young one may be about to be named.

Runs at start and then every quarter of the retention (at least 1 s, at most an hour), on its own
thread: the population snapshots, job artifacts and orphaned artifact folders are removed under the
runtime's population lock (one job or folder at a time), which a DELETE's rewrite of them (every
PAL/EM artifact without the user's weights) also holds; a job's record is purged after its
artifact, outside that lock (the job runner takes the population lock under its own).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from service.periodic import Periodic
from training.jobs.retention import expired

if TYPE_CHECKING:
    from service.admin.services import Admin

log = logging.getLogger("pluralign.service")

ORPHAN_GRACE_S = 3600.0


@dataclass(frozen=True)
class Pruned:
    """What one pass removed: jobs purged, data snapshots and orphaned artifact folders removed."""

    jobs: int = 0
    snapshots: int = 0
    artifacts: int = 0


def interval_s(keep_s: float) -> float:
    """Seconds between passes for a retention of `keep_s` seconds."""
    return min(3600.0, max(1.0, keep_s / 4))


class JobRetention(Periodic):
    def __init__(self, admin: Admin, keep_s: float):
        """`keep_s`: seconds a finished job's files are kept (positive and finite)."""
        if not 0 < keep_s < float("inf"):
            raise ValueError(f"`job_retention_s` must be positive and finite (0: keep every job), got {keep_s}")
        super().__init__(interval_s(keep_s), "job-retention", "job retention pass")
        self.admin = admin
        self.keep_s = keep_s
        self._lock = threading.Lock()  # one pass at a time

    def run_once(self, now: float | None = None) -> Pruned:
        """One pass at `now` (unix seconds, default the clock). Files that cannot be removed are
        logged and tried again at the next pass."""
        now = time.time() if now is None else now
        runner, folder = self.admin.runner, self.admin.folder
        with self._lock:
            jobs = runner.list(limit=1_000_000)
            promotions = runner.promotions
            served = {s.job_id for key in promotions.keys("") if (s := promotions.served(key)) is not None}
            gone = expired(jobs, now=now, keep_s=self.keep_s, served=served)
            data = folder / "data"
            theirs = {_inside(j.params.get("data"), data) for j in gone} - {None}
            for job in gone:
                # a DELETE rewrites PAL/EM artifacts under the population lock. The artifact goes first,
                # under it; the purge after, without it: the runner's dispatcher holds the runner's lock
                # while it takes the population lock (a finished job's check, `Admin.check_result`), so never the
                # other way round
                with self.admin.rt.population_lock:
                    shutil.rmtree(folder / "artifacts" / job.id, ignore_errors=True)
                runner.purge(job.id)
            remaining = runner.list(limit=1_000_000)  # jobs queued meanwhile name only new snapshots
            named = {_inside(j.params.get("data"), data) for j in remaining} - {None}
            snapshots = 0
            for path in sorted(p for p in data.rglob("*") if p.is_file()) if data.is_dir() else []:
                key = path.resolve()
                if key in named or path.name.endswith(".jsonl.users") and path.with_name(path.name.removesuffix(".users")).exists():
                    continue  # a snapshot still named, or a users file whose snapshot is there: it goes with it
                if key in theirs or _written(path) <= now - self.keep_s - ORPHAN_GRACE_S:
                    snapshots += self._remove_snapshot(path)
            artifacts = 0
            known = {j.id for j in remaining}
            folders = folder / "artifacts"
            for path in sorted(folders.iterdir()) if folders.is_dir() else []:
                if path.name in known or not path.is_dir():
                    continue
                if _modified(path) <= now - self.keep_s - ORPHAN_GRACE_S:
                    with self.admin.rt.population_lock:
                        shutil.rmtree(path, ignore_errors=True)
                    artifacts += not path.exists()
        pruned = Pruned(len(gone), snapshots, artifacts)
        if gone or snapshots or artifacts:
            log.info("job retention: %d finished jobs, %d data snapshots and %d orphaned artifact folders removed "
                     "(older than %g s)", pruned.jobs, pruned.snapshots, pruned.artifacts, self.keep_s)
            self.admin.rt.metrics.inc("pluralign_jobs_pruned_total", pruned.jobs,
                                      help="finished jobs whose files the job retention removed")
        return pruned

    def _remove_snapshot(self, path: Path) -> int:
        population = path.parent.resolve() == self.admin.population_folder.resolve()
        try:
            if population:  # a DELETE rewrites these (temp file and rename) under the same lock
                with self.admin.rt.population_lock:
                    path.unlink(missing_ok=True)
                    if path.name.endswith(".jsonl"):  # its users file goes with it (`snapshot_users_path`)
                        path.with_name(path.name + ".users").unlink(missing_ok=True)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("job retention could not remove %s: %s", path, exc)
            return 0
        return 1


def _inside(data: object, folder: Path) -> Path | None:
    """A job's `data` parameter as a resolved path when it lies in the admin area's `folder`, else None."""
    if not isinstance(data, str):
        return None
    path = Path(data).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def snapshot_taken(path: Path) -> float | None:
    """When a snapshot (`<name>-<ms>.jsonl`, ASCII digits) was taken (unix seconds), None when its
    name says not (`notes-\u00b2.jsonl` included: `str.isdigit` holds for digits `int` refuses)."""
    stamp = path.name.removesuffix(".jsonl").rpartition("-")[2]
    return int(stamp) / 1000 if stamp.isascii() and stamp.isdigit() else None


def snapshot_named(path: Path) -> tuple[str, float] | None:
    """(user, when taken) of a user's snapshot `<user>-<ms>.jsonl`, or of the temp file a killed
    write of one left (`.<user>-<ms>.jsonl.<random>`, `pluralign.files.atomic_writer`'s); None for
    any other name."""
    name = path.name
    if name.startswith(".") and ".jsonl." in name:
        name = name[1:].rpartition(".jsonl.")[0] + ".jsonl"
    if not name.endswith(".jsonl"):
        return None
    taken = snapshot_taken(Path(name))
    return None if taken is None else (name.removesuffix(".jsonl").rpartition("-")[0], taken)


def _written(path: Path) -> float:
    """When a file of the data folder was written (unix seconds): a snapshot's stamp, else (a temp
    file a killed write left, a file named by hand) its modification time; infinity when it cannot
    be read (gone meanwhile: nothing to remove)."""
    taken = snapshot_taken(path) if path.name.endswith(".jsonl") else None
    if taken is not None:
        return taken
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")


def _modified(path: Path) -> float:
    """The newest modification time (unix seconds) of a folder or anything in it; infinity when it
    cannot be read (gone meanwhile: nothing to remove)."""
    try:
        return max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.rglob("*"))])
    except OSError:
        return float("inf")
