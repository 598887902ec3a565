"""Job records on disk: one JSON file per job, written to a temp file and renamed into place,
so a crash at any moment leaves either the old record or the new one, never half of one.

One process (the runner) writes a folder; it keeps the records in memory and writes through. A job
is `add`ed once, then `put` as its state changes; a purged job (`remove`) is forgotten whole: a late
`put` of it (a record read before the purge) finds it no longer held and is dropped, so nothing is
kept per purged job for as long as the service runs."""

from __future__ import annotations

import glob
import logging
import os
import threading
from pathlib import Path

import msgspec

from pluralign.files import write_atomic
from training.jobs.record import ACTIVE_STATES, Job, JobNamed, LaterSchema, decode_job, job_encoder, tenant_of, user_key

log = logging.getLogger(__name__)


class JobStore:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._active: set[str] = set()  # the ids of queued and running jobs, kept with `_jobs` (`active`)
        self._later: dict[str, JobNamed] = {}  # records a later release wrote: kept on disk, unread, but not for a deleted user
        # `tenant/user` -> the ids of the jobs (and later records) for that user (`user_key`), kept with `_jobs` and
        # `_later`: a DELETE looks its user's jobs up (`of_user`) instead of reading every record
        self._by_user: dict[str, set[str]] = {}
        # tenant (`tenant_of`) -> when its last job started, as a count of starts (`turn`): first the order of the
        # records' latest `started_at` per tenant, read at the opening (a restart keeps the turns), then each start seen
        # since (`_keep`); a count, not the clock, so a start stamped ahead of the clock keeps no tenant waiting for the
        # clock to catch up (only the opening's order reads it: there such a record ranks its tenant last)
        self._turns: dict[str, int] = {}
        self._starts = 0
        for path in sorted(self.folder.glob("*.job.json")):
            try:
                job = decode_job(path.read_bytes())
            except LaterSchema as exc:
                log.error("skipping unreadable job record %s: %s", path, exc)
                if path.name == f"{exc.named.id}.job.json":  # its other files are found by its id
                    self._later[exc.named.id] = exc.named
                    self._index(exc.named.id, user_key(exc.named.params))
                continue
            except (msgspec.DecodeError, ValueError) as exc:
                log.error("skipping unreadable job record %s: %s", path, exc)
                continue
            self._keep(job)
        last: dict[str, float] = {}
        for job in self._jobs.values():
            if job.started_at is not None:
                last[tenant_of(job.params)] = max(job.started_at, last.get(tenant_of(job.params), job.started_at))
        for tenant in sorted(last, key=last.__getitem__):
            self._took_turn(tenant)

    def path(self, job_id: str, suffix: str = "job.json") -> Path:
        return self.folder / f"{job_id}.{suffix}"

    def add(self, job: Job) -> Job:
        """Write a new job's first record (its id new to the folder)."""
        with self._lock:
            write_atomic(self.path(job.id), job_encoder.encode(job))
            self._keep(job)
        return job

    def put(self, job: Job) -> Job:
        """Write a later state of a job this store holds; a job no longer held (purged) is not
        written: a late write never resurrects it."""
        with self._lock:
            if job.id not in self._jobs:
                return job
            write_atomic(self.path(job.id), job_encoder.encode(job))
            self._keep(job)
        return job

    def hold(self, job: Job) -> Job:
        """Keep `job` in memory only, when writing its record failed (a full disk): readers see its
        state at once, and the writer `put`s it again later. A restart reads the older record."""
        with self._lock:
            if job.id in self._jobs:
                self._keep(job)
        return job

    def _keep(self, job: Job) -> None:
        """Hold `job` as its latest state (under the lock)."""
        held = self._jobs.get(job.id)
        if held is None:  # its params, and so whom it is for, never change
            self._index(job.id, user_key(job.params))
        elif job.started_at is not None and job.started_at != held.started_at:  # a launch: its tenant's turn taken
            self._took_turn(tenant_of(job.params))
        self._jobs[job.id] = job
        if job.state in ACTIVE_STATES:
            self._active.add(job.id)
        else:
            self._active.discard(job.id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: (j.created_at, j.id))

    def active(self) -> list[Job]:
        """The queued and running jobs, oldest first: as many steps as there are of them, not of all records
        (a DELETE asks at each call; finished jobs pile up until their retention ends)."""
        with self._lock:
            return sorted((self._jobs[i] for i in self._active), key=lambda j: (j.created_at, j.id))

    def turn(self, tenant: str) -> int:
        """When the last job of `tenant` (`tenant_of`: "" for the jobs for the whole service) started, as a count of
        starts (greater: later); 0 if none did. The records the folder held when this store was opened count first, in
        the order of each tenant's latest `started_at` (whatever the job's state now: a job queued again after a
        restart included), then each job started since, in the order it was (`put` with a new `started_at`). A job
        removed (retention, a DELETE's purge) counts until the folder is opened again."""
        with self._lock:
            return self._turns.get(tenant, 0)

    def _took_turn(self, tenant: str) -> None:
        self._starts += 1
        self._turns[tenant] = self._starts

    def _index(self, job_id: str, key: str | None) -> None:
        if key is not None:
            self._by_user.setdefault(key, set()).add(job_id)

    def users(self) -> list[str]:
        """Every user (`tenant/user`, `user_key`) a held job or a later release's record is for."""
        with self._lock:
            return list(self._by_user)

    def of_user(self, key: str) -> list[Job | JobNamed]:
        """The held jobs, and the later release's records (`later`), for user `key` (`tenant/user`, `user_key`)."""
        with self._lock:
            return [self._jobs[i] if i in self._jobs else self._later[i] for i in self._by_user.get(key, ())]

    def later(self) -> list[JobNamed]:
        """Whom each record a later release wrote names (records this one does not read, and keeps on
        disk for it): a DELETE of a user they name `remove`s them all the same."""
        with self._lock:
            return list(self._later.values())

    def files(self, job_id: str) -> list[Path]:
        """The files `remove` deletes for a job (whether there or not): its record, log, output and result, and the
        temp files a process killed while rewriting one of them left (`.<id>.job.json.<random>`)."""
        return [*(self.path(job_id, suffix) for suffix in ("job.json", "log", "out", "result.json")),
                *self.folder.glob(f".{glob.escape(job_id)}.*")]

    def remove(self, job_id: str) -> Job | None:
        """Forget a job and delete its record, log, output and result files (its artifact folder is the runner's),
        with the temp files a process killed while rewriting one of them left (`.<id>.job.json.<random>`: the
        job's params, whom it is for; none is being written: the record's writes hold this store's lock, and
        the runner writes the result under its own, which its `purge` holds while it calls this)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._active.discard(job_id)
            named = self._later.pop(job_id, None)
            held = job if job is not None else named
            key = user_key(held.params) if held is not None else None
            if key is not None:
                self._by_user[key].discard(job_id)
                if not self._by_user[key]:
                    del self._by_user[key]
            for path in self.files(job_id):
                path.unlink(missing_ok=True)
        return job
