"""The `JobRunner` on Ray (`PLURALIGN_JOB_RUNNER=ray`, `PLURALIGN_RAY_ADDRESS`).

Each job runs as one detached Ray actor named `pluralign-job-<id>` that declares the job kind's
CPU, GPU and memory needs (`JobKind.cpus/gpus/memory_mb`), so Ray places it on a node that has
them, and runs the same worker command line as the local runner in a child process there. The
records stay in this runner's job folder (one JSON file per job, written only by this runner); the
worker's stdout and stderr go to the job's files in that folder, so the folder must be a volume the
Ray nodes mount at the same path (as the adapters folder already is), and the nodes must run the
same image (the command line names this interpreter). Progress and the log tail are read from
those files, as the local runner does. The worker is started only once Ray placed the actor (its first call answered),
and the job's `started_at` is stamped again then: the record says when it began running, not when it was sent (an audit's
check compares with it), and a job cancelled while it waits for a node ends at once. A job Ray has not placed in
`place_wait_s` (10 s: no node has the GPU, CPUs or memory it asks for free) gives its slot among the runner's
`workers` back and waits queued until what it asks for is free, its log tail saying for what (`_give_back`): one tenant's GPU jobs never keep
another tenant's jobs from the workers.

Because the actor is detached, it outlives the service: `stop()` leaves running jobs running, and
the next runner over the same folder finds each running job's actor by name and attaches to it
instead of starting the job again. A job whose actor is gone (its node was lost) is queued again.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from training.jobs.kinds import KINDS, JobKind
from training.jobs.record import ACTIVE_STATES, Job, tenant_of
from training.jobs.runner import LocalJobRunner, RunnerConfig, remove_write_leftovers

log = logging.getLogger(__name__)

NAMESPACE = "pluralign"
KILL_WAIT_S = 30.0  # the longest a runner waits for an actor to stop the worker it started
ATTACH_WAIT_S = 30.0  # the longest a starting runner waits for a running job's actor to answer (`_recover`)
# the longest a job sent to Ray holds one of the runner's `workers` while Ray places its actor nowhere (no node has what
# it asks for free: a GPU no node has, or every GPU busy); then it is queued again, its slot free for the next job
PLACE_WAIT_S = 10.0
# the bounds of `place_wait_s` (setting ray_place_wait_s): below a second a Ray actor's process has not started (1-2 s
# measured here), so every job was given back at each send; the most one send of a job may hold a worker (the wait of
# a job whose actor Ray placed but was slow to start doubles per give-back: `_give_back`)
MIN_PLACE_WAIT_S, MAX_PLACE_WAIT_S = 1.0, 3600.0
# a job given back is sent again once the cluster has what it asks for free (`_may_start`), else PLACE_RETRY times its
# wait later at the earliest (a worker free then; an autoscaler sees its demand only while it is sent)
PLACE_RETRY = 3
WAITING = "waiting for resources: "  # how the log tail's line about a job given back begins


def actor_name(job_id: str) -> str:
    return f"pluralign-job-{job_id}"


def _probe(actor) -> object | None:
    """ObjectRef of the actor's first call (`JobProcess.pid`), answered once Ray placed it; None for an actor of an
    earlier release whose class has no `pid` (its handle says so) and whose worker started with it."""
    try:
        return actor.pid.remote()
    except AttributeError:
        return None


# Run before the worker's own command line on Linux: the worker is sent SIGTERM when the actor's process dies
# (`prctl(PR_SET_PDEATHSIG)`, kept across the `execvp`), so an actor gone with its node, a `ray.kill` or the end of a
# local Ray leaves no worker training on, out of every runner's reach, beside the attempt that replaces it. A parent
# already gone before the `prctl` (its pid no longer the parent's) ends the launcher at once.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0); "
    "os.getppid() == int(sys.argv[1]) or sys.exit(143); os.execvp(sys.argv[2], sys.argv[2:])"
)


def dying_with_parent(argv: list[str], cwd: str) -> list[str]:
    """`argv` run through `DIE_WITH_PARENT` (Linux; elsewhere `argv` as it is), for a child of this process started in
    `cwd`. Raises FileNotFoundError, as `subprocess.Popen` of `argv` itself would, when `argv[0]` is no program there:
    the launcher's own start would hide it (the job is then one that could not start, not a worker that failed)."""
    if not sys.platform.startswith("linux"):
        return argv
    program = argv[0] if os.sep not in argv[0] else os.path.join(cwd, argv[0])
    if shutil.which(program) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv]


