"""Run jobs in worker processes, durably.

`JobRunner` is what the service needs from a job engine; `LocalJobRunner` implements it with
subprocesses on this machine; `training.jobs.ray_runner.RayJobRunner` implements it on Ray.
Each job runs `python -m training.cli ...` in its own process group at lower CPU priority, so a
crashing or busy job never takes the service down or stalls its request loop. The runner is the
only writer of its folder: workers talk back through their output (`@progress 0.42` lines on
stderr, one JSON result line on stdout). Queued and running jobs are re-run after a restart.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec
import psutil

from pluralign.data.text import shorten
from pluralign.files import DECODE_ERRORS, write_atomic
from training.common import PROGRESS_ENV, PROGRESS_PREFIX
from training.jobs.kinds import HELDOUT_METRICS, KINDS, JobKind
from training.jobs.promotion import Promotions, Served
from training.jobs.record import ACTIVE_STATES, Job, JobState, Param, tenant_of
from training.jobs.store import JobStore

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # how long `LocalJobRunner.stop` waits for its workers to act on its SIGTERM before it kills them
# how long a stop waits for the dispatcher's thread and the promotions under way (`LocalJobRunner._stop_dispatching`)
DISPATCH_STOP_WAIT_S = 10.0

# added to the priority of a kind whose job went ahead of the tenant's others at its last start (`LocalJobRunner._turn`)
AFTER_THE_OTHERS = 1 << 16
LOG_LINE_CHARS = 500  # the most of one worker log line a job's `log_tail` keeps
JOB_ENV = "PLURALIGN_JOB_ID"  # set in each worker's environment, so a restart can recognise its workers
# beside it: the jobs folder (absolute, symlinks resolved) whose runner started the worker. Job ids are unique
# per folder only: a service started on a copy of another's data folder holds records of the same ids (and
# pids), and its start stopped the other service's running workers
FOLDER_ENV = "PLURALIGN_JOB_FOLDER"
# the errors of a job whose worker succeeded but whose result was not kept: its result goes (`_without_result`)
CHECK_FAILED, FINISH_FAILED = "checking its result failed", "finishing it failed"
REQUEST_ENV = "PLURALIGN_REQUEST_ID"  # the X-Request-Id of the request that caused the job, where one did


def cause_env(job: Job) -> dict[str, str]:
    """The worker's REQUEST_ENV: the request that caused `job` (none for a job no request caused)."""
    return {REQUEST_ENV: job.request_id} if job.request_id else {}


class JobRunner(Protocol):
    def submit(self, kind: str, params: Mapping[str, Param], request_id: str | None = None) -> Job: ...

    def get(self, job_id: str) -> Job | None: ...

    def list(self, *, kind: str | None = None, state: JobState | None = None, limit: int = 100) -> list[Job]: ...

    def active(self) -> list[Job]:
        """The queued and running jobs, oldest first, without going through every record."""
        ...

    def cancel(self, job_id: str) -> Job: ...

    def purge(self, job_id: str) -> Job | None:
        """Stop the job if it is queued or running (its worker killed and waited for), then delete
        every file of it: record, log, output, result and artifact folder. For data that must
        not outlive a deleted user; a purged job is never recorded again, so never re-run after a
        restart. This default takes no runner lock; the local and Ray runners' take theirs (their dispatcher neither
        launches nor records the job meanwhile), which they never hold over a promotion callback (`on_promote` runs on a
        thread of its own, `LocalJobRunner._promotions_of`): a purge's caller may hold a lock the callback waits for (a
        DELETE holds its user's)."""
        job = self.store.remove(job_id)  # from now on the dispatcher's writes of this job are dropped
        running = self._running.get(job_id)
        if running is not None:
            _kill_group(running.process.pid, signal.SIGKILL)
            running.process.wait()
        for suffix in ("log", "out"):  # the dispatcher may have had them open
            self.store.path(job_id, suffix).unlink(missing_ok=True)
        shutil.rmtree(Path(self.config.folder) / "artifacts" / job_id, ignore_errors=True)
        return job

    def start(self) -> None: ...

    def stop(self) -> None: ...


class UnknownJob(KeyError):
    pass


@dataclass(frozen=True)
class RunnerConfig:
    folder: Path  # job records, logs, results and artifacts live here
    workers: int = 1  # jobs running at once
    nice: int = 10  # workers' CPU priority below the service's
    worker_threads: int = 1  # torch/BLAS threads per worker, so serving keeps a core
    poll_seconds: float = 0.2
    log_lines: int = 30  # lines of log tail kept in the record
    max_attempts: int = 3  # a job interrupted this many times (restarts) is failed, not re-run again
    cwd: Path = field(default_factory=lambda: Path(__file__).resolve().parents[2])  # where `training` imports from
    env: Mapping[str, str] = field(default_factory=dict)  # extra variables for workers (e.g. the store's PLURALIGN_STORE_*)
    # resident memory (MB) one job's worker, with its child processes, may hold; over it the worker is
    # killed and the job fails with the figure in its record. None: no cap. Checked every poll_seconds.
    memory_mb: int | None = None
    # seconds a cancelled job's worker has, after SIGTERM, to exit before it is killed (SIGKILL). A worker may
    # never act on SIGTERM: the CLI raises it as an exception where the worker is, and C code that swallows
    # exceptions (torch's import of numpy, at a worker's start) drops it, so the worker trains on
    cancel_grace_s: float = 10.0

    def __post_init__(self) -> None:
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ValueError(f"`memory_mb` must be at least 1 (or None: no cap), got {self.memory_mb}")
        if not self.cancel_grace_s >= 0:
            raise ValueError(f"`cancel_grace_s` must be 0 or more seconds, got {self.cancel_grace_s}")


@dataclass(frozen=True)
class _Due:
    """A succeeded job whose promotion is due (`LocalJobRunner._queue_promotion`): its record still says running."""

    job: Job  # succeeded, its result checked (`on_succeed`), `promoted` not decided yet
    cut: bool = False  # its promotion was cut short by a stop and is finished now (`_finish_cut_promotion`)


@dataclass
class _Running:
    job_id: str
    process: subprocess.Popen
    out: object
    err: object
    over_memory_mb: float | None = None  # the resident memory it was killed at, over the cap
    stop_asked_at: float | None = None  # time.monotonic() of the cancel's SIGTERM (`RunnerConfig.cancel_grace_s`)


