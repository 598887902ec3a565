"""The job record: one msgspec struct, persisted as one JSON file per job."""

from __future__ import annotations

from typing import Literal

import msgspec

from pluralign.data.record import Persisted

# 1: the first record; 2: `request_id` (a record of schema 1 reads as one without it). A release reads
# every schema up to its own and refuses a later one by its number, before its fields (which
# `forbid_unknown_fields` would refuse as if the file were damaged).
JOB_SCHEMA_VERSION = 2

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
Param = str | int | float | bool


class Job(Persisted, kw_only=True):
    """A unit of background work and everything an operator needs to follow it."""

    schema_version: int = JOB_SCHEMA_VERSION
    id: str
    kind: str  # a name in the runner's kinds: adapter, pal, em, audit
    params: dict[str, Param] = {}
    state: JobState = "queued"
    progress: float = 0.0  # 0..1, as last reported by the worker
    metrics: dict[str, float] = {}  # numbers from the worker's result, plus promotion figures
    result_path: str | None = None  # the worker's full JSON result (e.g. an audit report)
    artifact: str | None = None  # what the job produced (adapter, mixture checkpoint)
    promoted: bool | None = None  # None: nothing to promote
    promotion_note: str | None = None
    log_tail: list[str] = []
    error: str | None = None
    attempts: int = 0  # launches so far; > 1 after a restart re-ran it
    cancel_requested: bool = False
    # the X-Request-Id of the request that caused it (the admin call, or the feedback whose count
    # triggered it); its worker has it as PLURALIGN_REQUEST_ID and names it at the top of its log
    request_id: str | None = None
    pid: int | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None


class _Versioned(msgspec.Struct):
    schema_version: object = 1  # whatever the file holds, checked before the record's fields (none: the first schema's default)


class LaterSchema(ValueError):
    """A job record of a schema later than JOB_SCHEMA_VERSION (a later release wrote it): `named` is
    whom it was for, read from it however its other fields changed."""

    def __init__(self, message: str, named: JobNamed):
        super().__init__(message)
        self.named = named


class JobNamed(msgspec.Struct):
    """Whom a job was for, as every schema's record says it (`params` `tenant` and `user`, `created_at`):
    read from a record this release cannot read whole, so that a DELETE of the user still finds it."""

    id: str
    params: dict[str, object] = {}
    created_at: float = 0.0  # unknown: before any DELETE


def user_key(params: dict) -> str | None:
    """Whom a job is for, as population files and deletions name a training user (`tenant/user`; the
    tenant `default` when its params name none), from its `params`; None for a job for no one user."""
    user = params.get("user")
    return f"{params.get('tenant', 'default')}/{user}" if isinstance(user, str) else None


def tenant_of(params: dict) -> str:
    """Whose turn a job takes when queued jobs start (`LocalJobRunner._launch`): its params' `tenant`; `default` for
    a job for one user that names none (as `user_key`); "" for a job for the whole service (a population model, an
    audit of every tenant)."""
    tenant = params.get("tenant")
    if isinstance(tenant, str):
        return tenant
    return "default" if isinstance(params.get("user"), str) else ""


job_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(Job)
_version_decoder = msgspec.json.Decoder(_Versioned)
_named_decoder = msgspec.json.Decoder(JobNamed)


def decode_job(data: bytes) -> Job:
    """The job of a record's JSON `data`, of any schema up to JOB_SCHEMA_VERSION (read as this one's).
    Raises LaterSchema (a ValueError naming the schema, and whom the job was for) for a record a later
    release wrote, ValueError naming the schema for another one, and msgspec.DecodeError for a record
    that is not one (damaged, or not JSON)."""
    version = _version_decoder.decode(data).schema_version
    if type(version) is int and version > JOB_SCHEMA_VERSION:
        message = f"job record schema {version}, written by a later release of pluralign (this one reads schemas 1-{JOB_SCHEMA_VERSION})"
        raise LaterSchema(message, _named_decoder.decode(data))
    if not (type(version) is int and 1 <= version <= JOB_SCHEMA_VERSION):
        raise ValueError(f"job record schema {version!r} (this one reads schemas 1-{JOB_SCHEMA_VERSION})")
    job = job_decoder.decode(data)
    return job if version == JOB_SCHEMA_VERSION else msgspec.structs.replace(job, schema_version=JOB_SCHEMA_VERSION)
