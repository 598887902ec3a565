"""The job record: one msgspec struct, persisted as one JSON file per job."""

from __future__ import annotations

from typing import Literal

import msgspec

from pluralign.data.record import Base

JOB_SCHEMA_VERSION = 1

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
Param = str | int | float | bool


class Job(Base, kw_only=True):
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


job_encoder = msgspec.json.Encoder()
job_decoder = msgspec.json.Decoder(Job)


def decode_job(data: bytes) -> Job:
    job = job_decoder.decode(data)
    if job.schema_version != JOB_SCHEMA_VERSION:
        raise ValueError(f"job record schema {job.schema_version}, this version reads {JOB_SCHEMA_VERSION}")
    return job