class LocalJobRunner:
    def __init__(
        self, config: RunnerConfig, kinds: Mapping[str, JobKind] = KINDS, on_promote: Callable[[Job, str], None] | None = None,
        on_succeed: Callable[[Job], None] | None = None, on_exit: Callable[[str], None] | None = None,
    ):
        """`on_promote(job, key)` puts a promoted artifact into service (e.g. installs an adapter). It runs on a thread of
        its own, without the runner's lock (it may wait: for the user's lock, which a refit, a stated change or a DELETE
        holds, and a DELETE purges the user's jobs under the runner's lock), one job of a key at a time, in the order
        their workers ended (`_promotions_of`); meanwhile other jobs are launched and finished, and the job's record says
        running. `on_succeed(job)` sees each succeeded job's artifact before promotion is considered (e.g.
        removes users deleted while it trained); an exception there fails the job. `on_exit(job_id)`
        is told each time a job's worker is gone (it ended, failed, was cancelled, killed, purged, or
        stopped with the runner), once it can write nothing more, and for a worker that exited by itself
        before the job's final record is written, so a reader who sees the job ended sees its effect (e.g. the
        vectors of a user deleted while it ran are removed from the embedding cache again), and again once that
        record is written (what was noted for the job while its record still said running goes too); and when a job ends
        or goes with no worker ever started (cancelled or purged while queued, one that could not start, on Ray one
        never placed), once its record says so: nothing of it waits for another job's exit. An exception there is
        logged."""
        self.config = config
        self.on_promote = on_promote
        self.on_succeed = on_succeed
        self.on_exit = on_exit
        self.kinds = dict(kinds)
        self.store = JobStore(config.folder)
        self.promotions = Promotions(Path(config.folder) / "promotions.json")
        self._running: dict[str, _Running] = {}
        # tenant -> the id of its job that started ahead of a queued job of its own of a kind after its kind (an audit
        # ahead of training: `_went_ahead`), while that is its latest start; in memory: after a restart it goes ahead once more
        self._ahead: dict[str, str] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # the dispatcher's rounds that ran through so far (`failed_rounds`: those that raised), written by its thread
        # alone: a test waits on it for a round begun after an event (two more than it saw) before it asserts that no
        # round did something (wrote a purged job back); a round that raised may have stopped before that step
        self.rounds = self.failed_rounds = 0
        self._lock = threading.RLock()
        self._unwritten: set[str] = set()  # jobs whose latest record is held in memory only (`_record`)
        # what a promotion puts into service (`_served_as`: a key, or the population model) -> the succeeded jobs whose
        # promotion is due, in the order their workers ended; the first is being promoted on a thread of its own
        # (`_promotions_of`), whose end `_promoted` tells (a cancel, a stop wait for it)
        self._due: dict[str, deque[_Due]] = {}
        self._promoted = threading.Condition(self._lock)
        # a stop's wait ended with promotions still due (`_stop_dispatching`): their outcome is left to the next start,
        # and nothing of it is written by this runner (until `start` again)
        self._left = False
        self._drop_gone_promotions()
        # jobs whose worker had finished and whose promotion a stopped process cut short: finished at `start`
        self._cut_promotions: list[str] = []
        self._recover()

    # -- the interface -------------------------------------------------------------------------

    def submit(self, kind: str, params: Mapping[str, Param], request_id: str | None = None) -> Job:
        """Queues a job of `kind`; `request_id`: the request that caused it (recorded, and given to its worker)."""
        if kind not in self.kinds:
            raise ValueError(f"unknown job kind {kind!r}; known: {', '.join(sorted(self.kinds))}")
        self.kinds[kind].check(params)
        job = Job(id=f"{int(time.time() * 1000):x}-{uuid.uuid4().hex[:8]}", kind=kind, params=dict(params), created_at=time.time(),
                  request_id=request_id)
        self.store.add(job)
        self._wake.set()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def list(self, *, kind: str | None = None, state: JobState | None = None, limit: int = 100) -> list[Job]:
        jobs = [j for j in self.store.all() if (kind is None or j.kind == kind) and (state is None or j.state == state)]
        return jobs[::-1][:limit]  # newest first

    def active(self) -> list[Job]:
        return self.store.active()

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (`cancel_requested`; a running worker gets SIGTERM, `_stop_running`). A job
        whose worker ended and whose promotion is due or under way (`_promotions_of`) is past cancelling, as one that
        ended: the cancel waits for its promotion's end (without the runner's lock) and returns the job as it ended.
        Raises UnknownJob."""
        with self._lock:
            while self._promotion_due(job_id):
                self._promoted.wait()
            job = self.store.get(job_id)
            if job is None:
                raise UnknownJob(job_id)
            if job.state == "queued":  # one queued again after a stop may hold its cut attempt's output and artifact folder
                job = self.store.put(self._discard_artifact(msgspec.structs.replace(job, state="cancelled", cancel_requested=True,
                                                                                    finished_at=time.time())))
                self._exited(job_id)  # no worker to wait for (a DELETE's note of what it may embed goes now)
                return job
            if job.state == "running":
                job = self.store.put(msgspec.structs.replace(job, cancel_requested=True))
                self._stop_running(job_id)
            return job

    def _stop_running(self, job_id: str) -> None:
        """Ask a running job's worker to stop (its process group gets SIGTERM; SIGKILL once it is still
        there `cancel_grace_s` later, `_poll_one`); called under the lock."""
        running = self._running.get(job_id)
        if running is not None:
            _kill_group(running.process.pid, signal.SIGTERM)
            if running.stop_asked_at is None:
                running.stop_asked_at = time.monotonic()

    def _cancel_overdue(self, job_id: str, stop_asked_at: float | None) -> str | None:
        """When the cancel's SIGTERM to job `job_id`'s worker, still running, was sent (`stop_asked_at`, monotonic)
        over `cancel_grace_s` ago: the log line saying it is killed now (logged here too); else None."""
        if stop_asked_at is None or time.monotonic() - stop_asked_at <= self.config.cancel_grace_s:
            return None
        note = f"still running {self.config.cancel_grace_s:g} s after the cancel's SIGTERM: killed (SIGKILL)"
        log.warning("job %s: %s", job_id, note)
        return note

    def purge(self, job_id: str) -> Job | None:
        """Stop the job if it is queued or running (its worker killed and waited for), then delete
        every file of it: record, log, output, result and artifact folder. For data that must
        not outlive a deleted user; a purged job is never re-run after a restart."""
        with self._lock:  # the dispatcher neither launches nor records it meanwhile
            running = self._running.pop(job_id, None)
            if running is not None:
                _kill_group(running.process.pid, signal.SIGKILL)
                running.process.wait()
                running.out.close()
                running.err.close()
            # the artifact folder before the record (`JobStore.remove` unlinks it last): a purge cut short by a kill leaves
            # the record, which names the job for the purge made again (a resumed DELETE's); the other order would leave
            # the folder (the user's adapter, its meta naming them) for good after a kill between the two
            shutil.rmtree(Path(self.config.folder) / "artifacts" / job_id, ignore_errors=True)
            job = self.store.remove(job_id)
            if running is not None or (job is not None and job.state in ACTIVE_STATES):  # a final one's was told at its end
                self._exited(job_id)
            return job

    def _exited(self, job_id: str) -> None:
        """Tell `on_exit` that the job's worker is gone: called once it has exited (or was removed); for a worker that
        exited by itself before the job's final record is written and again after it (`_ended`)."""
        if self.on_exit is not None:
            try:
                self.on_exit(job_id)
            except Exception:
                log.exception("after job %s's worker ended", job_id)

    def start(self) -> None:
        """Finish the jobs whose promotion the last process was stopped in (`_finish_cut_promotion`), then dispatch."""
        with self._lock:
            cut, self._cut_promotions = self._cut_promotions, []
            self._left = False  # promotions a stop of this runner left go on as ever
            again = [job for job_id in cut if (job := self._finish_cut_promotion(job_id)) is not None]
        for job in again:  # without the lock, as every `on_promote`
            self._serve_named_again(job)
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="job-runner", daemon=True)
            self._thread.start()

    def _stop_dispatching(self) -> None:
        """The dispatcher's thread told to stop and waited for (DISPATCH_STOP_WAIT_S, 10 s, at most), and the promotions
        due waited for within those 10 s too. One still waiting then (for its user's lock) goes on, but writes nothing
        once it is over, nor is a promotion due after it decided (`_left`): its job, still `running` on disk, is finished
        at the next start when promotions.json names it, else run again (never its outcome written whenever its wait ends, which could be over
        what the next runner on the folder recorded); `start` begins another."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + DISPATCH_STOP_WAIT_S
        if self._thread is not None:
            self._thread.join(timeout=DISPATCH_STOP_WAIT_S)
            self._thread = None
        with self._lock:
            while self._due and (left := deadline - time.monotonic()) > 0:
                self._promoted.wait(left)
            self._left = bool(self._due)

    def stop(self) -> None:
        """Stop dispatching; running workers are stopped (SIGTERM, and SIGKILL for those still there STOP_WAIT_S
        later, all waited for together) and their jobs queued again for next start (cancelled ones end cancelled)."""
        self._stop_dispatching()
        with self._lock:
            for running in self._running.values():
                _kill_group(running.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_WAIT_S  # one wait for all of them, not STOP_WAIT_S each
            for job_id, running in list(self._running.items()):
                try:
                    running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _kill_group(running.process.pid, signal.SIGKILL)
                    running.process.wait()
                running.out.close()
                running.err.close()
                job = self.store.get(job_id)
                if job is not None and job.state == "running":  # a full disk here must not leave the next workers running
                    self._record(self._stopped_record(job, "interrupted by shutdown; queued again"))
                self._exited(job_id)
            self._running.clear()

    def _stopped_record(self, job: Job, note: str) -> Job:
        """`job`, left running when its worker was stopped with the runner (or the runner was), queued again with
        `note` ending its log tail; or, its cancel asked for before (a worker that had not yet acted on the SIGTERM,
        inside `cancel_grace_s`), cancelled, its artifact folder removed, as a cancel that ran to its end."""
        if job.cancel_requested:
            note = "the runner stopped before the cancelled worker exited: cancelled, not run again"
            return self._discard_artifact(msgspec.structs.replace(job, state="cancelled", pid=None, finished_at=time.time(),
                                                                  log_tail=[*job.log_tail, note][-self.config.log_lines :]))
        return msgspec.structs.replace(job, state="queued", pid=None, log_tail=[*job.log_tail, note][-self.config.log_lines :])

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until a job is final (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            if job is not None and job.state not in ACTIVE_STATES:
                return job
            time.sleep(self.config.poll_seconds / 2)
        raise TimeoutError(f"job {job_id} still {self.store.get(job_id).state} after {timeout} s")

    # -- the dispatcher ----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Jobs left queued or running by a previous process are queued again, their workers stopped:
        the one a `running` record names, and any other process carrying the id of a job left queued
        or running (`JOB_ENV`): a worker started by a process killed before its record named it
        (`_start_worker`: the record still `queued`), which would otherwise run on unknown, beside
        the job's next worker, writing the same artifact folder. One whose promotion it was stopped in
        is finished at `start` instead (`_promoting`); one whose cancel was asked for ends cancelled."""
        left = {job.id for job in self.store.all() if job.state in ACTIVE_STATES}
        folder = _folder_key(self.config.folder)
        for pid in _workers_of(left, folder) if left else []:
            log.warning("stopping worker %d of job %s, left running by a stopped service", pid, _worker_job(pid, folder))
            _kill_group(pid, signal.SIGKILL)
        if removed := remove_write_leftovers(Path(self.config.folder)):
            log.warning("removed %d temp files that writes cut short by a stopped service left in %s", removed, self.config.folder)
        promoting = self._promoting()
        for job in self.store.all():
            if job.state != "running":
                continue
            if job.pid is not None and _worker_job(job.pid, folder) == job.id:
                _kill_group(job.pid, signal.SIGKILL)
            if job.id in promoting:
                self._cut_promotions.append(job.id)
                continue
            if job.attempts >= self.config.max_attempts and not job.cancel_requested:  # e.g. one that takes the machine down each time
                note = f"runner restarted during attempt {job.attempts}; gave up after {job.attempts} attempts"
                self._record(self._discard_artifact(msgspec.structs.replace(job, state="failed", pid=None, finished_at=time.time(), error=note,
                                                                            log_tail=[*job.log_tail, note][-self.config.log_lines :])))
                continue
            self._record(self._stopped_record(job, f"runner restarted during attempt {job.attempts}; queued again"))
        self._remove_unkept_results()

    def _remove_unkept_results(self) -> None:
        """A job recorded failed after its worker succeeded (its check or its finishing failed) whose result is still
        there loses it (`_without_result`), and any other failed or cancelled job its output and artifact folder
        (`_discard_artifact`): a removal that failed before, or an earlier release (that kept the output, or the
        artifact of a job cancelled while queued again after a stop) left it."""
        for job in self.store.all():
            if job.state not in ("failed", "cancelled"):
                continue
            if not (job.error or "").startswith((CHECK_FAILED, FINISH_FAILED)):
                if job.artifact is not None or self.store.path(job.id, "out").is_file():
                    self._record(self._discard_artifact(job))
            elif job.metrics or job.result_path or any(self.store.path(job.id, n).is_file() for n in ("result.json", "out")):
                self._record(self._result_removed(job))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._poll()
                    self._launch()
            except Exception:  # the dispatcher must outlive any one job's trouble
                log.exception("job runner step failed")
                self.failed_rounds += 1
            else:
                self.rounds += 1
            self._wake.wait(self.config.poll_seconds)
            self._wake.clear()

    def _launch(self) -> None:
        """Start queued jobs while workers are free, in turns per tenant (`tenant_of`) over every kind of job: the next
        is one of the tenant whose last job started longest ago (never: first; `_turn`), so one tenant's many queued
        jobs, audits or training, never keep another tenant's job waiting behind them all."""
        queued = [j for j in self.store.active() if j.state == "queued" and self._may_start(j)]
        while queued and len(self._running) < self.config.workers and not self._stopping.is_set():
            job = min(queued, key=self._turn)
            queued.remove(job)
            try:
                self._start_worker(job)  # its record's `started_at` is its tenant's turn taken
                self._went_ahead(job, queued)
            except Exception as exc:
                log.exception("job %s could not start", job.id)
                # queued again after a stop, it may hold its cut attempt's output and artifact folder
                self._record(self._discard_artifact(msgspec.structs.replace(job, state="failed", pid=None, error=f"could not start: {_problem(exc)}",
                                                                            finished_at=time.time())))
                self._exited(job.id)  # none of its workers ran

    def _went_ahead(self, job: Job, queued: list[Job]) -> None:
        """Note whether `job`, just started, went ahead of a job of its tenant still `queued` of a kind after its own (`_turn`)."""
        tenant, priority = tenant_of(job.params), self._priority(job.kind)
        if any(self._priority(j.kind) > priority and tenant_of(j.params) == tenant for j in queued):
            self._ahead[tenant] = job.id
        else:
            self._ahead.pop(tenant, None)

    def _may_start(self, job: Job) -> bool:
        """Whether queued `job` may start now (the Ray runner holds back a job Ray could not place for a while)."""
        return True

    def _turn(self, job: Job) -> tuple[int, int, float, str]:
        """Where queued `job` stands in the order jobs start (`_launch`, the least first): when its tenant's last job
        started (`JobStore.turn`, from the job records: a restart, local or on Ray, keeps the turns; never: first),
        then its kind's `priority` (within a tenant's turn its audits go before its training: short, and someone is
        usually waiting on them; among tenants none of whose jobs started yet, any audit first), then its arrival
        (`created_at`). A kind's priority puts it ahead for one start in a row: when the tenant's last start went ahead
        of a queued job of its own of a kind after it (an audit ahead of training: `_went_ahead`), that kind goes after
        the others this time. Ahead every time, a script's audits (a poll whose `since` moves is a new audit each time)
        kept the tenant's training from ever starting while one more arrived before the last ended; an audit that went
        ahead of nothing (no training queued at its start) puts no later audit behind the training queued since."""
        priority = self._priority(job.kind)
        tenant = tenant_of(job.params)
        latest = self.store.latest_start(tenant)
        if latest is not None and self._ahead.get(tenant) == latest.id and priority <= self._priority(latest.kind):
            priority += AFTER_THE_OTHERS  # the kind that went ahead last time waits for the others this time
        return (self.store.turn(tenant), priority, job.created_at, job.id)

    def _priority(self, kind: str) -> int:
        return self.kinds[kind].priority if kind in self.kinds else 0

    def _worker_of(self, job: Job) -> tuple[JobKind, Path, list[str]]:
        """The job's kind, its artifact folder (made here) and its worker's command line. Raises
        ValueError for a kind this runner does not know."""
        kind = self.kinds.get(job.kind)
        if kind is None:
            raise ValueError(f"unknown job kind {job.kind!r}")
        artifact = Path(self.config.folder) / "artifacts" / job.id
        artifact.mkdir(parents=True, exist_ok=True)
        return kind, artifact, kind.command(job, artifact)

    def _worker_env(self, job: Job, threads: int) -> dict[str, str]:
        """The variables a job's worker gets (a local one beside this process's own): progress lines on,
        `threads` for each math library, the Hub offline, the runner's `env`, the job's id and its cause."""
        n = str(threads)
        return {PROGRESS_ENV: "1", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", **self.config.env, JOB_ENV: job.id, FOLDER_ENV: _folder_key(self.config.folder),
                **cause_env(job)}

    def _start_worker(self, job: Job) -> None:
        _, artifact, argv = self._worker_of(job)
        env = {**os.environ, **self._worker_env(job, self.config.worker_threads)}
        # held open, readable: what the worker writes is read from these, so a cleanup that removes the
        # files (`*.log`) while it runs takes neither its progress nor its result
        out = open(self.store.path(job.id, "out"), "w+b")
        err = open(self.store.path(job.id, "log"), "w+b")
        try:
            process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.config.cwd, env=env, start_new_session=True)
        except BaseException:
            out.close()
            err.close()
            raise
        try:
            os.setpriority(os.PRIO_PROCESS, process.pid, self.config.nice)
        except OSError:
            pass
        try:  # recorded running before it counts as running: a worker no record names is never left behind
            self.store.put(msgspec.structs.replace(
                job, state="running", pid=process.pid, attempts=job.attempts + 1, started_at=time.time(), progress=0.0,
                artifact=str(artifact), error=None, log_tail=[*job.log_tail, "$ " + " ".join(argv[1:])][-self.config.log_lines :],
            ))
        except BaseException:
            _kill_group(process.pid, signal.SIGKILL)
            process.wait()
            out.close()
            err.close()
            raise
        self._running[job.id] = _Running(job.id, process, out, err)

    def _write_unwritten(self) -> None:
        """Write the records a full disk refused earlier (`_record`), once it has room: called at each poll."""
        for job_id in sorted(self._unwritten):
            self._unwritten.discard(job_id)
            job = self.store.get(job_id)
            if job is not None:
                self._record(job)

    def _poll(self) -> None:
        self._write_unwritten()
        for job_id, running in list(self._running.items()):
            try:
                self._poll_one(job_id, running)
            except Exception as exc:  # one job's trouble (its log unreadable, ...) never stalls the others
                log.exception("polling job %s failed", job_id)
                if running.process.poll() is not None and self._running.pop(job_id, None) is not None:
                    running.out.close()
                    running.err.close()
                    job = self.store.get(job_id)
                    if job is None:
                        self._exited(job_id)
                    else:  # its result never checked: neither its output nor its artifact is kept
                        self._ended(_failed(self._discard_artifact(job), f"the runner could not finish it: {_problem(exc)}"))

    def _poll_one(self, job_id: str, running: _Running) -> None:
        job = self.store.get(job_id)
        if job is None:  # purged (perhaps while it was being launched): stop it, leave no file
            _kill_group(running.process.pid, signal.SIGKILL)
            if running.process.poll() is not None:
                running.out.close()
                running.err.close()
                del self._running[job_id]
                for suffix in ("log", "out"):
                    self.store.path(job_id, suffix).unlink(missing_ok=True)
                shutil.rmtree(Path(self.config.folder) / "artifacts" / job_id, ignore_errors=True)
                self._exited(job_id)
            return
        code = running.process.poll()
        if code is None and running.over_memory_mb is None and self.config.memory_mb is not None:
            held = _resident_mb(running.process.pid)
            if held > self.config.memory_mb:
                running.over_memory_mb = held
                log.warning("job %s holds %.1f MB, over the cap of %d MB: killed", job_id, held, self.config.memory_mb)
                _kill_group(running.process.pid, signal.SIGKILL)
                code = running.process.wait()
        overdue = self._cancel_overdue(job_id, running.stop_asked_at) if code is None else None
        if overdue is not None:
            _kill_group(running.process.pid, signal.SIGKILL)
            code = running.process.wait()
        # read once its exit is known: what a worker wrote just before it exited (a traceback's last line, which the
        # error names) is in the record (read before, it could be missing)
        progress, tail = self._read_log(job_id)
        if overdue is not None:
            tail = [*tail, overdue][-self.config.log_lines :]
        if code is None:
            if progress != job.progress or tail != job.log_tail:
                self._record(msgspec.structs.replace(job, progress=progress, log_tail=tail))
            return
        output = _held_bytes(running.out)  # the result line, even if the file was removed
        running.out.close()
        running.err.close()
        del self._running[job_id]
        if running.over_memory_mb is not None:
            note = (f"memory cap exceeded: the worker held {running.over_memory_mb:.1f} MB of resident memory, over the cap "
                    f"of {self.config.memory_mb} MB (setting job_memory_mb); it was killed")
            self._ended(self._discard_artifact(msgspec.structs.replace(job, state="failed", pid=None, finished_at=time.time(), error=note,
                                                                       log_tail=[*tail, note][-self.config.log_lines :])))
            return
        self._finished(job, code, progress, tail, output)

    def _finished(self, job: Job, code: int, progress: float, tail: list[str], output: bytes | None = None, cut: bool = False) -> None:
        """Record a job whose worker exited: `_finish`'s verdict, or failed with why when finishing
        it raised (a full disk writing result.json or promotions.json), never left running; or, a succeeded job to be
        put into service, queue its promotion (`_queue_promotion`; `cut`: one a stop cut short, `_finish_cut_promotion`)."""
        try:
            final = self._finish(job, code, progress, tail, output)
        except Exception as exc:
            log.exception("finishing job %s failed", job.id)
            final = self._unfinished(msgspec.structs.replace(job, log_tail=tail), exc)
        if self._to_put_into_service(final):
            self._queue_promotion(final, cut)
            return
        self._conclude(final)

    def _unfinished(self, job: Job, exc: Exception) -> Job:
        """`job`, whose worker succeeded, failed since finishing it raised `exc`, without its result (`_result_removed`)."""
        return self._result_removed(_failed(job, f"{FINISH_FAILED}: {_problem(exc)}"))

    def _conclude(self, final: Job) -> None:
        """Record `final`, a job that ended (`_ended`), out of promotions.json when it is not promoted."""
        if final.promoted is not True:  # e.g. a cut-short promotion finished again whose check now fails
            try:
                self._withdraw_all(final)
            except OSError as exc:
                log.error("could not take job %s out of promotions.json: %s", final.id, _problem(exc))
        self._ended(final)

    def _to_put_into_service(self, job: Job) -> bool:
        """Whether `job`, as `_finish` left it, is one whose promotion is decided and put into service on a thread of
        its own (`_queue_promotion`): succeeded, of a kind with a promotion key, with a held-out figure, and there is an
        `on_promote`."""
        kind = self.kinds.get(job.kind)
        return (self.on_promote is not None and job.state == "succeeded" and job.promoted is None and kind is not None
                and kind.promotion_key is not None and _heldout(job) is not None)

    def _promotion_due(self, job_id: str) -> bool:
        """Whether job `job_id`'s promotion is due or under way (`_due`); under the lock."""
        return any(due.job.id == job_id for queue in self._due.values() for due in queue)

    def _served_as(self, job: Job) -> str:
        """What `job`'s promotion puts into service: its kind's `served_model` (`pal` and `em` jobs: the one population
        model), else its promotion key."""
        kind = self.kinds[job.kind]
        return kind.served_model or kind.promotion_key(job)

    def _queue_promotion(self, job: Job, cut: bool) -> None:
        """Queue the promotion of succeeded `job` behind those due before it of what it puts into service (`_served_as`:
        its key, or the population model a `pal` and an `em` job both swap), and start that queue's thread
        (`_promotions_of`) when none runs; under the lock. So the model served is the one of the job whose worker ended
        last (a `pal` and an `em` job promoted on threads of their own would serve whichever population model's swap
        came last). Its worker is gone: `on_exit` is told now, and again once its
        record is written."""
        served_as = self._served_as(job)
        queue = self._due.setdefault(served_as, deque())
        queue.append(_Due(job, cut))
        self._exited(job.id)
        if len(queue) == 1:
            # named without the key: a thread name shows in logs and dumps, and an adapter's key names its user
            threading.Thread(target=self._promotions_of, args=(served_as, queue), name="job-promotion", daemon=True).start()

    def _promotions_of(self, served_as: str, queue: deque[_Due]) -> None:
        """The thread promoting the jobs `queue` holds for `served_as` (`_served_as`), one at a time (a later one is
        compared with what the one before left served for its key, and swapped in after it), until none is left
        (`_promote_due`)."""
        while True:
            due = queue[0]  # only this thread takes from the queue
            try:
                self._promote_due(due, self.kinds[due.job.kind].promotion_key(due.job))
            except Exception:  # one job's trouble never stops the next one's promotion
                log.exception("promoting job %s failed", due.job.id)
            with self._lock:
                queue.popleft()
                self._promoted.notify_all()
                if not queue:
                    del self._due[served_as]
                    return

    def _promote_due(self, due: _Due, key: str) -> None:
        """Promote `due.job` for `key`: under the runner's lock, promotions.json considers it (`_considered`: a stop
        from then on finishes its promotion at the next start, `_finish_cut_promotion`); without the lock, `on_promote`
        puts it into service; under the lock again its record is written (`_ended`). A job purged meanwhile (its user's
        DELETE) is recorded no more; `on_promote` finds it gone (`Admin.put_into_service` looks, under the user's lock).
        A promotion a stop cut short that does not finish puts back what promotions.json names (`_serve_named_again`)."""
        job = due.job
        with self._lock:
            # purged while its promotion was due: nothing of it is recorded again; or left by a stop to the next start
            if self._left or self.store.get(job.id) is None:
                return
            try:
                considered, replaced = self._considered(job)
            except Exception as exc:  # promotions.json could not be written: nothing promoted
                log.exception("finishing job %s failed", job.id)
                considered, replaced = self._unfinished(job, exc), None
            if considered.promoted is not True:
                self._conclude(considered)
        if considered.promoted is True:
            try:
                self.on_promote(considered, key)
                problem = None
            except Exception as exc:
                problem = exc
            with self._lock:
                if self._left:  # a stop gave up waiting for it: the next start finishes it, as promotions.json names it
                    log.warning("job %s's promotion ended after the runner stopped: the next start finishes it", job.id)
                    return
                try:
                    final = self._served_or_not(considered, key, replaced, problem)
                except Exception as exc:  # promotions.json could not be written back
                    log.exception("finishing job %s failed", job.id)
                    final = self._unfinished(considered, exc)
                if self.store.get(job.id) is not None:  # a purge meanwhile removed it for good
                    self._conclude(final)
        done = self.store.get(job.id)
        if due.cut and done is not None and done.promoted is not True:
            self._serve_named_again(job)

    def _ended(self, final: Job) -> None:
        """Write `final`, the record of a job whose worker exited, telling `on_exit` before it (whoever sees the job ended
        sees what `on_exit` did) and again after it: a reader of `active()` in between (a DELETE noting what the job may
        embed, `Admin.forget_vectors_at_exit`) still saw it running, and what it noted then goes at this exit, not only
        at another job's exit or the next start."""
        self._exited(final.id)
        self._record(final)
        self._exited(final.id)

    def _record(self, job: Job) -> None:
        """Write the job's record; when that fails (a full disk), hold it in memory, so readers see
        its state at once, and write it again at each poll until it is on disk."""
        try:
            self.store.put(job)
        except OSError as exc:
            log.error("could not write job %s's record (%s); kept in memory, written again at the next poll", job.id, _problem(exc))
            self.store.hold(job)
            self._unwritten.add(job.id)

    def _read_log(self, job_id: str) -> tuple[float, list[str]]:
        path = self.store.path(job_id, "log")
        running = self._running.get(job_id)
        try:
            if isinstance(running, _Running):  # the file this runner holds, there whether or not its name is
                data = _held_bytes(running.err, last=65536)
            else:
                with open(path, "rb") as f:
                    data = _held_bytes(f, last=65536)
            lines = data.decode("utf-8", "replace").replace("\r", "\n").splitlines()
        except FileNotFoundError:  # removed behind the runner's back (a cleanup of *.log): the job goes on
            job = self.store.get(job_id)
            if job is None:
                return 0.0, []
            note = f"its log {path} was removed while it ran: no more progress or log lines from it"
            return job.progress, job.log_tail if note in job.log_tail else [*job.log_tail, note][-self.config.log_lines :]
        progress = 0.0
        kept: list[str] = []
        for line in lines:
            if line.startswith(PROGRESS_PREFIX):
                try:
                    progress = float(line[len(PROGRESS_PREFIX) :])
                except ValueError:
                    pass
            elif line.strip():
                kept.append(shorten(line, LOG_LINE_CHARS))  # between grapheme clusters: an emoji is kept whole or left out
        job = self.store.get(job_id)
        if progress == 0.0 and job is not None:
            progress = job.progress
        return progress, kept[-self.config.log_lines :]

    def _finish(self, job: Job, code: int, progress: float, tail: list[str], output: bytes | None = None) -> Job:
        """`output`: the worker's standard output (None: read from its file)."""
        done = dict(state="failed", pid=None, finished_at=time.time(), log_tail=tail)
        if job.cancel_requested:
            return self._discard_artifact(msgspec.structs.replace(job, **{**done, "state": "cancelled"}))
        if code < 0:  # a signal the runner did not send (it sends SIGTERM only to cancel, recorded above)
            name = _signal_name(-code)
            last = f"; its last line: {tail[-1]}" if tail else ""
            return self._discard_artifact(msgspec.structs.replace(job, **done, error=(
                f"killed by {name} (exit code {code}) from outside the job runner (the out-of-memory killer, an operator, "
                f"a shutdown); what it had written of its artifact was removed{last}")))
        if code != 0:
            reason = tail[-1] if tail else "no output"
            return self._discard_artifact(msgspec.structs.replace(job, **done, error=f"exit code {code}: {reason}"))
        result = _last_json_line(self.store.path(job.id, "out").read_bytes() if output is None else output)
        if result is None:
            return self._discard_artifact(msgspec.structs.replace(job, **done, error="the worker printed no JSON result"))
        result_path = self.store.path(job.id, "result.json")
        write_atomic(result_path, msgspec.json.encode(result))
        metrics = result_metrics(result)
        finished = msgspec.structs.replace(
            job, **{**done, "state": "succeeded"}, progress=1.0, metrics=metrics, result_path=str(result_path),
            artifact=str(result.get("artifact") or result.get("adapter") or job.artifact),
        )
        if self.on_succeed is not None:
            try:
                self.on_succeed(finished)
            except Exception as exc:  # its artifact and result may hold what must not be kept: never promoted, removed
                log.exception("checking job %s's result failed", job.id)
                shutil.rmtree(Path(self.config.folder) / "artifacts" / job.id, ignore_errors=True)
                failed = msgspec.structs.replace(finished, state="failed", error=f"{CHECK_FAILED}: {exc}", artifact=None)
                return self._result_removed(failed)
            # the check may have rewritten the result (an audit's groups of users deleted while it ran): its figures as kept
            checked = _last_json_line(result_path.read_bytes())
            if checked is not None and checked != result:
                finished = msgspec.structs.replace(finished, metrics=result_metrics(checked))
        return self._promote(finished)

    def _promoting(self) -> set[str]:
        """The jobs promotions.json names: one of them still `running` had its worker finish and was being
        promoted (`_promote` records the job only after `consider` wrote promotions.json and `on_promote`
        put it into service) when the process stopped."""
        return {served.job_id for key in self.promotions.keys() if (served := self.promotions.served(key)) is not None}

    def _finish_cut_promotion(self, job_id: str) -> Job | None:
        """Finish a job whose promotion the last process was stopped in: its worker had exited with its
        result, so that result is read again from its output file and the job is promoted again (put into
        service again: the model promotions.json names is the one served, whichever step the stop cut),
        neither run again over the artifact promotions.json names nor given up with that artifact removed.
        A job that is not promoted this time (its check or putting it into service fails) leaves
        promotions.json (`_finished`), and what it names is put into service again (`_serve_named_again`): returns the
        job when that is owed now, done by the caller without the lock (a promotion queued does it itself). Under the lock."""
        job = self.store.get(job_id)
        if job is None or job.state != "running":
            return None
        note = f"the runner stopped while this job's promotion was under way (attempt {job.attempts}); its promotion was cut short and is finished now"
        log.warning("job %s: %s", job.id, note)
        tail = [*job.log_tail, note][-self.config.log_lines :]
        self._finished(msgspec.structs.replace(job, log_tail=tail), 0, 1.0, tail, cut=True)
        done = self.store.get(job_id)
        return job if done is not None and done.state != "running" and done.promoted is not True else None  # not queued

    def _serve_named_again(self, job: Job) -> None:
        """After a cut-short promotion of `job` that did not finish: put what promotions.json names for what its
        promotion puts into service (what was served before it, `_withdraw_all`; `_named_last`) into service again,
        since the stop may have come after `job`'s model was put in. A failure is logged; the next start or promotion
        puts a model in again."""
        kind = self.kinds.get(job.kind)
        if self.on_promote is None or kind is None or kind.promotion_key is None:
            return
        key, served, before = self._named_last(self._served_as(job))
        if served is None or before is None or not before.artifact:
            return
        try:
            self.on_promote(msgspec.structs.replace(before, artifact=served.artifact), key)
        except NotServed as exc:
            log.warning("job %s (named in promotions.json for %s) is not put into service again: %s", before.id, key, exc)
        except Exception:
            log.exception("job %s's promotion was cut short and did not finish; putting job %s (named in promotions.json "
                          "for %s) into service again failed", job.id, before.id, key)

    def _named_last(self, served_as: str) -> tuple[str, Served | None, Job | None]:
        """What promotions.json names as promoted last among the keys whose jobs put `served_as` into service
        (`_served_as`: one key, or `pal` and `em` for the population model), with its key and job record; ("", None,
        None) when none. What a cut `pal` promotion that did not finish puts back: not what the `pal` key names, which may
        be older than an `em` model promoted after it. Promoted last: the job whose worker's end was noted last
        (`finished_at`), the order its promotions are made in (`_queue_promotion`); not the entries' `promoted_at`,
        which an entry named again after a cut promotion (`_served_before`) takes from that job's end, before its
        promotion began (by `promoted_at`, an `em` model would be put back over a `pal` one promoted after it)."""
        named = []
        for key in self.promotions.keys():
            served = self.promotions.served(key)
            before = self.store.get(served.job_id) if served is not None else None
            kind = self.kinds.get(before.kind) if before is not None else None
            if kind is not None and kind.promotion_key is not None and self._served_as(before) == served_as:
                ended = before.finished_at if before.finished_at is not None else served.promoted_at
                named.append((ended, served.promoted_at, key, served, before))
        if not named:
            return "", None, None
        *_, key, served, before = max(named, key=lambda entry: entry[:2])
        return key, served, before

    def _served_before(self, job: Job, key: str) -> Served | None:
        """What was served for `key` before `job`, whose promotion was cut short (promotions.json names `job` and
        no longer what it replaced): the job promoted for `key` last before it whose artifact is still there, as
        its record says, or None."""
        def keyed(j: Job) -> str | None:
            kind = self.kinds.get(j.kind)
            return kind.promotion_key(j) if kind is not None and kind.promotion_key is not None else None

        before = [(j, accuracy) for j in self.store.all() if j.id != job.id and j.state == "succeeded" and j.promoted is True
                  and j.artifact and self._artifact_there(j.artifact, j.id) and (accuracy := _heldout(j)) is not None and keyed(j) == key]
        if not before:
            return None
        last, accuracy = max(before, key=lambda pair: pair[0].finished_at or 0.0)
        return Served(artifact=last.artifact or "", heldout_accuracy=accuracy, job_id=last.id, promoted_at=last.finished_at or 0.0)

    def _drop_gone_promotions(self) -> None:
        """Stop naming, in promotions.json, an artifact folder that is gone (what an earlier release left when
        it gave up a job killed mid-promotion, or an operator's removal): a next candidate is compared with
        what is there, and nothing reads a folder that is not. The served model itself is left as it is."""
        for key in self.promotions.keys():
            served = self.promotions.served(key)
            if served is None or not served.artifact or self._artifact_there(served.artifact, served.job_id):
                continue
            log.warning("promotions.json named %s for %s (job %s), which is gone: no longer named, and the next %s "
                        "candidate is promoted without a comparison", served.artifact, key, served.job_id, key)
            try:
                self.promotions.withdraw(key, served.job_id, None)
            except OSError as exc:  # a full disk: named still, tried again at the next start
                log.error("could not rewrite promotions.json: %s", _problem(exc))
                return

    def _artifact_there(self, artifact: str, job_id: str) -> bool:
        """Whether job `job_id`'s artifact folder `artifact` (as its record or promotions.json names it) is there. A
        path recorded relative (a data folder given as `./data`) is read from another working folder at a later
        start: the job's own folder in this runner's `artifacts` counts too, so it is not taken for gone."""
        return Path(artifact).exists() or (Path(self.config.folder) / "artifacts" / job_id).is_dir()

    def _withdraw_all(self, job: Job) -> None:
        """Take job `job` out of promotions.json wherever it is named (it ended without being promoted): what
        was served before it is named again (`_served_before`)."""
        for key in self.promotions.keys():
            served = self.promotions.served(key)
            if served is not None and served.job_id == job.id:
                self.promotions.withdraw(key, job.id, self._served_before(job, key))

    def _discard_artifact(self, job: Job) -> Job:
        """`job` (failed or cancelled: its worker did not finish) without its artifact folder: what a worker
        killed mid-save left there (temp files, part of a checkpoint) is removed, never left where a reader
        of `jobs/artifacts/` or a later attempt could take it for an artifact. The record names none. Its
        output goes too (`_remove_output`)."""
        shutil.rmtree(Path(self.config.folder) / "artifacts" / job.id, ignore_errors=True)
        self._remove_output(job.id)
        return msgspec.structs.replace(job, artifact=None)

    def _remove_output(self, job_id: str) -> None:
        """Remove the output (`out`, the worker's stdout) of a job that did not succeed: a result line its worker
        printed before it failed or was stopped (then a crash at shutdown, a kill, a cancel) was never checked
        (`on_succeed`), and an audit's holds group names (an attribute's value a user sent) and figures of users
        no DELETE finds there (kept, it would stay until the retention purged the job). What the worker
        wrote on stderr stays in its log. A failure is logged; the next start removes it (`_remove_unkept_results`)."""
        try:
            self.store.path(job_id, "out").unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not remove the output of job %s (%s): removed at the next start", job_id, _problem(exc))

    def _without_result(self, job: Job) -> Job:
        """`job`, recorded failed after its worker succeeded (its result's check or its finishing failed), without its
        result: result.json and `out` (the worker's output the result was read from) are removed and its record names
        no metrics nor result; its error and log tail stay. The check is what keeps a result to what may outlive its
        users (an audit's members file, which a DELETE reads; a snapshot's users): one it did not pass may hold the
        figures, and an audit's group names (an attribute's value a user sent), of users deleted since, which no
        DELETE finds (kept, they would stay until the retention purged the job). Raises OSError when a file
        cannot be removed."""
        for name in ("result.json", "out"):
            self.store.path(job.id, name).unlink(missing_ok=True)
        return msgspec.structs.replace(job, metrics={}, result_path=None)

    def _result_removed(self, job: Job) -> Job:
        """`_without_result`; when a file cannot be removed, logged, and `_recover` tries again at the next start."""
        try:
            return self._without_result(job)
        except OSError as exc:
            log.error("could not remove the result of job %s (%s): removed at the next start", job.id, _problem(exc))
            return msgspec.structs.replace(job, metrics={}, result_path=None)

    def _promote(self, job: Job) -> Job:
        """`job` (succeeded) with its promotion decided, where nothing is put into service now (`_considered`); one
        `on_promote` puts into service is left as it is, for `_queue_promotion`."""
        if self._to_put_into_service(job):
            return job
        return self._considered(job)[0]

    def _considered(self, job: Job) -> tuple[Job, Served | None]:
        """`job` (succeeded) as promotions.json decides it (`Promotions.consider`): `promoted`, `promotion_note` and the
        held-out figure of what it would replace in its metrics; and what was served for its key before it (None:
        nothing). Under the lock. Raises OSError when promotions.json cannot be written."""
        kind = self.kinds[job.kind]
        if kind.promotion_key is None:
            return job, None
        accuracy = _heldout(job)
        if accuracy is None:
            note = f"kept, not served: the result has none of {', '.join(HELDOUT_METRICS)}"
            if job.metrics.get("held_out") == 0:  # train adapter: under 5 comparisons, or repeats of too few different ones
                note += ("; it held no comparison out to measure it on (fewer than 5, or too few different ones: "
                         "a comparison given again counts once)")
            return msgspec.structs.replace(job, promoted=False, promotion_note=note), None
        key = kind.promotion_key(job)
        replaced = self.promotions.served(key)
        if replaced is not None and replaced.job_id == job.id:  # its own promotion, cut short and finished again
            replaced = self._served_before(job, key)
        promoted, note = self.promotions.consider(key, job.artifact or "", accuracy, job.id)
        metrics = {**job.metrics, "replaced_heldout_accuracy": replaced.heldout_accuracy} if replaced else job.metrics
        return msgspec.structs.replace(job, promoted=promoted, promotion_note=note, metrics=metrics), replaced

    def _served_or_not(self, job: Job, key: str, replaced: Served | None, problem: Exception | None) -> Job:
        """`job`, promoted for `key` (`_considered`), once `on_promote` put it into service (`problem` None) or raised
        `problem`: then not promoted, why in its note, and `replaced` named in promotions.json again (the one the next
        candidate is compared with). Under the lock; raises OSError when promotions.json cannot be written."""
        if problem is None:
            return job
        if isinstance(problem, NotServed):  # a sound artifact this service does not serve: said, with no traceback
            log.warning("job %s is kept, not served: %s", job.id, problem)
            note = f"kept, not served: {problem}"
        else:  # not served: recorded so, and the earlier artifact stays the one compared with
            log.error("putting job %s into service failed", job.id, exc_info=problem)
            still = f"job {replaced.job_id} still served" if replaced else "nothing is served for it yet"
            note = f"kept, not served: putting it into service failed: {_problem(problem)}; {still}"
        self.promotions.withdraw(key, job.id, replaced)
        return msgspec.structs.replace(job, promoted=False, promotion_note=note)