def ray_address_named(address: str | None) -> tuple[str | None, str]:
    """The address `ray.init(address=address)` goes to, and the variable that names it: `address` (PLURALIGN_RAY_ADDRESS),
    else Ray's own RAY_ADDRESS, which Ray reads when given none (a KubeRay pod sets it); (None, ...) when neither is set
    (a local Ray, unless a `ray start` on this machine left its address: Ray joins that)."""
    if address:
        return address, "PLURALIGN_RAY_ADDRESS (setting ray_address)"
    return os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS (Ray's own variable; PLURALIGN_RAY_ADDRESS unset)"


def check_ray_address(address: str, timeout_s: float = 10.0, variable: str = "PLURALIGN_RAY_ADDRESS (setting ray_address)") -> None:
    """Raise ValueError when `address` is a Ray client address (`ray://host:10001`) and Ray's client is not installed
    (`ray[client]`: grpcio), and ConnectionError when nothing at its host and port accepts a TCP connection within
    `timeout_s` seconds, each naming PLURALIGN_RAY_ADDRESS and the address: `ray.init` on an address where nothing
    answers retries for minutes with only Ray's own warnings (measured: over 200 s, never returning), holding the
    service's start. `auto`, `local` and an address without a port are left to Ray. `variable`: what names `address`
    (`ray_address_named`)."""
    setting = f"{variable} = {address}"
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ValueError(f"{setting}: a ray:// address needs Ray's client, which is not installed here "
                         "(pip install 'ray[client]', as requirements.txt pins it)")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"{setting}: no Ray cluster answers there ({exc.strerror or exc}); start its head node, "
                              "or fix the address") from None


