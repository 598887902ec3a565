"""Job records on disk: one JSON file per job, written to a temp file and renamed into place,
so a crash at any moment leaves either the old record or the new one, never half of one.

One process (the runner) writes a folder; it keeps the records in memory and writes through. A job
is `add`ed once, then `put` as its state changes; a purged job (`remove`) is forgotten whole: a late
`put` of it (a record read before the purge) finds it no longer held and is dropped, so nothing is
kept per purged job for as long as the service runs."""

from __future__ import annotations

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
        # when each held job last started, as a count of starts (`turn`), by tenant (`tenant_of`) and job id: first the
        # order of the records' `started_at`, read at the opening (a restart keeps the turns), then each start seen since
        # (`_keep`); a count, not the clock, so a start stamped ahead of the clock keeps no tenant waiting for the clock to
        # catch up (only the opening's order reads it: there such a record ranks its tenant last). A job removed takes
        # its count with it (`remove`), so the turns are those the held records give, as after a restart
        self._starts: dict[str, dict[str, int]] = {}
        self._turns: dict[str, int] = {}  # tenant -> the greatest count of its held jobs (`turn`)
        self._latest: dict[str, str] = {}  # tenant -> the id of the held job whose start is its turn (`latest_start`)
        # job id -> (`started_at`, count) of an active job's start before its latest: a start undone (the record put
        # back to it: a Ray job that could not be placed) gives the job that count again
        self._earlier: dict[str, tuple[float, int]] = {}
        self._count = 0
        names = sorted(os.listdir(self.folder))  # one read of the folder: `remove` never reads it again
        # the temp files a process killed while rewriting a job's file left (`.<id>.job.json.<random>`, `files`); no write
        # of this process leaves one (a failed write removes its own), so those there now are all there will be
        self._leftovers = {name for name in names if name.startswith(".")}
        for path in (self.folder / name for name in names if name.endswith(".job.json") and not name.startswith(".")):
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
            self._keep(job, opening=True)
        for job in sorted((j for j in self._jobs.values() if j.started_at is not None), key=lambda j: (j.started_at, j.id)):
            self._started(job.id, tenant_of(job.params))

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

    def _keep(self, job: Job, opening: bool = False) -> None:
        """Hold `job` as its latest state (under the lock); but at the `opening`, its start is counted once all are read."""
        held = self._jobs.get(job.id)
        if held is None:  # its params, and so whom it is for, never change
            self._index(job.id, user_key(job.params))
        if not opening and job.started_at != (held.started_at if held is not None else None):
            self._moved_start(job, held.started_at if held is not None else None)
        self._jobs[job.id] = job
        if job.state in ACTIVE_STATES:
            self._active.add(job.id)
        else:
            self._active.discard(job.id)
        if job.state != "running":  # this run is over: its start stays, or was undone
            self._earlier.pop(job.id, None)

    def _moved_start(self, job: Job, before: float | None) -> None:
        """`job`'s `started_at` is no longer `before`: a launch takes its tenant's turn (a new count); put back to
        the start before this run's (`_earlier`: a launch undone), it has that start's count again; None, none."""
        tenant = tenant_of(job.params)
        starts = self._starts.get(tenant, {})
        earlier = self._earlier.get(job.id)
        if job.started_at is not None and earlier is not None and earlier[0] == job.started_at:
            starts[job.id] = earlier[1]
        elif job.started_at is not None:
            if earlier is None and before is not None and job.id in starts:  # the start before this run's, kept while it runs
                self._earlier[job.id] = (before, starts[job.id])
            self._started(job.id, tenant)
            return
        else:
            starts.pop(job.id, None)
        self._turn_again(tenant)

    def _started(self, job_id: str, tenant: str) -> None:
        self._count += 1
        self._starts.setdefault(tenant, {})[job_id] = self._turns[tenant] = self._count
        self._latest[tenant] = job_id

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
        """When the last held job of `tenant` (`tenant_of`: "" for the jobs for the whole service) started, as a count
        of starts (greater: later); 0 if none did. The records the folder held when this store was opened count first,
        in the order of their `started_at` (whatever the job's state now: a job queued again after a restart included),
        then each job started since, in the order it was (`put` with a new `started_at`). A job removed (retention, a
        DELETE's purge) no longer counts, and a start undone (put back to the one before) counts as that one: the turns
        are those the held records give, as when the folder is opened again."""
        with self._lock:
            return self._turns.get(tenant, 0)

    def latest_start(self, tenant: str) -> Job | None:
        """The held job of `tenant` whose start is its turn (`turn`): the one it started last; None if none did."""
        with self._lock:
            job_id = self._latest.get(tenant)
            return self._jobs.get(job_id) if job_id is not None else None

    def _turn_again(self, tenant: str) -> None:
        """Draw `tenant`'s turn again from its held jobs' counts (one of them went or changed)."""
        starts = self._starts.get(tenant)
        if starts:
            self._latest[tenant] = max(starts, key=starts.__getitem__)
            self._turns[tenant] = starts[self._latest[tenant]]
        else:
            self._starts.pop(tenant, None)
            self._turns.pop(tenant, None)
            self._latest.pop(tenant, None)

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
        temp files a process killed while rewriting one of them left (`.<id>.job.json.<random>`), as the folder held
        them when this store was opened (a runner's start removes them: `remove_write_leftovers`). The folder is not
        read here: with 5,000 jobs (20,000 files) each call read it whole, and retention's 5,000 removes took minutes."""
        with self._lock:
            return self._files(job_id)

    def _files(self, job_id: str) -> list[Path]:
        left = sorted(name for name in self._leftovers if name.startswith(f".{job_id}."))
        # the record last: `remove` cut short by a kill leaves it, naming the job (and whom it is for) to the removal made
        # again (first, a kill after it would leave the log, output and result for good)
        return [*(self.path(job_id, suffix) for suffix in ("log", "out", "result.json")), *(self.folder / n for n in left),
                self.path(job_id, "job.json")]

    def remove(self, job_id: str) -> Job | None:
        """Forget a job and delete its record, log, output and result files (its artifact folder is the runner's),
        with the temp files a process killed while rewriting one of them left (`.<id>.job.json.<random>`: the
        job's params, whom it is for; none is being written: the record's writes hold this store's lock, and
        the runner writes the result under its own, which its `purge` holds while it calls this)."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._active.discard(job_id)
            self._earlier.pop(job_id, None)
            tenant = tenant_of(job.params) if job is not None else None
            # its start no longer counts (as after a restart); drawn again only when it was the tenant's latest: retention
            # removes the oldest first, and each draw reads all the tenant's jobs (20,000 removes: 14 s under this lock)
            if tenant is not None and self._starts.get(tenant, {}).pop(job_id, None) == self._turns.get(tenant):
                self._turn_again(tenant)
            named = self._later.pop(job_id, None)
            held = job if job is not None else named
            key = user_key(held.params) if held is not None else None
            if key is not None:
                self._by_user[key].discard(job_id)
                if not self._by_user[key]:
                    del self._by_user[key]
            for path in self._files(job_id):
                path.unlink(missing_ok=True)
                self._leftovers.discard(path.name)
        return job