class NotServed(Exception):
    """What `on_promote` raises for an artifact it will not put into service though nothing is wrong with it
    (its message says why, and how to serve it otherwise): the job is `promoted: false` with the message in its
    `promotion_note`, logged at WARNING, and what was served before stays the one compared with."""


def _heldout(job: Job) -> float | None:
    """The held-out accuracy promotion compares (the first of HELDOUT_METRICS in the job's metrics), or None."""
    return next((job.metrics[m] for m in HELDOUT_METRICS if m in job.metrics and math.isfinite(job.metrics[m])), None)


def result_metrics(result: dict) -> dict[str, float]:
    """A job's `metrics` from its worker's JSON result: its top-level numbers (booleans and nulls left out)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _failed(job: Job, error: str) -> Job:
    """The job as failed with `error`, its worker gone; the error ends its log tail too."""
    return msgspec.structs.replace(job, state="failed", pid=None, finished_at=time.time(), error=error,
                                   log_tail=[*job.log_tail, error][-30:])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _problem(exc: BaseException) -> str:
    """An exception as one line: an OSError as "No space left on device: <path>", others as their message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _held_bytes(f, last: int | None = None) -> bytes:
    """What an open file holds (its `last` bytes), read at an offset: a writer sharing its position
    (the worker's stdout or stderr) is not moved."""
    size = os.fstat(f.fileno()).st_size
    start = 0 if last is None else max(0, size - last)
    return os.pread(f.fileno(), size - start, start)