@contextmanager
def lancedb_fork_warning_quiet() -> Iterator[None]:
    """Leaves out lancedb's `lancedb fork support is experimental ...` RuntimeWarning in the block: `ray.init` starts
    Ray's own processes (GCS, raylet, ...) with subprocess and a `preexec_fn`, so each child runs Python's at-fork
    hooks, lancedb's among them, before it execs a program of its own that never touches lancedb. Each child
    warned on the service's stderr: five lines at every start of a replica with the Ray runner, naming a deadlock
    an operator cannot act on. A child inherits the filter from this process at its fork; a fork
    outside the block still warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)
        yield


@contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Puts back the process's SIGTERM and SIGINT handlers after the block: `ray.init` sets its own SIGTERM handler
    (`sys.exit(15)`) in the main thread, which took a SIGTERM from `pluralign serve`'s graceful stop (uvicorn's
    handler) and ended it with a traceback and status 134 or 15 instead of 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # None: set from C, not Python's to put back
                signal.signal(sig, handler)


class JobProcess:
    """Ray actor body: one job's worker process on a Ray node (a plain class; made remote lazily)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def start(self, argv: list[str], env: dict[str, str], cwd: str, out_path: str, log_path: str, nice: int) -> int:
        """Start the worker (once: a second call, from a runner that attached after a restart, returns its pid)."""
        if self.process is not None:
            return self.process.pid
        with open(out_path, "ab") as out, open(log_path, "ab") as err:
            self.process = subprocess.Popen(
                dying_with_parent(argv, cwd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env={**os.environ, **env},
                start_new_session=True,
            )
        try:
            os.setpriority(os.PRIO_PROCESS, self.process.pid, nice)
        except OSError:
            pass
        return self.process.pid

    def pid(self) -> int | None:
        """The worker's pid, None before `start`: the runner's first call, answered once Ray placed the actor."""
        return None if self.process is None else self.process.pid

    def poll(self) -> int | None:
        """The worker's exit code, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def cancel(self) -> None:
        """SIGTERM the worker's process group while it runs."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the worker's process group and wait for it (a start whose record could not be written)."""
        if self._signal(signal.SIGKILL):
            self.process.wait()

    def _signal(self, sig: int) -> bool:
        """`sig` sent to the worker's process group (it leads one: `start_new_session`) while it runs; whether it
        ran (a group gone meanwhile counts as sent)."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        return True


@dataclass(frozen=True)
class _Hold:
    until: float  # time.monotonic() before which a job given back is not sent again, unless what it asks for frees up
    free: bool  # the cluster had what it asks for free at the give-back (`RayJobRunner._free_for`): none of it freed up since


@dataclass
class _Attached:
    job_id: str
    actor: object  # the Ray actor handle
    started: object | None  # ObjectRef of `start` until it returned
    # ObjectRef of the actor's first call (`pid`) until it returned: Ray placed the actor then, and its worker is started
    placing: object | None = None
    before: float | None = None  # the job's `started_at` before this attempt: its record's again if it never ran
    sent_at: float = 0.0  # time.monotonic() of its send to Ray (`RayJobRunner.place_wait_s`)
    wait_s: float = PLACE_WAIT_S  # how long this send may wait for Ray to place it before it is given back (`_give_back`)
    free_at_send: bool = False  # the cluster had what it asks for free when it was sent (`RayJobRunner._free_for`)
    stamp: bool = True  # `started_at` is stamped when the worker is started (not for one attached to: `_recover`)
    stop_asked_at: float | None = None  # time.monotonic() of the cancel (`RunnerConfig.cancel_grace_s`)
    killed: bool = False  # its worker was sent SIGKILL, the cancel's SIGTERM not acted on


class RayJobRunner(LocalJobRunner):
    """`LocalJobRunner`'s queue, records, promotion and recovery, with workers as Ray actors."""

    def __init__(
        self, config: RunnerConfig, address: str | None = None, kinds: Mapping[str, JobKind] = KINDS,
        on_promote: Callable[[Job, str], None] | None = None, on_succeed: Callable[[Job], None] | None = None,
        on_exit: Callable[[str], None] | None = None, place_wait_s: float = PLACE_WAIT_S,
    ):
        """`address`: a Ray cluster (`ray://host:10001` or `host:6379`); None joins the Ray already
        initialized in this process, else the one Ray's own RAY_ADDRESS names (`ray_address_named`), else starts a
        local one. Raises ConnectionError when nothing answers at the address (`check_ray_address`). `place_wait_s`:
        seconds a job sent to Ray holds one of `config.workers` while Ray places it nowhere; then it is queued again
        (`_give_back`) and sent again once the cluster has what it asks for free, else PLACE_RETRY times as long later
        at the earliest; a job whose actor was slow to start waits twice as long at its next send. Raises ValueError
        when it is not MIN_PLACE_WAIT_S to MAX_PLACE_WAIT_S seconds."""
        if not MIN_PLACE_WAIT_S <= place_wait_s <= MAX_PLACE_WAIT_S:
            raise ValueError(f"`place_wait_s` must be {MIN_PLACE_WAIT_S:g} to {MAX_PLACE_WAIT_S:g} seconds, got {place_wait_s}")
        self.place_wait_s = place_wait_s
        # job id -> until when a job given back (`_give_back`) is not sent again unless what it asks for frees up (`_may_start`)
        self._given_back: dict[str, _Hold] = {}
        # job id -> how long its next send waits to be placed, for a job given back whose actor Ray had placed but was slow
        # to start (`_give_back`): twice its last wait
        self._place_waits: dict[str, float] = {}
        self._free: dict[str, float] | None = None  # `ray.available_resources()` asked in this `_launch` (`_free_for`)
        # tenant -> the turn (`JobStore.turn`'s count) its send to Ray took, kept after the send was given back: the record
        # goes back to before the send, but while this runner runs the tenant ranks as if it had that turn (`_turn`);
        # else its next queued job went first again, and a tenant's PLACE_RETRY + 1 jobs Ray could not place, sent one
        # after the other, kept every other tenant's jobs from a worker for good
        self._sent_turns: dict[str, int] = {}
        import ray

        if not ray.is_initialized():
            target, variable = ray_address_named(address)
            if target:
                check_ray_address(target, variable=variable)
            with signal_handlers_kept(), lancedb_fork_warning_quiet():
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, include_dashboard=False)
        self._ray = ray
        self._actor_class = ray.remote(JobProcess)
        super().__init__(config, kinds, on_promote, on_succeed, on_exit)

    # -- the interface -------------------------------------------------------------------------

    def _stop_running(self, job_id: str) -> None:
        """Ask the job's Ray actor to stop its worker (SIGTERM; SIGKILL once it still runs `cancel_grace_s` later,
        `_poll`); cancel itself is the local runner's."""
        attached = self._running.get(job_id)
        if attached is not None:
            attached.actor.cancel.remote()
            if attached.stop_asked_at is None:
                attached.stop_asked_at = time.monotonic()

    def purge(self, job_id: str) -> Job | None:
        """As the local runner's (`LocalJobRunner.purge`), with a running job's worker killed through its actor (SIGKILL,
        waited for) and the actor removed: an actor Ray has not placed yet has no worker, and is removed at once."""
        with self._lock:  # the dispatcher neither launches nor records it meanwhile
            attached = self._running.pop(job_id, None)
            if attached is not None and attached.placing is not None and attached.stamp:  # no `start` sent
                self._detach_actor(attached.actor)
            elif attached is not None:
                self._kill_actor(attached.actor)
            # the artifact folder before the record (`JobStore.remove` unlinks it last): a purge cut short by a kill leaves
            # the record, which names the job for the purge made again (a resumed DELETE's); the other order would leave
            # the folder (the user's adapter, its meta naming them) for good after a kill between the two
            shutil.rmtree(Path(self.config.folder) / "artifacts" / job_id, ignore_errors=True)
            job = self.store.remove(job_id)
            if attached is not None or (job is not None and job.state in ACTIVE_STATES):  # a final one's was told at its end
                self._exited(job_id)
            return job

    def stop(self) -> None:
        """Stop dispatching and polling; running jobs keep running on Ray, and the next runner over
        this folder attaches to them."""
        self._stop_dispatching()
        with self._lock:
            self._running.clear()

    # -- the dispatcher ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Running jobs whose actor is alive are attached to (one cancelled before the last runner stopped is sent
        its SIGTERM again, and SIGKILL `cancel_grace_s` later); those whose actor is gone are queued again (cancelled,
        when their cancel was asked for), but one whose promotion the last process was stopped in, finished at `start` (`LocalJobRunner._recover`).
        Then the temp files writes cut short left are removed (`remove_write_leftovers`), but in the artifact
        folders of the jobs attached to. Unlike the local runner's, no worker is looked for by its variables: a
        worker whose actor is gone runs on another node, if anywhere, out of this process's reach."""
        promoting = self._promoting()
        asked = []  # (job, its actor, its `poll`): all asked before any answer is waited for
        for job in self.store.all():
            if job.state != "running":
                continue
            if job.id in promoting:
                self._cut_promotions.append(job.id)
                continue
            try:
                actor = self._ray.get_actor(actor_name(job.id), namespace=NAMESPACE)
                asked.append((job, actor, actor.poll.remote()))
            except Exception:  # no such actor (node lost, cluster restarted)
                self._record(self._stopped_record(job, f"its Ray actor is gone (attempt {job.attempts}); queued again"))
        # one wait of ATTACH_WAIT_S for all the answers, not one each: a start that finds several actors Ray has not
        # placed (each waits the whole time) is not held up ATTACH_WAIT_S times as many
        polls = [poll for *_, poll in asked]
        answered = set(self._ray.wait(polls, num_returns=len(polls), timeout=ATTACH_WAIT_S)[0]) if polls else set()
        for job, actor, poll in asked:
            if (why := self._unattached(job.id, actor, poll, answered)) is not None:
                self._record(self._stopped_record(job, f"{why} (attempt {job.attempts}); queued again"))
                continue
            # a worker the last runner may not have started yet (stopped before its actor was placed): started once the
            # probe answers None. Its record's `started_at` stays (safe: a start the last runner sent may run first)
            self._running[job.id] = _Attached(job.id, actor, None, placing=_probe(actor), before=job.started_at, stamp=False)
            log.info("attached to running job %s on Ray", job.id)
            if job.cancel_requested:  # cancelled before the last runner stopped: its SIGTERM again, and the grace from now
                self._stop_running(job.id)
        # as the local runner's start, but the artifact folders of the jobs attached to (their workers write there)
        if removed := remove_write_leftovers(Path(self.config.folder), running=set(self._running)):
            log.warning("removed %d temp files that writes cut short by a stopped service left in %s", removed, self.config.folder)
        self._remove_unkept_results()  # a failed check's result, as the local runner's start

    def _unattached(self, job_id: str, actor, poll, answered: set) -> str | None:
        """Why a running job's `actor`, asked `poll` at `_recover`, is not attached to; None when it answered. One that
        died is gone; one whose answer is not among `answered` (none in ATTACH_WAIT_S) is one Ray has not placed (no
        node has what it asks for free), which runs no worker before it is (`_place`): it is removed, and its name free
        once this returns, for the job's next attempt (left, it kept the name, and so failed that attempt, and held what
        it waited for, idle, once placed)."""
        if poll in answered:
            try:
                self._ray.get(poll)
                return None
            except Exception:  # it died
                return "its Ray actor is gone"
        self._detach_actor(actor)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:  # Ray frees the name a moment after the kill
            try:
                self._ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
            except ValueError:
                break
            time.sleep(0.05)
        return f"Ray had not placed its actor in {ATTACH_WAIT_S:g} s: removed"

    def _start_worker(self, job: Job) -> None:
        """Send the job to Ray: its actor is created, and its worker started once Ray placed it (`_place`). Recorded
        running now, `started_at` now (the turn taken: it holds one of the runner's `workers`, for at most `place_wait_s`
        while Ray places it nowhere: `_give_back`), and stamped again when its worker is started."""
        kind, artifact, argv = self._worker_of(job)
        self._free = None  # as Ray says now, after the sends before it
        free = self._free_for(kind)
        resources = f"cpus={kind.cpus:g} gpus={kind.gpus:g} memory={kind.memory_mb}MB"
        placed = f"on Ray ({resources}), attempt {job.attempts + 1}: $ " + " ".join(argv[1:])
        self.store.path(job.id, "out").write_bytes(b"")  # a new attempt's output only
        # why the attempt before ended (`_stopped_record`'s note: its actor died with its node, the runner restarted), then
        # this attempt's line: the log tail, which this attempt's log replaces, still says why the job runs again
        why = [line for line in job.log_tail[-1:] if line.endswith("; queued again")]
        self.store.path(job.id, "log").write_text("".join(f"{line}\n" for line in [*why, placed]))
        actor = self._actor_class.options(
            name=actor_name(job.id), namespace=NAMESPACE, lifetime="detached", num_cpus=kind.cpus, num_gpus=kind.gpus,
            memory=kind.memory_mb << 20, max_restarts=0,
        ).remote()
        placing = actor.pid.remote()  # answered once Ray placed the actor
        try:  # recorded running before it counts as running: an actor no record names is never left behind
            self.store.put(msgspec.structs.replace(
                job, state="running", pid=None, attempts=job.attempts + 1, started_at=time.time(), progress=0.0,
                artifact=str(artifact), error=None, log_tail=[*job.log_tail, placed][-self.config.log_lines :],
            ))
        except BaseException:
            self._kill_actor(actor)
            raise
        self._running[job.id] = _Attached(job.id, actor, None, placing=placing, before=job.started_at, sent_at=time.monotonic(),
                                          wait_s=self._place_waits.get(job.id, self.place_wait_s), free_at_send=free)

    def _may_start(self, job: Job) -> bool:
        """Whether queued `job` may be sent to Ray now: not while its hold after a give-back (`_give_back`) lasts, unless
        the cluster now has what it asks for free (it could be placed: a job that waited for another's GPU goes once
        that job ends, not PLACE_RETRY times its wait later)."""
        hold = self._given_back.get(job.id)
        if hold is None:
            return True
        if time.monotonic() < hold.until and (hold.free or job.kind not in self.kinds or not self._free_for(self.kinds[job.kind])):
            return False
        del self._given_back[job.id]
        return True

    def _actor_started(self, actor) -> bool | None:
        """Whether Ray placed `actor` and started its process (its GCS actor table row names a pid while it is still
        being created: its `__init__` or its worker's start is slow), False when it placed it nowhere yet (no pid), None
        when Ray does not say (a `ray://` client, which reads no GCS table, or another Ray's table layout)."""
        try:
            from ray._private import state  # the public `ray.util.state` asks the dashboard, which this Ray may not run

            row = state.actors(actor_id=actor._actor_id.hex())
            return bool(row.get("Pid")) if isinstance(row, dict) else None
        except Exception:
            return None

    def _free_for(self, kind: JobKind) -> bool:
        """Whether the cluster has free, in all, the CPUs, GPUs and memory a job of `kind` asks for
        (`ray.available_resources`: over every node, so one node may still lack part of it); False when Ray does not say.
        Ray is asked once per `_launch` (each of its queued jobs given back asks here)."""
        if self._free is None:
            try:
                self._free = self._ray.available_resources()
            except Exception:
                self._free = {}
        free = self._free
        asked = (("CPU", kind.cpus), ("GPU", kind.gpus), ("memory", kind.memory_mb * 2**20))
        return all(free.get(name, 0) >= amount for name, amount in asked if amount > 0)

    def _launch(self) -> None:
        self._free = None  # the cluster's free resources, as Ray says now (`_free_for`)
        super()._launch()

    def _turn(self, job: Job) -> tuple[int, int, float, str]:
        """As the local runner's (`LocalJobRunner._turn`), but a tenant whose job was given back (`_give_back`) ranks as
        if that send had been its turn until its next start: each other tenant with jobs queued has a start between two
        sends of its jobs Ray cannot place, however many it queued."""
        turn, priority, created_at, job_id = super()._turn(job)
        return max(turn, self._sent_turns.get(tenant_of(job.params), 0)), priority, created_at, job_id

    def _give_back(self, job: Job, attached: _Attached) -> None:
        """Queue again `job`, sent to Ray `attached.wait_s` ago and not placed yet (its actor's first call unanswered: Ray
        placed it nowhere or its process was slow to start): its actor removed (it runs no worker before it is placed),
        its slot among the runner's `workers` free for the next queued job (one tenant's job waiting for a GPU kept every
        other tenant's jobs waiting behind it, CPU-only audits included), its record as before the send (`started_at`, so
        its tenant's turn in the records, and `attempts`: it never ran; this runner still ranks its tenant after the send:
        `_turn`), its log tail ending with what it waits for (`WAITING`). Sent again, when a worker is free and its turn
        comes, once the cluster has what it asks for free, else PLACE_RETRY times its wait later at the earliest
        (`_may_start`; not early when it had that free already at the give-back: no node may have all of it). One whose
        actor Ray placed but that was slow to start waits twice as long at its next send (at most MAX_PLACE_WAIT_S), so an
        actor that always starts slower than `place_wait_s` runs at a later send, rather than being given back
        at each, for good: Ray's actor table names its process (`_actor_started`), or the cluster had what it asks for
        free at its send and no longer has (its actor holds it while its process starts; or another user of the cluster
        took it meanwhile, and a job Ray placed nowhere is taken for a slow start). One Ray placed nowhere keeps
        `place_wait_s`, and holds a worker no longer than that at each send."""
        kind = self.kinds[job.kind]
        self._free = None
        free = self._free_for(kind)  # before its actor goes: what it holds, placed, is not what frees up later
        # the table names a pid only once the node has started the actor's process; while the node starts that process
        # (a loaded node: seconds) it has none, and only the resources its lease holds tell it from one placed nowhere;
        # another user of the cluster (another replica's job) taking them between send and give-back looks the same
        slow = bool(self._actor_started(attached.actor)) or (attached.free_at_send and not free)
        wait_s = min(2 * attached.wait_s, MAX_PLACE_WAIT_S) if slow else self.place_wait_s
        retry_s = PLACE_RETRY * attached.wait_s
        why = "Ray placed it, its actor slow to start" if slow else "no node had what it asks for free"
        note = (f"{WAITING}Ray had not started it in {attached.wait_s:g} s ({why}); it asks for {self._asked(kind)}; queued "
                f"again, its worker slot given back; sent again once the cluster has that free, else in {retry_s:g} s at the "
                f"earliest, waiting {wait_s:g} s to be placed")
        log.info("job %s: %s", job.id, note)
        self._detach(job.id)
        self._given_back[job.id] = _Hold(time.monotonic() + retry_s, free)
        self._place_waits[job.id] = wait_s
        tenant = tenant_of(job.params)  # its send's turn, before the record below undoes it in the store
        self._sent_turns[tenant] = max(self._sent_turns.get(tenant, 0), self.store.turn(tenant))
        tail = [line for line in job.log_tail[:-1] if not line.startswith(WAITING)]  # not the send's line: it never ran
        self._record(self._discard_artifact(msgspec.structs.replace(
            job, state="queued", pid=None, attempts=max(0, job.attempts - 1), started_at=attached.before,
            log_tail=[*tail, note][-self.config.log_lines :])))

    def _asked(self, kind: JobKind) -> str:
        """What a job of `kind` asks Ray for, each beside what the cluster has in all and free now (per node it may
        be less: Ray places an actor on one node), e.g. `GPU 1 (the cluster has 0, 0 free)`."""
        try:
            total, free = self._ray.cluster_resources(), self._ray.available_resources()
        except Exception:  # the cluster's figures are a help, not needed
            total = free = None
        asked = []
        for name, amount, unit, per in (("CPU", kind.cpus, "", 1), ("GPU", kind.gpus, "", 1), ("memory", kind.memory_mb, " MB", 2**20)):
            if amount > 0:
                has = "" if total is None else f" (the cluster has {total.get(name, 0) / per:g}, {free.get(name, 0) / per:g} free)"
                asked.append(f"{name} {amount:g}{unit}{has}")
        return ", ".join(asked)

    def _place(self, job: Job, attached: _Attached) -> bool:
        """Whether the job's actor is placed and its worker started (`start` sent): once Ray answers the actor's first
        call, `started_at` is stamped (`stamp`), and only then its worker started, so the record says when the job
        began running, not when it was sent (an audit's check compares against it: `Admin.keep_audit_members`), and
        its worker reads nothing before it. One Ray could not place, or cancelled before its worker started, never
        ran (`_never_ran`)."""
        ray = self._ray
        if job.cancel_requested and attached.stamp:  # this runner's actor: no worker before the answer
            self._never_ran(job, state="cancelled")
            return False
        ready, _ = ray.wait([attached.placing], timeout=0)
        if not ready:  # waiting for Ray to place the actor: at most `wait_s` in one of the runner's `workers`
            if attached.stamp and time.monotonic() - attached.sent_at > attached.wait_s:
                self._give_back(job, attached)
            return False
        try:
            pid = ray.get(attached.placing)
        except Exception as exc:
            if not attached.stamp:
                # attached to at `_recover` (it answered `poll` then): the actor of an earlier release has no
                # `pid`, and its worker started with it; one that died since is queued again by the poll that follows
                attached.placing = None
                return True
            self._never_ran(job, state="failed", error=f"could not start on Ray: {exc}")
            return False
        attached.placing = None
        self._place_waits.pop(job.id, None)
        if pid is not None:  # started by the last runner (attached to at `_recover`)
            return True
        if job.cancel_requested:
            self._never_ran(job, state="cancelled")
            return False
        kind, _, argv = self._worker_of(job)
        if attached.stamp:
            self._record(msgspec.structs.replace(job, started_at=time.time()))
        attached.started = attached.actor.start.remote(argv, self._worker_env(job, max(1, int(kind.cpus))), str(self.config.cwd),
                                                       str(self.store.path(job.id, "out")), str(self.store.path(job.id, "log")),
                                                       self.config.nice)
        return False

    def _never_ran(self, job: Job, **ended) -> None:
        """End `job`, whose worker never ran (Ray could not place its actor or start its worker, or it was cancelled
        before), as `ended` says: its actor removed, its `started_at` the one from before this attempt, so it took no
        turn (as a local job that could not start), and its artifact folder removed."""
        attached = self._running.get(job.id)
        self._detach(job.id)
        before = attached.before if attached is not None else job.started_at
        self._record(self._discard_artifact(msgspec.structs.replace(job, pid=None, started_at=before, finished_at=time.time(), **ended)))
        self._exited(job.id)  # no worker ran: what waited for its exit goes now

    def _kill_actor(self, actor) -> None:
        """Stop a just-started actor and its worker: the worker's group is killed (it leads its own session,
        so killing the actor alone leaves it running) once `start` has run (an actor's calls run in order;
        one Ray cannot place in KILL_WAIT_S never starts it), then the detached actor itself."""
        try:
            self._ray.get(actor.kill.remote(), timeout=KILL_WAIT_S)
        except Exception:
            log.exception("could not stop the worker of an actor being removed")
        try:
            self._ray.kill(actor)
        except Exception:
            log.exception("could not remove a Ray actor")

    def _poll(self) -> None:
        self._write_unwritten()
        self._forget_given_back()
        ray = self._ray
        for job_id, attached in list(self._running.items()):
            job = self.store.get(job_id)
            if attached.placing is not None and not self._place(job, attached):
                continue
            if attached.started is not None:
                ready, _ = ray.wait([attached.started], timeout=0)
                if not ready:
                    continue  # its worker being started
                try:
                    ray.get(attached.started)
                    attached.started = None
                except Exception as exc:
                    self._never_ran(job, state="failed", error=f"could not start on Ray: {exc}")
                    continue
            try:
                code, died = ray.get(attached.actor.poll.remote(), timeout=30), None
            except Exception as exc:  # the actor died with its node: run the job again
                code, died = None, exc
            progress, tail = self._read_log(job_id)  # once its exit is known: its last lines in the record (`_poll_one`)
            if died is not None:
                self._detach(job_id)
                note = f"its Ray actor died ({type(died).__name__}); queued again"  # or cancelled, its cancel asked for
                self._record(self._stopped_record(msgspec.structs.replace(job, log_tail=tail), note))
                self._exited(job_id)
                continue
            if code is None and not attached.killed and (note := self._cancel_overdue(job_id, attached.stop_asked_at)) is not None:
                attached.actor.kill.remote()  # not waited for: a later poll sees its exit
                attached.killed = True
                with open(self.store.path(job_id, "log"), "a") as f:  # the log tail's last line, as a local job's
                    f.write(note + "\n")
                continue
            if code is None:
                if progress != job.progress or tail != job.log_tail:
                    self._record(msgspec.structs.replace(job, progress=progress, log_tail=tail))
                continue
            self._detach(job_id)
            self._finished(job, code, progress, tail)

    def _forget_given_back(self) -> None:
        """Drop what `_give_back` holds of jobs cancelled or purged meanwhile (and their grown waits, once they ended), and
        the sent turns of tenants that have started a job since (their turn in the store is later)."""
        for job_id in [i for i in self._given_back if (j := self.store.get(i)) is None or j.state != "queued"]:
            del self._given_back[job_id]
        for job_id in [i for i in self._place_waits if (j := self.store.get(i)) is None or j.state not in ACTIVE_STATES]:
            del self._place_waits[job_id]
        for tenant in [t for t, turn in self._sent_turns.items() if self.store.turn(t) >= turn]:
            del self._sent_turns[tenant]

    def _detach(self, job_id: str) -> None:
        attached = self._running.pop(job_id, None)
        if attached is not None:
            self._detach_actor(attached.actor)

    def _detach_actor(self, actor) -> None:
        try:
            self._ray.kill(actor)  # detached actors live until killed
        except Exception:
            pass
