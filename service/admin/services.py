"""The admin area's state: the job runner, the adapter trigger, and audit reports kept by audit jobs.

An adapter job trains on a snapshot of the user's stored comparisons (written to the job folder when
it is queued) into the job's own folder; only if its held-out accuracy is not worse than the served
adapter's is it copied into the serving registry and named in the user's row."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import NamedTuple

import msgspec
from litestar.concurrency import sync_to_thread
from litestar.exceptions import ValidationException

from pluralign.cache import FairLRU
from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference, file_time, stand_in_received
from pluralign.data.text import answer_key, is_comparison
from pluralign.embed.cache import text_key
from pluralign.fairness.audit import NO_VALUE, OLD_NO_VALUE
from pluralign.fairness.report import (
    AuditReport,
    AuditSettings,
    ReportSchemaError,
    decode_report,
    report_encoder,
    without_groups,
    without_unshown,
)
from pluralign.files import DECODE_ERRORS, append_durably, copy_into_place, may_hold, write_atomic
from pluralign.policy.adapters import adapter_name, check_base, check_files, read_meta
from pluralign.reward.training_users import forget_stopped_users, forget_training_users
from pluralign.store import StoredPreference
from pluralign.store.deletions import Forget, key_hash
from pluralign.store.ingest import Backlogged
from pluralign.urls import redacted
from service.admin.audit_members import AuditMembersIndex
from service.admin.paths import PublicPaths, jobs_folder
from service.admin.retention import JobRetention, snapshot_named, snapshot_taken
from service.errors import bad_request
from service.replicas import owner
from service.requestid import current
from service.runtime import ForgetIncomplete, Runtime
from service.settings import GENERATOR_BASE_SETTING, GENERATOR_SETTING, Settings
from service.users.services import READ_INLINE_ROWS, adapter_folder
from training.jobs.params import JOB_ENCODERS, JobParamsError, decode_params
from training.jobs.record import ACTIVE_STATES, Job, JobNamed, Param, tenant_of
from training.jobs.runner import JobRunner, LocalJobRunner, NotServed, RunnerConfig, result_metrics
from training.jobs.triggers import AdapterTrigger

log = logging.getLogger("pluralign.service")
# users whose new comparisons the adapter trigger counts (`Admin.on_moved`), the most recently moved;
# a user pushed out starts again from 0 (as after a restart) and is checked `adapter_every` comparisons
# later; the trigger itself decides by the table's count, so no job is lost, only later (~100 B a user)
ADAPTER_COUNTED_USERS = 100_000


class CountedUsers:
    """Each user's strict comparisons counted since their last check (the adapter trigger's), (tenant, user) -> count,
    for at most `bound` users, shared fairly between tenants (`pluralign.cache.FairLRU`, counting entries): past it the
    least recently counted user of the tenant counting the most goes. With one LRU over every tenant's users, a tenant
    sending comparisons of ever new users pushed every other tenant's users out, each starting again from 0, so while it
    sent, theirs never reached `adapter_every` and no adapter job came. Not thread-safe: the caller holds its lock."""

    def __init__(self, bound: int):
        self.bound = bound
        self._counts: FairLRU[str, int] = FairLRU(lambda count: 1)

    def get(self, key: tuple[str, str], default: int = 0) -> int:
        found = self._counts.get(*key)
        return default if found is None else found

    def __getitem__(self, key: tuple[str, str]) -> int:
        found = self._counts.get(*key)
        if found is None:
            raise KeyError(key)
        return found

    def __setitem__(self, key: tuple[str, str], count: int) -> None:
        self._counts.put(*key, count)
        self._counts.evict(self.bound)

    def pop(self, key: tuple[str, str], default: int | None = None) -> int | None:
        found = self._counts.pop(*key)
        return default if found is None else found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self._counts.peek(*key) is not None

    def __iter__(self):
        return ((tenant, user) for tenant, user, _ in list(self._counts.items()))

    def __len__(self) -> int:
        return len(self._counts)
# the job kinds whose workers embed what they read through the jobs' embedding cache (`training.common.cached_encoder`)
EMBEDDING_KINDS = frozenset({"pal", "em", "audit"})
# under the jobs folder: per queued or running embedding job, the keys (SHA-256 of each text) of deleted
# users' texts it may have read before their DELETE, whose vectors leave the cache again once it ends
FORGET_AT_EXIT = "forget-at-exit"
# keys (32 bytes each) of a FORGET_AT_EXIT file read, and their vectors purged, at a time (256 KiB): the file grows with
# every text of every user deleted while its job ran (a tenant's removal: millions), and read whole it was held in
# memory at once, three times over (its bytes, their list, a busy cache's owed purge of them all)
EXIT_KEYS_PER_READ = 8192
# in a succeeded audit job's artifact folder: each report group's users, by hash (`Admin.keep_audit_members`)
AUDIT_MEMBERS = "members.json"
# in AUDIT_MEMBERS, one list of the users of the groups the report does not show (suppressed: fewer than its
# `min_group_size` users, or one user; or none of their comparisons scored: all before its `since`), whose comparisons are in its
# counts and overall figures all the same; absent when there are none. No group is called so: a value's label never
# starts with a space (`answer_key`), and the one group named so, `NO_VALUE`, is another name
UNSHOWN = " unshown"
# job kinds whose artifact holds no user's fitted weights: a DELETE's `forget_in_population` does not look in their folders
WEIGHTLESS_KINDS = frozenset({"audit", "adapter"})
# in the jobs folder: which audits' AUDIT_MEMBERS name a user (`service.admin.audit_members`), looked up by a DELETE
AUDIT_MEMBERS_INDEX = "audit-members.sqlite"


class _Named(msgspec.Struct):
    user_id: str  # a snapshot line's user (`tenant/user`); its other fields but the time are not read
    created_at: float | None = None  # when the service received the row (unix seconds; `Admin.population_snapshot`)


_NAMED = msgspec.json.Decoder(_Named)


class _Texts(msgspec.Struct):
    prompt: object = None  # a snapshot line's texts (`pluralign.data.io.preference_row`), which a job embeds
    chosen: object = None
    rejected: object = None

    def texts(self) -> list[str]:
        return [t for t in (self.prompt, self.chosen, self.rejected) if isinstance(t, str)]


_TEXTS = msgspec.json.Decoder(_Texts)


class DeletedWhileRead(ValidationException):
    """The 400 naming `params.user` of a user's adapter job not queued after all: a DELETE of the user through another
    replica reached its snapshot's read (`Admin._deleted_while_read`). The adapter trigger says so in a warning, not as
    its own failure."""


def made_from(job: Job | JobNamed) -> float:
    """When what `job` trains on was read from the store (unix seconds), as a deletion record's `made_at` asks it: its
    snapshot's stamp, taken as the read began (`Admin.snapshot`), when its `data` names one, else its `created_at`; the
    earlier of the two. A snapshot's read may take a while (a user with many rows): stamped after it, a snapshot read
    before another replica's DELETE would be taken as made after it."""
    data = job.params.get("data")
    taken = snapshot_taken(Path(data)) if isinstance(data, str) else None
    return job.created_at if taken is None else min(job.created_at, taken)


def _snapshot_users(path: Path) -> set[str]:
    """The users (`tenant/user`) a population snapshot holds rows of."""
    return {_NAMED.decode(line).user_id for line in path.read_bytes().splitlines() if line.strip()}


def _drop_rows(path: Path, forget: Forget, dropped: list[str] | None = None, kept_users: set[str] | None = None) -> int:
    """Rewrite the snapshot at `path` without the rows of the users `forget` names (a temp file
    renamed over it: a reader, a job starting, sees the old file or the new one). Returns 1 when it
    was rewritten; the texts of the rows it dropped are added to `dropped`, and when its rows were
    decoded (its bytes may name a user of `forget`) the users of the rows it kept to `kept_users`."""
    data = path.read_bytes()
    if not may_hold(forget, data):  # the names as the file spells them: no row of theirs
        return 0
    lines = data.splitlines(keepends=True)
    verdicts: dict[str, float | None] = {}  # per user, not per row: a hash costs more than the row's decode

    def gone(line: bytes) -> bool:
        row = _NAMED.decode(line)
        if row.user_id not in verdicts:
            verdicts[row.user_id] = forget.until_of(row.user_id)
        until = verdicts[row.user_id]  # a row sent after the user's DELETE is theirs again
        # an earlier release wrote the stored time as it was (1.7e12 in milliseconds, 1e300): as a DELETE reads it
        out = until is not None and (row.created_at is None or stand_in_received(row.created_at) < until)
        if not out and kept_users is not None:
            kept_users.add(row.user_id)
        return out

    kept = [line for line in lines if not line.strip() or not gone(line)]
    if len(kept) == len(lines):
        return 0
    if dropped is not None:
        dropped += [t for line in lines if line.strip() and gone(line) for t in _TEXTS.decode(line).texts()]
    write_atomic(path, b"".join(kept))
    return 1


def snapshot_users_path(snapshot: Path) -> Path:
    """The users file beside a population snapshot (`comparisons-<ms>.jsonl.users`): the `key_hash` of each user the
    snapshot holds rows of, one a line, then `stat <size> <mtime_ns>` of the snapshot it was drawn from. Written after
    its snapshot and again after a DELETE rewrites the snapshot (`_forget_in_snapshot`); one that does not end with
    its snapshot's size and time as they are (none yet, a crash between the two, a snapshot restored or copied over
    it, a file cut short) is not trusted (`_snapshot_users_named`): the snapshot is read whole."""
    return snapshot.with_name(snapshot.name + ".users")


def _snapshot_stat(snapshot: Path) -> str:
    st = snapshot.stat()
    return f"stat {st.st_size} {st.st_mtime_ns}"


def _write_snapshot_users(snapshot: Path, users: set[str]) -> None:
    hashes = "".join(f"{h}\n" for h in sorted({key_hash(u) for u in users}))
    write_atomic(snapshot_users_path(snapshot), f"{hashes}{_snapshot_stat(snapshot)}\n".encode())


def _snapshot_users_named(snapshot: Path) -> set[str] | None:
    """The user hashes the snapshot's users file names, or None when it cannot be trusted to name every user the
    snapshot holds: missing, damaged, of another form, or drawn from other bytes than the snapshot's now."""
    try:
        lines = snapshot_users_path(snapshot).read_bytes().decode().splitlines()
        stat = _snapshot_stat(snapshot)
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    hashes = set(lines[:-1])
    if not lines or lines[-1] != stat or not all(len(h) == 64 and all(c in "0123456789abcdef" for c in h) for h in hashes):
        return None
    return hashes


def _forget_in_snapshot(path: Path, forget: Forget, dropped: list[str]) -> int:
    """`_drop_rows` for a DELETE, read through the snapshot's users file: a snapshot whose users file names none of
    the users `forget` names is not read (a replica's deletion record names them by hash, and every row of every
    snapshot was decoded and hashed). One that names one, or whose users file is not trusted (none: written by an
    earlier release, or cut by a crash; out of step with the snapshot), is rewritten as before and its users file
    drawn again from what it holds now, so the deleted user's hash is left in neither. Returns the files rewritten."""
    named = _snapshot_users_named(path)
    if named is not None and not named & ({*forget.hashes} | {key_hash(k) for k in forget.keys}):
        return 0
    users: set[str] = set()
    rewritten = _drop_rows(path, forget, dropped, users)
    # not decoded (its bytes cannot name them: no users file, or one a crash left naming them), or nothing kept
    _write_snapshot_users(path, users or _snapshot_users(path))
    return rewritten


def _audit_params(params: dict[str, Param]):
    """An audit job's params with their defaults filled in (two spellings of one audit compare equal);
    None for a record's params this version does not read."""
    try:
        return decode_params("audit", params)
    except JobParamsError:
        return None


def old_release_named(members: dict[str, list[str]]) -> dict[str, list[str]]:
    """`members` (a group's name -> its users) with the group NO_VALUE's users in OLD_NO_VALUE, as a report stored
    before session 43 names them: one group `unknown` of the users without the attribute and of those whose value is
    `unknown` (read by today's `group_members_from_store`, an old report's own group had nobody in it, and left it)."""
    if NO_VALUE not in members:
        return members
    named = {group: users for group, users in members.items() if group != NO_VALUE}
    named[OLD_NO_VALUE] = sorted({*named.get(OLD_NO_VALUE, ()), *members[NO_VALUE]})
    return named


def asked_settings(params: dict[str, Param]) -> AuditSettings | None:
    """The `audit_settings` an audit job's params ask for (its report's, as the audit writes them); None for params this
    version does not read."""
    asked = _audit_params(params)
    if asked is None:
        return None
    since = None if asked.since is None else float(asked.since)
    return answer_key(asked.group_by), since, asked.min_group_size, asked.min_comparisons, asked.personalized  # named as the audit reads it


class QuotaExceeded(Exception):
    """A tenant has as many adapter jobs queued or running as `tenant_queued_jobs` allows, or as many audits of it (of
    every tenant, for an audit of every tenant), or the population (`pal` and `em` jobs together) has as many."""


class Stopping(Exception):
    """An audit not queued: the service was told to stop while its request moved the feedback it covers into the table
    (`Admin.stopping`); sent again, it is queued by this service once back, or by another replica."""


POPULATION_KINDS = ("pal", "em")  # jobs of the reserved tenant `population`: one quota between them


class NoAdapterBase(Exception):
    """A user's adapter job cannot be queued: the service generates on a remote server (`openai:URL`) running a model
    whose weights no setting names (`adapter_base`); the message names the setting to set."""


def adapter_base(settings: Settings, model_id: str) -> dict[str, str]:
    """The params an adapter job of this service trains with: `base`, the model the service generates with, as a worker
    loads it, and `base_model_id`, the name its adapters record when that is not the model's own (the remote server's
    name for it: the service's checks compare it with the generator's `model_id`). A local generator's setting as it
    is; with `openai:URL`, `generator_base` (absolute: the worker runs in the checkout), else SmolLM2 when the server
    runs it (`model_id` SmolLM2's name: `generator_model` unset or that). Raises NoAdapterBase when the server runs
    another model and `generator_base` is unset. The job's base is never the `openai:` URL, which every
    worker refuses ("--base must be `smollm2` or a transformers model folder"): no adapter job could succeed."""
    from pluralign.embed.models import SMOLLM2_ID

    if not settings.generator.startswith("openai:"):
        return {"base": settings.generator}
    if settings.generator_base is not None:
        return {"base": os.path.abspath(settings.generator_base), "base_model_id": model_id}
    if model_id == SMOLLM2_ID:
        return {"base": "smollm2"}
    raise NoAdapterBase(
        f"the generation server ({GENERATOR_SETTING} {redacted(settings.generator)}) runs {model_id!r} (PLURALIGN_GENERATOR_MODEL), "
        f"which an adapter job cannot load from there: set {GENERATOR_BASE_SETTING} to a folder holding that model (its "
        "config.json, weights and tokenizer) for adapter jobs to train on; nothing was queued")


class UnreadableReport(Exception):
    """A succeeded audit job whose stored report this release cannot read. `schema`: it is of a schema this release
    does not read (a later release's), and the message names it and those this release reads (`decode_report`'s
    words); otherwise (missing, damaged) the message says only that, and `detail`, for the log, says why (a decode
    error may quote the file). `job_id`, `created_at` (the job's, unix seconds) and `group_by` (None when its record
    does not say) name the audit; `settings` its `audit_settings`, from its job's params (None: not known)."""

    def __init__(self, job: Job, detail: str, schema: bool = False):
        group_by = job.params.get("group_by")
        self.job_id, self.created_at, self.detail, self.schema = job.id, job.created_at, detail, schema
        self.group_by = group_by if isinstance(group_by, str) else None
        self.settings = asked_settings(job.params)
        shown = detail if schema else "its file is missing or damaged (the service's log says why)"
        super().__init__(f"audit job {job.id}: its report cannot be read: {shown}")


class StoredReports(NamedTuple):
    """The stored audit reports (`Admin.reports`), newest first: those this release reads, and those it cannot."""

    readable: list[AuditReport]
    unreadable: list[UnreadableReport]
    tenants: list[str | None]  # the tenant each of `readable` audited (its job's `tenant` param; None: every tenant)
    jobs: list[Job]  # the job of each of `readable`


class Admin:
    def __init__(self, rt: Runtime):
        settings = rt.settings
        # a running audit that started before this (a Ray worker a restart attached to) may not have read what the
        # stopped service moved into the table after its start, which this one was never told of (`_covers_moved`)
        self._began = time.time()
        # when a DELETE last took a user's rows out of the table (`forget_in_population`, hooked in below: one the
        # journal replays may come before this returns): a running audit that started before read them, and its
        # report will withhold their groups (`keep_audit_members`)
        self._forgot_at = 0.0
        self.rt = rt
        self.folder = jobs_folder(settings)
        self.public = PublicPaths(settings.data_path)  # a job as the HTTP routes show it (service.admin.paths)
        # audit jobs read the service's tables: an object store's settings reach them as PLURALIGN_STORE_* variables, with
        # the variables Lance reads of this process's environment (AWS_ALLOW_HTTP, DYNAMODB_ENDPOINT: a Ray node has its
        # own). And its data folder as PLURALIGN_DATA_DIR: a worker is a `pluralign` command, which checks
        # the settings first, and `PLURALIGN_DATA_DIR= pluralign serve --data-dir X` would leave every job to exit 2 on the
        # empty variable otherwise
        env = {**settings.store_environment(), "PLURALIGN_DATA_DIR": str(settings.data_path)}
        config = RunnerConfig(folder=self.folder, workers=settings.job_workers, max_attempts=settings.job_attempts,
                              env=env, memory_mb=settings.job_memory_mb or None)
        if settings.job_runner == "ray":
            from training.jobs.ray_runner import RayJobRunner

            self.runner: JobRunner = RayJobRunner(config, settings.ray_address, on_promote=self.put_into_service,
                                                  on_succeed=self.check_result, on_exit=self.forget_at_exit,
                                                  place_wait_s=settings.ray_place_wait_s)
        else:
            self.runner = LocalJobRunner(config, on_promote=self.put_into_service, on_succeed=self.check_result,
                                         on_exit=self.forget_at_exit)
        # the trigger's `submit` returns the job (Admin.submit answers (job, created): the tuple was logged as the job)
        self.trigger = AdapterTrigger(self.runner, settings.adapter_every, submit=lambda kind, params: self.submit(kind, params)[0])
        self.retention = JobRetention(self, settings.job_retention_s) if settings.job_retention_s else None
        # before the hooks below: a DELETE replayed from the journal looks its user's audits up in it
        self.audit_members = AuditMembersIndex(self.folder / AUDIT_MEMBERS_INDEX, self.folder / "artifacts", AUDIT_MEMBERS)
        self._catch_up_old_audits()
        rt.delete_hooks.append(self.forget_jobs)
        rt.population_hooks.append(self.forget_in_population)
        rt.vector_hooks.append(self.forget_vectors_at_exit)
        rt.retract_hooks.append(self.forget_adapter_jobs_since)
        self._lock = threading.Lock()
        self._exit_lock = threading.Lock()  # orders the FORGET_AT_EXIT files' writes against their jobs' exits
        self._population_submit = threading.Lock()  # two population submissions cannot both pass the quota
        self._audit_submit = threading.Lock()  # two identical audits submitted at once: one job
        # set once the service is told to stop (`service.app.stop_taking_work`, `stop_admin`): an audit's move of its
        # tenant's feedback under way ends (StillMoving, nothing queued: `Ingestor.flush`'s `until`)
        self.stopping = threading.Event()
        # the workers the last process ran were stopped when the runner opened (a Ray job's may run on):
        # what they may have embedded of users deleted meanwhile goes now
        self._forget_ended(lambda job: job.state != "running")
        # strict comparisons moved since the user's last check, for at most ADAPTER_COUNTED_USERS users
        self._new = CountedUsers(ADAPTER_COUNTED_USERS)
        # the users whose adapter job this thread is queueing: its snapshot moves their pending feedback, whose
        # `on_moved` calls the trigger back in this thread (the user's lock is re-entrant) before the job is queued
        self._queueing = threading.local()

    def submit(self, kind: str, params: dict[str, Param], deadline: float | None = None) -> tuple[Job, bool]:
        """Queue a job of `kind`: (the job, True). An audit whose params are those of an audit still queued, or of one
        running that read every comparison moved in so far (`_covers_moved`), is that job, nothing queued: (that job, False). An audit first moves the
        feedback of the tenant it audits (of every tenant, for an audit of every tenant) from the log into the table, by
        `deadline` (`time.monotonic()` seconds) when given: StillMoving, nothing queued, once it passes
        (`Ingestor.flush`), or once the service is told to stop (`stopping`); told so once its rows are moved, Stopping,
        nothing queued (its request may have been answered already: the server's graceful wait ran out). Past the audited
        tenant's bound (`_within_audit_bound`), QuotaExceeded, before that move where no audit of it has these params."""
        params = dict(params)
        if kind == "audit":  # an audit covers every acknowledged feedback of what it audits: that is moved into the table first
            # of its tenant only (every tenant's for an audit of every tenant): not every tenant's, where acme's
            # large import would hold up globex's audit (a 503 `feedback_backlog` naming acme's rows)
            tenant = params.get("tenant")
            params = {"store": self.rt.settings.lancedb_uri, **params}  # audit jobs read the service's own tables
            wanted = _audit_params(params)
            # refused before the move when no audit of the tenant has these params (none the move could make this
            # request's job): a poll past the bound was answered after moving the tenant's backlog in its own thread,
            # at a request's priority (the worker's is the lowest), or a 503 `feedback_backlog` telling it to ask again
            # later, when the answer then was this 429 all along
            self._within_audit_bound(params, wanted, unless_same=True)
            self.rt.ingest.flush(tenant if isinstance(tenant, str) else None, deadline=deadline, until=self.stopping)
            with self._audit_submit:
                # one still queued with these params reads the table when it starts, and one running started after
                # the last feedback of what it audits was moved in (this request's flush included): either covers
                # this request's feedback too, so it is the job, not another (a script polling the audit route queued
                # one per call, and audits start before their tenant's queued training)
                same = next((j for j in self.runner.active() if j.kind == "audit" and self._covers_moved(j)
                             and wanted is not None and _audit_params(j.params) == wanted), None)
                if same is not None:
                    return same, False
                if self.stopping.is_set():
                    raise Stopping("the service is stopping: the audit was not queued")
                self._within_audit_bound(params, wanted, unless_same=False)
                return self.runner.submit(kind, params, request_id=current()), True
        return self._submit(kind, params), True

    def _within_audit_bound(self, params: dict[str, Param], wanted, unless_same: bool) -> None:
        """QuotaExceeded once the audits of the tenant `params` audit (of every tenant together, for an audit of every
        tenant), queued or running, number `tenant_queued_jobs`: bounded as its adapter jobs are (unbounded, a script
        polling with a moving `since`, a new audit each time, queued one more at each poll). `unless_same`: not while one
        of them has these params (`wanted`), which may be this request's job once its tenant's feedback is moved."""
        audited = tenant_of(params)
        audits = [j for j in self.runner.active() if j.kind == "audit" and tenant_of(j.params) == audited]
        if len(audits) < self.rt.settings.tenant_queued_jobs:
            return
        if unless_same and wanted is not None and any(_audit_params(j.params) == wanted for j in audits):
            return
        whose = f"tenant {audited!r} has" if audited else "the audits of every tenant are"
        raise QuotaExceeded(f"{whose} {len(audits)} audits queued or running (at most {self.rt.settings.tenant_queued_jobs}, "
                            "`tenant_queued_jobs`): retry once one has ended")

    def _covers_moved(self, job: Job) -> bool:
        """Whether audit `job` reads the table as it is now for the tenant it audits (every tenant, for an audit of
        every tenant): it is queued (it reads the table when it starts), or it is running, not being cancelled, and
        started after the last of its comparisons was committed (`Ingestor.committed_at`: by this process, which
        started before it) and after the last DELETE took a user's rows out (of any tenant: a replica's deletion
        record names users by hash only). With replicas a running one never is: another replica moves its own
        feedback into the table, and this one is not told when."""
        if job.state == "queued":
            return True
        if job.state != "running" or job.cancel_requested or job.started_at is None or self.rt.settings.replicas > 1:
            return False
        tenant = job.params.get("tenant")
        moved = self.rt.ingest.committed_at(tenant if isinstance(tenant, str) else None)
        return max(moved, self._began, self._forgot_at) < job.started_at

    def _submit(self, kind: str, params: dict[str, Param]) -> Job:
        """Queue a job of `kind` other than an audit (`submit`)."""
        if kind in POPULATION_KINDS:
            # bounded as a tenant's adapter jobs are, checked before the snapshot (a copy of every stored
            # comparison) is written: unbounded, a retry loop filled the disk with copies of the store
            with self._population_submit:
                queued = sum(1 for j in self.runner.active() if j.kind in POPULATION_KINDS)
                if queued >= self.rt.settings.tenant_queued_jobs:
                    raise QuotaExceeded(f"the population jobs (pal, em) are {queued} queued or running (at most "
                                        f"{self.rt.settings.tenant_queued_jobs}, `tenant_queued_jobs`): retry once one has ended")
                return self._submit_population(kind, params)
        if kind == "adapter" and "data" not in params and "user" in params:
            tenant, user = str(params.setdefault("tenant", "default")), str(params["user"])
            # under the user's lock: a DELETE cannot fall between the snapshot and the queued job,
            # and two triggers cannot both queue one
            with self.rt.user_lock(tenant, user):
                active = self.active_adapter_job(tenant, user)
                if active is not None:
                    raise bad_request("params.user", f"{user!r} already has adapter job {active.id} {active.state}")
                queued = self.active_adapter_jobs(tenant)
                if queued >= self.rt.settings.tenant_queued_jobs:
                    raise QuotaExceeded(f"tenant {tenant!r} has {queued} adapter jobs queued or running (at most "
                                        f"{self.rt.settings.tenant_queued_jobs}, `tenant_queued_jobs`): retry once one has ended")
                # adapt the model this service generates with (a remote server's: `adapter_base`, which no longer
                # passes the `openai:URL`, credentials and all, to the job's record and its worker's command line)
                if "base" not in params:
                    params.update(adapter_base(self.rt.settings, self.rt.generator.model_id))
                return self._queue_adapter(tenant, user, kind, params)
        return self.runner.submit(kind, params, request_id=current())  # the request that caused it (or the feedback's, for a trigger)

    def _queue_adapter(self, tenant: str, user: str, kind: str, params: dict[str, Param]) -> Job:
        """`_submit` of the user's adapter job, under their lock: its snapshot, then the job. The snapshot moves the
        user's pending rows first: the trigger those rows call back (`on_feedback`, in this thread) leaves them to this
        job, which trains on them (no second job queued). When the job is not queued after all
        (its snapshot or record not written: a full disk), a user whose trigger was left to it is due again at their
        next comparison (not `adapter_every` comparisons later)."""
        key, local = (tenant, user), self._queueing.__dict__
        queueing, skipped = local.setdefault("users", set()), local.setdefault("skipped", set())
        queueing.add(key)
        try:
            try:
                snapshot, comparisons = self.snapshot(tenant, user)
            finally:
                queueing.discard(key)
            params["data"] = str(snapshot)
            if "comparisons" in params:  # the trigger's count, from before the snapshot moved the rows still waiting:
                # the job trains on those too, and the next job is counted from it (the count
                # before would bring the next job that many comparisons early)
                params["comparisons"] = comparisons
            job = self._submit_on(snapshot, kind, params, nullcontext())  # a DELETE of the user waits for the user's lock
            self._deleted_while_read(job, tenant, user, snapshot)
            return job
        except BaseException:
            if key in skipped:
                with self._lock:
                    self._new[key] = max(self._new.get(key, 0), self.trigger.every - 1)
            raise
        finally:
            skipped.discard(key)

    def _deleted_while_read(self, job: Job, tenant: str, user: str, snapshot: Path) -> None:
        """With replicas, once the user's adapter `job` is queued: when a DELETE of the user another replica recorded
        reaches its snapshot's read (`made_from`: the read began before their rows had left the store), the job and
        the snapshot go, and a 400 naming `params.user` says to queue it again. Queued, the job is this replica's
        sweep's to purge when it applies that record later; this covers a record its sweep applied while the snapshot
        was being read, before the job was there to purge (else both would stay, holding the deleted rows)."""
        if not self.rt.recorded_deletion_reaches(tenant, user, made_from(job)):
            return
        self.runner.purge(job.id)
        for path in (snapshot, snapshot_users_path(snapshot)):
            path.unlink(missing_ok=True)
        said = bad_request("params.user", f"user {user!r} of tenant {tenant!r} was deleted through another replica while "
                                          "their comparisons were read for this job: queue it again")
        raise DeletedWhileRead(detail=said.detail, extra=said.extra)

    def _submit_population(self, kind: str, params: dict[str, Param]) -> Job:
        snapshot = None
        if params.get("protocol", "file") == "file":
            # retrain the population model on the service's own feedback (every tenant's users)
            snapshot = self.population_snapshot()
            params.update(protocol="file", data=str(snapshot))
        if self.rt.settings.encoder in JOB_ENCODERS:
            # embed with the encoder this service embeds with: its model is served against those vectors
            # (a folder or a remote encoder: the trainer's default, MiniLM)
            params["encoder"] = self.rt.settings.encoder
        if snapshot is None:
            return self.runner.submit(kind, params, request_id=current())
        return self._submit_on(snapshot, kind, params, self.rt.population_lock)  # a DELETE rewrites the snapshots under it

    def _submit_on(self, snapshot: Path, kind: str, params: dict[str, Param], lock: AbstractContextManager) -> Job:
        """Queue a job that trains on `snapshot`, written for it; when the job is not queued (its record cannot be
        written: a full disk's 507) the snapshot and its users file are removed, under `lock`: no job reads them,
        and each retry wrote another copy of the user's (a population job: every) stored comparisons."""
        try:
            return self.runner.submit(kind, params, request_id=current())
        except BaseException:
            with lock:
                for path in (snapshot, snapshot_users_path(snapshot)):
                    try:
                        path.unlink(missing_ok=True)
                    except OSError as exc:
                        log.error("the snapshot %s of a job not queued cannot be removed: %s", path, exc)
            raise

    def active_adapter_jobs(self, tenant: str) -> int:
        return sum(1 for j in self.runner.active() if j.kind == "adapter" and str(j.params.get("tenant", "default")) == tenant)

    def active_adapter_job(self, tenant: str, user: str) -> Job | None:
        """The user's queued or running adapter job (there is at most one)."""
        return next((j for j in self.runner.active() if j.kind == "adapter"
                     and j.params.get("user") == user and str(j.params.get("tenant", "default")) == tenant), None)

    def snapshot(self, tenant: str, user: str) -> tuple[Path, int]:
        """The user's stored comparisons as a preference file for the worker (less the rows its reader refuses that older
        releases stored: `is_comparison`), their few rows still pending
        in the log moved first, and how many of them are strict (no tie: what `count_comparisons` counts).
        Raises Backlogged when more than READ_INLINE_ROWS of them wait (a large
        import being stored): moving them here, under the user's lock, held their DELETE, chats and refits
        for minutes."""
        self.rt.ingest.flush_user(tenant, user, at_most=READ_INLINE_ROWS)
        # named as the read begins: a DELETE's record takes what was made before it went, and a read may take a while
        # (`made_from`); a row retracted (`forget_adapter_jobs_since`) was received after this, or is not in it
        taken = time.time()
        stored, _ = self.rt.store.preferences_for(tenant, user)
        records = [
            Preference(user_id=p.user_id, prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, tie=p.tie, margin=p.margin,
                       source=p.source, created_at=file_time(p.created_at), attributes=p.attributes)
            for p in stored if is_comparison(p.prompt, p.chosen, p.rejected)  # not a rating without rival, nor a row the reader refuses
        ]
        if not records:
            raise bad_request("params.user", f"user {user!r} of tenant {tenant!r} has no stored comparisons to train on")
        path = self.folder / "data" / tenant / f"{user}-{int(taken * 1000)}.jsonl"
        write_jsonl(records, path)
        return path, sum(1 for r in records if not r.tie)

    def population_snapshot(self) -> Path:
        """Every stored strict comparison of every tenant as one preference file (less the rows its reader refuses that
        older releases stored: `is_comparison`); users are named
        `tenant/user` so two tenants' users never merge into one. Read and written under the
        runtime's population lock: a DELETE's rewrite of the snapshots (`forget_in_population`)
        comes before (and so rewrites it) or after (and the user's rows are out of the store).
        A row's `created_at` there is when the service received it (`StoredPreference.received`): a
        DELETE's record takes from a snapshot the rows from before it (`_drop_rows`), and an imported
        row's own time may be older than a DELETE it came after. A row stored before `received_at` was kept counts as
        received at its `created_at` as a DELETE reads it (`stand_in_received`: an older version's time in milli-, micro-
        or nanoseconds as its seconds, -5, 1e300 or a date still to come as 0.0, before any DELETE); a time no file takes would be null, which
        a DELETE's rewrite drops too. No trainer reads the times."""
        self.rt.ingest.flush()
        with self.rt.population_lock:
            records = [
                Preference(user_id=f"{p.tenant}/{p.user_id}", prompt=p.prompt, chosen=p.chosen, rejected=p.rejected,
                           margin=p.margin, source=p.source, created_at=file_time(p.received()), attributes=p.attributes)
                for p in self.rt.store.all_comparisons()
                if is_comparison(p.prompt, p.chosen, p.rejected)  # a blank or look-alike pair an older release stored: the reader refuses it
            ]
            if not records:
                raise bad_request("params.protocol", "the store holds no comparisons to train a population model on "
                                                     "(`file`, the default): store feedback first, or name a built-in protocol")
            path = self.population_folder / f"comparisons-{int(time.time() * 1000)}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(records, path)
            try:
                _write_snapshot_users(path, {r.user_id for r in records})  # then: one missing or out of step is not trusted
            except BaseException:  # no room for it: no job is queued on the snapshot, which is not left behind
                path.unlink(missing_ok=True)
                raise
        return path

    @property
    def population_folder(self) -> Path:
        return self.folder / "data" / "population"

    def forget_in_population(self, forget: Forget) -> int:
        """For a DELETE (a `Runtime.population_hooks` entry, under its population lock): rewrite
        every population snapshot without the rows of the users `forget` names (`tenant/user`, or a
        hash of it), and every PAL or EM artifact of a job without their per-user weights (`pluralign.reward.training_users`);
        each file whole (temp file and rename). A job training meanwhile read its snapshot before:
        `keep_snapshot_users` removes the user from its artifact when it ends. Returns the files
        rewritten; raises ForgetIncomplete, once the others are rewritten, naming the files it could not
        read or rewrite."""
        self._forgot_at = time.time()  # the user's rows left the table before this is called
        rewritten, failures = 0, []
        # a snapshot's temp file that a killed write left (none is being written: the lock is held)
        leftovers = sorted(self.population_folder.glob(".comparisons-*.jsonl.*")) if self.population_folder.is_dir() else []
        for temp in leftovers:
            temp.unlink(missing_ok=True)
        rewritten += len(leftovers)
        snapshots = sorted(self.population_folder.glob("comparisons-*.jsonl")) if self.population_folder.is_dir() else []
        # a users file whose snapshot is gone (removed by the retention or by hand, a crash between the two writes)
        orphans = [p for p in self.population_folder.glob("comparisons-*.jsonl.users")
                   if not p.with_name(p.name.removesuffix(".users")).exists()] if self.population_folder.is_dir() else []
        for orphan in orphans:
            orphan.unlink(missing_ok=True)
        rewritten += len(orphans)
        folders = self._weights_folders()
        dropped: list[str] = []
        drop_rows = lambda path, forget: _forget_in_snapshot(path, forget, dropped)  # noqa: E731
        for path, drop in [*((p, drop_rows) for p in snapshots), *((f, self._drop_weights) for f in folders)]:
            try:
                rewritten += drop(path, forget)
            except (OSError, ValueError) as exc:  # damaged, another schema: left as it is, the others still rewritten
                if not path.exists():  # removed since it was listed (its job purged, not under this lock): nothing left in it
                    continue
                failures.append(f"{path}: {exc}")
        try:
            self._forget_in_audits(forget)
        except (OSError, ValueError) as exc:  # a damaged report or members file: the others still rewritten
            failures.append(f"the audit reports in {self.folder}: {exc}")
        if dropped:
            # the jobs embedded those rows' texts into their cache (this replica's, for another replica's
            # DELETE too); a job still running may embed them after this, so they go again when it ends
            self.forget_vectors_at_exit(dropped)
            for name, cache, exc in self.rt.owed_vectors.forget([text_key(t) for t in dropped]):  # a DELETE answered here warns of it (`_forget_vectors`)
                log.error("the vectors of a deleted user's texts stay in %s (%s): %s", name, cache, exc)
        if failures:
            raise ForgetIncomplete(rewritten, failures)
        return rewritten

    def _weights_folders(self) -> list[Path]:
        """The job artifact folders that may hold per-user weights (`_drop_weights`): every one but those of the
        jobs recorded as a kind that writes none (WEIGHTLESS_KINDS: an audit's members file, one user's adapter),
        told by the folder's listing and the records in memory, without a look inside each (a DELETE paid two
        directory reads per stored audit)."""
        artifacts = self.folder / "artifacts"
        try:
            with os.scandir(artifacts) as entries:
                names = [e.name for e in entries if e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(artifacts / name for name in names
                      if (job := self.runner.get(name)) is None or job.kind not in WEIGHTLESS_KINDS)

    @property
    def exit_folder(self) -> Path:
        return self.folder / FORGET_AT_EXIT

    def forget_vectors_at_exit(self, texts: list[str]) -> None:
        """For a DELETE (a `Runtime.vector_hooks` entry, and `forget_in_population`): each queued or
        running job of the EMBEDDING_KINDS may have read the deleted user's `texts` (its snapshot, the
        store) and embed them into the jobs' cache after the DELETE cleaned it: their keys are noted in
        the job's FORGET_AT_EXIT file, and those vectors go again once its worker ends (`forget_at_exit`;
        at the next start for a worker the service was stopped in). Each file is on disk (fsynced, and its
        folder when it is new) before this returns, so a DELETE answered 200 and then a crash or a power
        loss still leaves the note for the next start. Only the queued and running jobs are looked at
        (`JobRunner.active`), not every record. A file that cannot be written (a full disk) is logged:
        then what that job embeds of them after the DELETE stays."""
        if not texts:
            return
        keys = b"".join(dict.fromkeys(text_key(t) for t in texts))
        with self._exit_lock:
            for job in self.runner.active():
                if job.kind in EMBEDDING_KINDS:
                    try:
                        append_durably(self.exit_folder / f"{job.id}.keys", keys)
                    except OSError as exc:
                        log.error("job %s may embed a deleted user's texts after their DELETE, and they stay in the "
                                  "embedding cache: %s could not be written (%s)", job.id, self.exit_folder, exc)
        self._forget_ended(lambda job: job.state not in ACTIVE_STATES)  # ended meanwhile, before its file was written

    def forget_at_exit(self, job_id: str) -> None:
        """The job's worker is gone (the runner's `on_exit`): the vectors its FORGET_AT_EXIT file names
        leave the jobs' embedding cache, and the file goes (and so do those of jobs cancelled before they ran); the
        purges a busy cache put off are tried again (the worker that held it may have been this one)."""
        self._forget_ended(lambda job: job.id == job_id or job.state not in ACTIVE_STATES)
        self.rt.owed_vectors.retry()

    def _forget_ended(self, ended) -> None:
        """Apply the FORGET_AT_EXIT files of the jobs `ended(job)` says have no worker (or no record any
        more); a cache that cannot be cleaned keeps its file for the next time (the log names it)."""
        with self._exit_lock:
            for path in sorted(self.exit_folder.glob("*.keys")) if self.exit_folder.is_dir() else []:
                job = self.runner.get(path.stem)
                if job is not None and not ended(job):
                    continue
                left = self._forget_keys_of(path)
                for name, cache, exc in left.values():
                    log.error("the vectors of a deleted user's texts that job %s may have embedded stay in %s (%s): %s",
                              path.stem, name, cache, exc)
                if not left:
                    path.unlink(missing_ok=True)

    def _forget_keys_of(self, path: Path) -> dict[tuple[str, Path | None], tuple[str, Path | None, Exception]]:
        """`OwedVectors.forget` of the keys in the FORGET_AT_EXIT file at `path`, EXIT_KEYS_PER_READ at a time as they
        are read (a partial key at its end is none); what could not be cleaned and is not owed, each cache once."""
        left: dict[tuple[str, Path | None], tuple[str, Path | None, Exception]] = {}
        with path.open("rb") as keys:
            while len(chunk := keys.read(EXIT_KEYS_PER_READ * 32)) >= 32:
                for name, cache, exc in self.rt.owed_vectors.forget([chunk[i : i + 32] for i in range(0, len(chunk) // 32 * 32, 32)]):
                    left.setdefault((name, cache), (name, cache, exc))
        return left

    def _drop_weights(self, folder: Path, forget: Forget) -> int:
        """Remove the fitted weights of the users `forget` names from the PAL or EM artifact at `folder`, or from what a
        stopped save of one left there once its job ended (a save still running is left to
        `keep_snapshot_users`). Any other folder is left alone. Returns the files rewritten or removed."""
        job = self.runner.get(folder.name)
        if job is not None:  # weights fitted on data from after a user's DELETE are theirs again
            data = job.params.get("data")
            forget = forget.made_at(snapshot_taken(Path(data)) if isinstance(data, str) else job.created_at)
        if forget_training_users(folder, forget):
            return 1
        if job is not None and job.state in ACTIVE_STATES:
            return 0
        return forget_stopped_users(folder, forget)

    def check_result(self, job: Job) -> None:
        """A succeeded job's result, before promotion (the runner's `on_succeed`): `keep_snapshot_users`,
        `keep_audit_members`."""
        self.keep_snapshot_users(job)
        self.keep_audit_members(job)

    def keep_audit_members(self, job: Job) -> None:
        """A succeeded audit job of the service's store: which users (by `key_hash` of `tenant/user`) each of
        its report's groups holds now goes to AUDIT_MEMBERS in its artifact folder, and groups whose users
        are all gone (deleted while it ran) leave the report at once (`_prune_audit`), and so are withheld the
        groups that lost a user while it ran (the report counts more users in them than the store holds rows
        of from before the job began: their figures hold a deleted user's comparisons), and the overall figures
        when the report counts more users in all than the store holds from before it began (one deleted from a
        group it does not show: `without_unshown`). The users of the groups it does not show go to the file
        too (UNSHOWN), so their DELETE finds the audit. Under the population
        lock, as a DELETE's `forget_in_population` runs once the user's rows left the store: one comes
        after the other, so a deleted user is never counted in a report that outlives them."""
        from pluralign.fairness.store_source import first_received_from_store, group_members_from_store

        if job.kind != "audit" or not isinstance(job.params.get("store"), str):
            return
        tenant = job.params.get("tenant")
        tenant = tenant if isinstance(tenant, str) else None
        uri, options = self.rt.settings.lancedb_uri, self.rt.settings.storage_options
        with self.rt.population_lock:
            members = group_members_from_store(uri, str(job.params["group_by"]), tenant, options)
            hashed = {group: sorted(key_hash(u) for u in users) for group, users in members.items()}
            # a user deleted while it ran is in no list here, but the figures of their group hold their comparisons:
            # a group the report counts more users in than the store holds from before the audit began lost one
            began = job.started_at if job.started_at is not None else job.created_at
            first = first_received_from_store(uri, tenant, options)
            before = {group: [u for u in users if first.get(u, math.inf) <= began] for group, users in members.items()}
            report = decode_report(self.runner.store.path(job.id, "result.json").read_bytes())
            withheld = frozenset(g.group for g in report.groups if g.users > len(before.get(g.group, ())))
            # and the report counts more users than the store holds from before it began (whatever their labels): one
            # of them was deleted, perhaps from a group it does not show (its counts and overall figures hold them)
            if report.users > len({u for users in before.values() for u in users}):
                withheld |= {UNSHOWN}
            self._prune_audit(job.id, hashed, write=True, withheld=withheld)

    def _prune_audit(self, job_id: str, members: dict[str, list[str]], write: bool = False,
                     withheld: frozenset[str] = frozenset()) -> list[str]:
        """Keep AUDIT_MEMBERS `members` for the audit job, and take from its report (result.json, and the
        output it was read from) the groups that no member is left in (their names are what those users
        sent, an attribute's value, and their figures were drawn from those users alone) and the groups
        `withheld` (a deleted user was in them with others: their figures hold that user's comparisons), with
        the report's overall figures (`without_groups`); the members file keeps the groups left. The users of the
        groups the report does not show are kept as one list (UNSHOWN; with `write`, drawn from `members`' groups
        the report does not name) until `withheld` names one of those groups (or UNSHOWN): then they leave it, and
        the report its overall figures and their part of its counts (`without_unshown`). Returns the
        hashes it keeps. With `write` (the
        audit's first members file), `members` go into the audit members index first, on disk before the file
        is: a crash between the two leaves an index naming the audit, never a file the index misses. Without
        (a DELETE took users out of `members`), the file is rewritten, and the DELETE then takes those users out
        of the index (`_forget_in_audits`)."""
        path = self.runner.store.path(job_id, "result.json")
        report = decode_report(path.read_bytes())
        groups = {g.group for g in report.groups}
        gone = {group for group in groups if not members.get(group) or group in withheld}
        kept = {group: users for group, users in members.items() if users and group in groups - gone}
        # a withheld group the report does not show (UNSHOWN, or with `write` one by its name): a user of the unshown
        # groups left, whose comparisons the counts and overall figures hold
        unshown_gone = any(group not in groups for group in withheld)
        unshown = sorted({h for group, users in members.items() if group not in groups for h in users})
        if write:
            self.audit_members.add(job_id, [h for users in members.values() for h in users])
        # the report and the record first, the members file last: a kill between them leaves a file still naming the
        # deleted user, so the DELETE's replay (or the start's pass) comes back here and finishes; the other way round
        # the replay found the user gone from the file and the report kept the withheld group's figures for good
        pruned = without_groups(report, gone)
        if unshown_gone:  # the unshown groups' users leave the file with their part of the report
            pruned = without_unshown(pruned, len({h for users in kept.values() for h in users}))
        elif unshown:
            kept[UNSHOWN] = unshown
        data = report_encoder.encode(pruned) if pruned != report else None
        if data is not None:
            write_atomic(path, data)
            write_atomic(self.runner.store.path(job_id, "out"), data + b"\n")
        # the record's metrics are the report's figures (worst group, gaps): drawn again without those groups, or
        # (a replay) as the report a stopped call left. A job still being checked (`keep_audit_members`) is not
        # recorded yet: the runner reads them then
        job = self.runner.get(job_id)
        if job is not None and job.state == "succeeded":
            metrics = result_metrics(msgspec.json.decode(data if data is not None else path.read_bytes()))
            if job.metrics != metrics:
                self.runner.store.put(msgspec.structs.replace(job, metrics=metrics))
        write_atomic(self.folder / "artifacts" / job_id / AUDIT_MEMBERS, msgspec.json.encode(kept))
        return [h for users in kept.values() for h in users]

    def _catch_up_old_audits(self) -> None:
        """At the start, the audits an earlier release stored are made what a DELETE can take its user out of:
        - a succeeded audit of the service's store without a members file (releases before data34 wrote none) gets
          one, its groups' users as the store holds them now (as a job's check draws them, `keep_audit_members`):
          a group none of whose users is stored any more (all deleted by that release) leaves its report now;
        - once per index (`AuditMembersIndex.old_deletes_checked`), every members file loses the users the store
          holds no comparison of any more: a release from data34 to live37 left a user deleted from a group that
          kept others in it (their `key_hash`), and their index entries go with them;
        - and so (once per index again: `OLD_DELETES_CHECKED` 2) the members files an earlier release wrote get the
          users of the groups their report does not show (`UNSHOWN`), and the unshown part of a report the deletion
          record says may hold a user deleted since is withheld (`_unshown_at_start`).
        A user the store's deletion record says was deleted after the audit was made is taken out too, and their
        groups withheld, though they came back since: the audit's figures held the comparisons that DELETE removed
        (`_catch_up_audit`). The feedback log is moved into the table first (a user whose rows wait there is
        stored). Reads the store (and its deletion record) once per audited `group_by` and tenant, only when there
        is such an audit; a store that cannot be read is logged, and the
        check is made again at the next start."""
        from pluralign.fairness.store_source import first_received_from_store, group_members_from_store

        checked = self.audit_members.old_deletes_checked()
        todo = []
        for job in self.runner.list(kind="audit", limit=2**62):
            group_by, tenant = job.params.get("group_by"), job.params.get("tenant")
            if job.state != "succeeded" or not isinstance(job.params.get("store"), str) or not isinstance(group_by, str):
                continue
            members = self.folder / "artifacts" / job.id / AUDIT_MEMBERS
            if not members.is_file() and self.runner.store.path(job.id, "result.json").is_file():
                todo.append((job, group_by, tenant if isinstance(tenant, str) else None, None))
            elif not checked and members.is_file():
                todo.append((job, group_by, tenant if isinstance(tenant, str) else None, members))
        unread = 0  # members files that could not be read: checked again at the next start
        if todo:
            stored: dict[tuple[str, str | None], dict[str, list[str]]] = {}  # (group_by, tenant) -> group -> hashes now
            try:
                self.rt.ingest.flush()
                with self.rt.population_lock:
                    deleted = Forget.of(self.rt.store.deletions_since(0.0))  # every replica's DELETEs, with their times
                    first: dict[str | None, dict[str, float]] = {}  # tenant -> user's hash -> their oldest row now
                    for job, group_by, tenant, path in todo:
                        uri, options = self.rt.settings.lancedb_uri, self.rt.settings.storage_options
                        if (group_by, tenant) not in stored:
                            now = group_members_from_store(uri, group_by, tenant, options)
                            stored[group_by, tenant] = {group: sorted(key_hash(u) for u in users) for group, users in now.items()}
                        if tenant not in first:
                            first[tenant] = {key_hash(u): t for u, t in first_received_from_store(uri, tenant, options).items()}
                        unread += not self._catch_up_audit(job, stored[group_by, tenant], path, deleted, first[tenant])
            except Exception as exc:  # a store that cannot be read (any engine's error): the service still starts
                log.error("the audits an earlier release stored could not be checked for deleted users (%s): "
                          "checked again at the next start", exc)
                return
        if not checked and not unread:
            self.audit_members.note_old_deletes_checked()

    def _catch_up_audit(self, job: Job, now: dict[str, list[str]], path: Path | None, deleted: Forget,
                        first: dict[str, float]) -> bool:
        """One audit of `_catch_up_old_audits`: `now`, its groups' users (`key_hash`) as the store holds them; `path`,
        its members file (None: it has none yet, and `now` stands in); `first`, when each user's oldest stored row
        came. A user its members file names who is out of the store, or whose oldest row came after the audit
        finished, or whom a deletion record says was deleted after the audit was made, was deleted since (come back
        or not: the audit's figures held the comparisons that DELETE removed): they leave it, and the groups they
        were in are withheld (`_prune_audit`). Drawn from the store (no file), a user whose rows all came after the
        audit was not in it: left out, withholding nothing, unless a deletion record names them. False when the
        members file or its report cannot be read or rewritten (logged; the start's pass is made again at the next
        start, and goes on to the other audits now)."""
        after = deleted.made_at(job.created_at).hashes
        finished = job.finished_at if job.finished_at is not None else job.created_at
        later = {h for h, t in first.items() if t > finished}
        if path is None:
            now = old_release_named(now)  # a release before data34 stored it: its groups are named as they were then
            members = {group: [h for h in users if h not in later or h in after] for group, users in now.items()}
        else:
            try:
                members = msgspec.json.decode(path.read_bytes(), type=dict[str, list[str]])
            except (OSError, *DECODE_ERRORS) as exc:  # as every DELETE naming it says (ForgetIncomplete)
                log.error("the members file %s cannot be read (%s): users an earlier release deleted may stay in it "
                          "(checked again at the next start)", path, exc)
                return False
        held = {h for users in now.values() for h in users} - after - later
        pruned = {group: [h for h in users if h in held] for group, users in members.items()}
        withheld = frozenset(group for group, users in members.items() if pruned[group] != users)
        old_form = path is None or UNSHOWN not in members  # no release before audit41 listed the unshown groups' users
        if old_form:
            try:
                unshown, deleted_unshown = self._unshown_at_start(job.id, members, now, held, after)
            except (OSError, ValueError) as exc:  # damaged, or a later release's schema: the other audits are still checked
                log.error("the report of audit job %s cannot be read (%s): the users of the groups it does not show are "
                          "not listed (checked again at the next start)", job.id, exc)
                return False
            pruned |= unshown
            withheld |= {UNSHOWN} if deleted_unshown else frozenset()
        if path is not None and not withheld and not (old_form and any(unshown.values())):
            return True
        try:
            kept = self._prune_audit(job.id, pruned, write=old_form, withheld=withheld)
        except (OSError, ValueError) as exc:  # its report damaged, or a later release's: the other audits are still checked
            log.error("the report of audit job %s cannot be rewritten (%s): the users deleted since it was made stay in it "
                      "(checked again at the next start)", job.id, exc)
            return False
        if withheld:  # as a DELETE does (`_forget_in_audits`)
            listed = {h for users in (*members.values(), *pruned.values()) for h in users}
            self.audit_members.drop(job.id, listed - set(kept), kept)
        return True

    def _unshown_at_start(self, job_id: str, members: dict[str, list[str]], now: dict[str, list[str]], held: set[str],
                          after: frozenset[str] | set[str]) -> tuple[dict[str, list[str]], bool]:
        """For `_catch_up_audit`, an audit whose members file lists no unshown group's users (UNSHOWN; written by a
        release before audit41, or none): (the groups its report does not show, with their users the store `held`
        from before it, by name, as `_prune_audit` with `write` takes them; whether its counts and overall figures
        may hold a user deleted since it was made). The second holds when its report counts users or comparisons of
        groups it does not show, and either it counts more users than the store `held` from before it (whatever
        their groups: one is gone), or `after`, the users a deletion record (kept with several replicas) says were
        deleted since it was made, names one in none of the groups it shows (`members`): in an unshown group, or in
        none of its groups (no record says which: its overall figures are withheld all the same)."""
        report = decode_report(self.runner.store.path(job_id, "result.json").read_bytes())
        shown = {g.group for g in report.groups}
        unshown = {group: [h for h in users if h in held] for group, users in now.items() if group not in shown}
        listed = {h for group, users in members.items() if group in shown for h in users}
        counted = report.comparisons > sum(g.comparisons for g in report.groups) or report.users > len(listed)
        return unshown, counted and (report.users > len(held) or any(h not in listed for h in after))

    def _forget_in_audits(self, forget: Forget) -> None:
        """For a DELETE, once the user's rows left the store (`forget_in_population`): their hash leaves the
        AUDIT_MEMBERS of every audit made before it, and the groups left without members leave its report.
        Only the audits the audit members index names for them are read, not every stored one; their entries of an
        audit it names without a members file (purged, or its check failed) go too."""
        hashes = set(forget.hashes) | {key_hash(k) for k in forget.keys}
        for job_id in sorted(self.audit_members.audits_of(hashes)):
            job = self.runner.get(job_id)  # one just checked may not be recorded succeeded yet
            path = self.folder / "artifacts" / job_id / AUDIT_MEMBERS
            if job is None or job.kind != "audit" or not path.is_file():
                # no members file holds them: the audit was purged (the retention removes its folder under this lock,
                # then its record), or its check failed after indexing its members and the runner removed its folder.
                # A later check draws its members from the store, which no longer holds them: their entries go now
                # (not at the next start's `catch_up`)
                self.audit_members.drop(job_id, hashes, ())
                continue
            theirs = forget.made_at(job.created_at)
            gone = {h for h in hashes if h in theirs.hashes} | {key_hash(k) for k in theirs.keys}
            members = msgspec.json.decode(path.read_bytes(), type=dict[str, list[str]])
            pruned = {group: [h for h in users if h not in gone] for group, users in members.items()}
            kept = [h for users in pruned.values() for h in users]
            if pruned != members:  # the groups they were in leave the report, with the users left in them
                withheld = frozenset(group for group, users in members.items() if pruned[group] != users)
                left = set(self._prune_audit(job.id, pruned, withheld=withheld))
                gone, kept = gone | {h for h in kept if h not in left}, sorted(left)
            # the file holds none of them now (rewritten here, or by this DELETE stopped before the index followed:
            # the journal's replay), so their entries of the audit go, but for keys a user still in it shares
            self.audit_members.drop(job.id, gone, kept)

    def keep_snapshot_users(self, job: Job) -> None:
        """A succeeded PAL or EM job trained on a population snapshot (`on_succeed`): its artifact
        keeps only the users its snapshot holds now, so a user deleted while it trained (their rows
        already gone from the snapshot) leaves no fitted weights in it."""
        data = job.params.get("data")
        if job.kind not in ("pal", "em") or not job.artifact or not isinstance(data, str):
            return
        snapshot = Path(data)
        if snapshot.parent != self.population_folder:
            return  # a built-in protocol's users, not the service's
        with self.rt.population_lock:
            users = _snapshot_users(snapshot) if snapshot.is_file() else set()
            forget_training_users(job.artifact, lambda user: user not in users)

    def put_into_service(self, job: Job, key: str) -> None:
        """A promoted adapter is copied into the serving registry and named in the user's row, under
        the name it is served by (the chat response's `pluralign.adapter`, the vLLM LoRA name),
        under the user's lock: an adapter of a user deleted meanwhile is never installed. A promoted
        PAL or EM mixture is swapped into the running service (`Runtime.swap_rewards`), unless the service is one of
        several replicas: NotServed, since this replica alone would serve it (`<data_dir>/pal-promoted` is its own)."""
        if job.kind in POPULATION_KINDS and job.artifact:
            if self.rt.settings.replicas > 1:
                raise NotServed(
                    f"with PLURALIGN_REPLICAS={self.rt.settings.replicas}, a population model promoted by one replica "
                    "would be served by that replica alone, and the replicas would fit users against different models; "
                    "to serve it, promote its artifact (this job's `artifact`, in this replica's data folder) into the "
                    "replicas' PLURALIGN_PAL_DIR with `pluralign promote <data folder>/<artifact>`, which never leaves a "
                    "mix of two models there (a plain copy can): each replica serves it within two "
                    "PLURALIGN_DELETION_SWEEP_S passes (deploy/README.md, 'The pieces')")
            self.rt.swap_rewards(Path(job.artifact))
            return
        if job.kind != "adapter" or not job.artifact:
            return
        tenant, user = str(job.params.get("tenant", "default")), str(job.params["user"])
        # the job runner calls this on a thread of its own, without its lock (`LocalJobRunner._promotions_of`): the wait
        # for the user's lock (a refit, a stated change, a DELETE) holds up no other job (under the
        # runner's lock no job of any tenant would be launched or finished meanwhile); it gives up on a DELETE
        # running here, also one resumed from the journal for a user who came back, whose newer adapter stays theirs)
        with self.rt.user_lock(tenant, user):
            # deleted meanwhile: here (the job purged, no rows left) or through another replica, even if
            # they came back since (an adapter trained on what the DELETE removed is never installed)
            if self.runner.get(job.id) is None or not self.rt.store.count_comparisons(tenant, user) \
                    or self.rt.recorded_deletion_reaches(tenant, user, made_from(job)):
                raise ValueError(f"user {user!r} of tenant {tenant!r} was deleted while job {job.id} ran")
            # one this service cannot load (damaged, a later version's, for another base model) never
            # replaces the served adapter: an AdapterError naming the file, and the job is not promoted
            check_base(read_meta(job.artifact), self.rt.generator.model_id, job.artifact)
            check_files(job.artifact)
            served = adapter_folder(self.rt, tenant, user)
            # whole or not at all; what a promotion of this job killed part way left at `staged` goes first
            copy_into_place(job.artifact, served, staged=served.with_name(f".{served.name}.{job.id}"))
            # the old weights leave the pool; the next request loads these once their drop, on a thread of its own, ended:
            # it waits for the user's chats still generating with them (not waited for here,
            # under the runner's lock, where no job of any tenant would be launched, finished or cancelled meanwhile)
            self.rt.adapters.retire(tenant, user)
            record = self.rt.store.get_user(tenant, user)
            if record is not None:
                self.rt.store.put_user(msgspec.structs.replace(record, adapter=adapter_name(tenant, user), updated_at=time.time()))

    def forget_jobs(self, forget: Forget) -> int:
        """For a user's DELETE (a `Runtime.delete_hooks` entry), or other replicas' deletion records:
        stop the queued or running jobs of the users `forget` names and delete every job file that
        holds their data or names them (records, logs, results, artifacts, comparison snapshots),
        and what promotions.json serves for them. Returns how many files went."""
        with self._lock:  # their comparisons counted for the adapter trigger: they start again from 0
            for key in forget.keys:
                tenant, _, user = key.partition("/")
                self._new.pop((tenant, user), None)
            if forget.hashes:
                for tenant, user in [k for k in self._new if forget.user(*k)]:
                    self._new.pop((tenant, user), None)
        removed = 0
        # the users' jobs, looked up by user (`JobStore.of_user`; by hash, each user a job is for is hashed), with
        # the records a later release wrote (unread, kept for it): rolled back after an upgrade, its jobs for the
        # user still hold their data
        store = self.runner.store
        keys = forget.keys | ({key for key in store.users() if forget(key)} if forget.hashes else set())
        for key in keys:
            for job in store.of_user(key):
                if forget.made_at(made_from(job))(key):  # a job queued after the user's DELETE (they came back) is theirs again
                    removed += sum(1 for p in self._job_files(job) if p.is_file())
                    self.runner.purge(job.id)
        data = self.folder / "data"
        # never the population snapshots (`comparisons-<ms>.jsonl`), whatever a tenant is called (a key
        # issued before tenant names were checked may name `population`): a DELETE rewrites them instead
        tenants = [d for d in data.iterdir() if d.is_dir() and d.resolve() != self.population_folder.resolve()] if data.is_dir() else []
        for folder in tenants:
            for path in folder.iterdir():
                named = snapshot_named(path)  # a temp file a killed write left holds their rows too
                if named is not None and forget.made_at(named[1]).user(folder.name, named[0]):
                    path.unlink(missing_ok=True)
                    removed += 1
        for key in self.runner.promotions.keys("adapter/"):
            served = self.runner.promotions.served(key)
            if served is not None and forget.made_at(served.promoted_at)(key.removeprefix("adapter/")):
                self.runner.promotions.forget(key)
        return removed

    def forget_adapter_jobs_since(self, tenant: str, user: str, since: float) -> int:
        """For a retraction of one of the user's rows received at `since` (unix seconds; a `Runtime.retract_hooks`
        entry, under the user's lock): their adapter jobs queued at or after it, whose snapshots may hold that row, are
        stopped and every file of theirs removed (a promotion after this finds the job gone: `put_into_service`), and
        so are their snapshots taken since (one of a job not queued, a killed write's temporary file). Jobs and
        snapshots from before the row arrived cannot hold it and stay. Returns how many files went."""
        removed = 0
        for job in self.runner.store.of_user(f"{tenant}/{user}"):
            if getattr(job, "kind", None) == "adapter" and job.created_at >= since:
                removed += sum(1 for p in self._job_files(job) if p.is_file())
                self.runner.purge(job.id)
        folder = self.folder / "data" / tenant
        for path in (folder.iterdir() if folder.is_dir() and folder.resolve() != self.population_folder.resolve() else ()):
            named = snapshot_named(path)
            if named is not None and named[0] == user and named[1] >= math.floor(since * 1000) / 1000:  # its name: whole ms
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _job_files(self, job: Job | JobNamed) -> list[Path]:
        files = self.runner.store.files(job.id)
        artifact = self.folder / "artifacts" / job.id
        return files + (list(artifact.rglob("*")) if artifact.is_dir() else [])

    def on_moved(self, rows: list[StoredPreference]) -> None:
        """Called with each batch of feedback rows moved into the table: a user whose new strict
        comparisons (counted in this process) reach `adapter_every` is checked by the trigger.
        Counting here keeps the per-feedback cost at a dict update instead of a table count and a
        scan of job records. With several replicas only the user's owner (`service.replicas.owner`)
        counts and queues, so a job is decided once; it compares the table's count, which holds
        what every replica moved, with its own job records."""
        due = []
        settings = self.rt.settings
        with self._lock:
            for r in rows:
                if settings.replicas > 1 and owner(r.tenant, r.user_id, settings.replicas) != settings.replica_index:
                    continue  # another replica decides this user's jobs
                if r.rejected and not r.tie:
                    key = (r.tenant, r.user_id)
                    self._new[key] = self._new.get(key, 0) + 1
                    if self._new[key] >= self.trigger.every:
                        self._new[key] = 0
                        due.append(key)
        for tenant, user in dict.fromkeys(due):
            self.on_feedback(tenant, user)

    def on_feedback(self, tenant: str, user: str) -> None:
        """Queue an adapter job when the user has enough new comparisons; never fails the feedback.
        With the tenant at `tenant_queued_jobs` the user is checked again at their next strict
        comparison (a warning line, no traceback: the quota doing its job is no error)."""
        if (tenant, user) in getattr(self._queueing, "users", ()):
            # called back from the snapshot of the job this thread is queueing for the user: that job covers them (noted:
            # due again should it not be queued after all, `_queue_adapter`)
            self._queueing.__dict__.setdefault("skipped", set()).add((tenant, user))
            return
        try:
            with self.rt.user_lock(tenant, user):  # one check-then-queue at a time per user
                comparisons = self.rt.store.count_comparisons(tenant, user)
                job = self.trigger.on_feedback(tenant, user, comparisons)
            if job is not None:
                log.info("queued adapter job %s for a user of tenant %s at %d comparisons", job.id, tenant, comparisons)  # no user id in logs
        except (QuotaExceeded, Backlogged) as exc:
            with self._lock:  # due again at their next strict comparison, not `adapter_every` later
                self._new[(tenant, user)] = max(self._new.get((tenant, user), 0), self.trigger.every - 1)
            log.warning("adapter trigger waits: %s; the user is checked again at their next comparison", exc)
        except NoAdapterBase as exc:  # the settings' doing, said without a traceback; the user is due again `every` later
            log.warning("adapter trigger queued no job for a user of tenant %s: %s", tenant, exc)
        except DeletedWhileRead:  # a race with another replica's DELETE, no failure (its message names the user)
            log.warning("adapter trigger queued no job for a user of tenant %s: they were deleted through another replica "
                        "while their comparisons were read", tenant)
        except Exception:
            log.exception("adapter trigger failed for a user of tenant %s", tenant)

    async def audit(self, params: dict[str, Param], wait: float) -> Job:
        """Run an audit job and wait (without blocking the event loop) until it ends or `wait` seconds
        have passed since the call: the submit, which first moves the feedback log into the table,
        counts against the same wait and raises StillMoving (nothing queued) when that move is not done
        by then (a batch of it already begun ends first: `Ingestor.flush`)."""
        deadline = time.monotonic() + wait
        job, _ = await sync_to_thread(self.submit, "audit", params, deadline)  # moving the log's backlog may take a while
        while time.monotonic() < deadline:
            job = await sync_to_thread(self.runner.get, job.id)  # a file read: not on the event loop
            if job.state not in ACTIVE_STATES:
                break
            await asyncio.sleep(0.1)
        return job

    def report(self, job: Job) -> AuditReport | None:
        """The report of a succeeded audit job; None for any other job. Raises UnreadableReport naming why when
        it cannot be read (no report recorded, its file missing or damaged, a schema a later release wrote)."""
        if job.kind != "audit" or job.state != "succeeded":
            return None
        if not job.result_path:
            raise UnreadableReport(job, "the job recorded no report")
        # read in this jobs folder: the record names the path where it was written, another one once the
        # data folder was moved or restored elsewhere (a start from another path, another machine)
        try:
            return decode_report(self.runner.store.path(job.id, "result.json").read_bytes())
        except ReportSchemaError as exc:
            raise UnreadableReport(job, str(exc), schema=True) from None
        except (OSError, ValueError) as exc:  # msgspec.DecodeError is a ValueError: damaged, or not a report
            raise UnreadableReport(job, f"{type(exc).__name__}: {exc}") from None

    def reports(self, limit: int = 50, *, like: Job | None = None, tenant: str | None = None) -> StoredReports:
        """The reports of the newest `limit` succeeded audit jobs, newest first, and those that cannot be read.
        `like` (an audit job): only audits of the users it audits, its tenant's (the same `tenant` param; none: every
        tenant's), of the same settings (`asked_settings`), the ones its report can be compared with. `tenant`: only
        audits of that tenant (so another tenant's newer audits push none of them out). A report does not name its
        tenant: its job's params do. Reads at most `limit` report files; the records are in memory."""
        jobs = self.runner.list(kind="audit", state="succeeded", limit=limit if like is None and tenant is None else 1 << 62)
        if like is not None:
            settings = asked_settings(like.params)
            jobs = [j for j in jobs if j.params.get("tenant") == like.params.get("tenant") and asked_settings(j.params) == settings]
        if tenant is not None:
            jobs = [j for j in jobs if j.params.get("tenant") == tenant]
        jobs = jobs[:limit]
        found = StoredReports([], [], [], [])
        for job in jobs:
            try:
                report = self.report(job)
            except UnreadableReport as exc:
                if not exc.schema:  # what the dashboard says the log says
                    log.error("%s: %s", exc, exc.detail)
                found.unreadable.append(exc)
                continue
            if report is not None:
                found.readable.append(report)
                found.jobs.append(job)
                audited = job.params.get("tenant")
                found.tenants.append(audited if isinstance(audited, str) else None)
        return found