def _last_json_line(output: bytes) -> dict | None:
    for line in reversed(output.splitlines()):
        if line.strip().startswith(b"{"):
            try:
                value = msgspec.json.decode(line)
            except DECODE_ERRORS:
                return None
            return value if isinstance(value, dict) else None
    return None


def _resident_mb(pid: int) -> float:
    """Resident memory (MB) of process `pid` and all its descendants; 0 once it is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total / 2**20


# `pluralign.files.atomic_writer`'s temp file beside `name` (tempfile.mkstemp: the prefix `.<name>.`, 8 random characters)
WRITE_LEFTOVER = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}")


def remove_write_leftovers(folder: Path, running: Collection[str] = ()) -> int:
    """Remove the temp files whole-file writes cut short by a killed process left in a jobs folder: beside
    the records, results, outputs and promotions.json, and in the artifact folders but those of the jobs
    `running` names (their workers, still running, may be writing there: a Ray runner's start attaches to
    them). They hold what the file they were to replace held (a record's params: whom the job is for; an
    audit's members and groups as they were before a DELETE took a user out), and nothing reads or removes
    them, also when a DELETE of that user later removes the files themselves. Called while no write is in
    flight there (a runner's start, its old local workers stopped). Returns how many went."""
    removed = 0
    artifacts = folder / "artifacts"
    inside = [p for d in sorted(artifacts.iterdir()) if d.is_dir() and d.name not in running for p in d.rglob(".*")] if artifacts.is_dir() else []
    for path in [*folder.glob(".*"), *(artifacts.glob(".*") if artifacts.is_dir() else []), *inside]:
        if WRITE_LEFTOVER.fullmatch(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _folder_key(folder: str | os.PathLike) -> str:
    """A jobs folder as its workers' FOLDER_ENV names it: absolute, symlinks resolved."""
    return str(Path(folder).resolve())


def _worker_job(pid: int, folder: str) -> str | None:
    """The job id in process `pid`'s environment (`JOB_ENV`) when a runner of `folder` (`_folder_key`) started it,
    or None (not a worker, another folder's, gone, not ours to read; a pid can be reused). A worker without
    FOLDER_ENV (started by an earlier release) counts as this folder's."""
    try:
        environ = dict(v.partition(b"=")[::2] for v in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return None
    job_id, started_by = environ.get(JOB_ENV.encode()), environ.get(FOLDER_ENV.encode())
    if job_id is None or (started_by is not None and started_by.decode(errors="replace") != folder):
        return None
    return job_id.decode(errors="replace")


def _workers_of(job_ids: set[str], folder: str) -> list[int]:
    """The processes a runner of `folder` started whose environment names one of `job_ids` as theirs (workers
    lead their own process group). One read of /proc/<pid>/environ per process of this machine; none elsewhere
    than Linux."""
    return [pid for pid in psutil.pids() if pid != os.getpid() and _worker_job(pid, folder) in job_ids]


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # workers lead their own process group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass
