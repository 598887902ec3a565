"""Wire formats of the admin routes (msgspec)."""

from __future__ import annotations

import msgspec

from pluralign.store.tables import StoredPreference
from service.nulls import NullMeansDefault
from training.jobs.record import Job, Param


class JobRequest(NullMeansDefault):
    """POST /admin/jobs: `kind` is adapter, pal, em or audit; `params` must fit the kind's typed
    allow-list (`training.jobs.params`: names, types and bounds; no paths), else a 400 naming it. A null
    `params`, or a null parameter, is not given (`NullMeansDefault`): the kind's default.

    Example: {"kind": "adapter", "params": {"tenant": "acme", "user": "alice"}}"""

    kind: str
    params: dict[str, Param | None] | None = {}  # a null parameter's name is still checked (`decode_params`)


class JobList(msgspec.Struct):
    jobs: list[Job]


class AuditPending(msgspec.Struct):
    """202 from GET /admin/audits/fairness: the audit is still running; poll GET /admin/jobs/{id}."""

    job: Job


# The OpenAPI document's examples of the admin answers that are not the route's own return type (Litestar's
# ResponseSpec would otherwise fill them with polyfactory's random strings, different in every process): real
# records, as the routes answer them, so they keep to the schema as the struct changes
_AUDIT_PARAMS = {"group_by": "segment", "min_group_size": 5, "min_comparisons": 50, "tenant": "acme"}
QUEUED_AUDIT_EXAMPLE = Job(
    id="19aee0694fd-3f9a1c07", kind="audit", params=_AUDIT_PARAMS, request_id="req_5b0e7c1d9a2f4e3b8c6d0a1f2e3d4c5b",
    created_at=1764930000.125,
)
RUNNING_AUDIT_EXAMPLE = AuditPending(job=msgspec.structs.replace(
    QUEUED_AUDIT_EXAMPLE, state="running", progress=0.4, attempts=1, pid=48213, started_at=1764930001.5,
    log_tail=["pluralign: job 19aee0694fd-3f9a1c07 started by request request_id=req_5b0e7c1d9a2f4e3b8c6d0a1f2e3d4c5b"],
))


class DeadLetterView(msgspec.Struct):
    """One feedback record set aside (`pluralign.store.dead_letter`): `name` (what the requeue and discard routes
    take), its `tenant`, its `rows` as the feedback log held them (a non-finite time shows as null), the `error` of its
    last try, how many `tries` failed, and when it was set aside (`set_aside_at`, unix seconds). `row_numbers`: where
    only some rows of a record were refused (its other rows stored), their positions in it, from 1 (an import's rows
    in its file's order); null: the whole record."""

    name: str
    tenant: str
    rows: list[StoredPreference]
    error: str
    tries: int
    set_aside_at: float
    row_numbers: list[int] | None = None


class DeadLetterList(msgspec.Struct):
    """GET /admin/feedback/dead-letter: a page of the records set aside, oldest first; `rows`, the rows of every letter
    listed (of `tenant` when asked, all pages); `next`, the `after` of the next page (null on the last). They are the
    answering replica's own (each replica sets aside the records of its own feedback log): `replica` is its index
    (PLURALIGN_REPLICA_INDEX) with PLURALIGN_REPLICAS over 1, null for a service alone; ask each replica for its own."""

    letters: list[DeadLetterView]
    rows: int
    next: str | None = None
    replica: int | None = None


class Requeued(msgspec.Struct):
    """POST /admin/feedback/dead-letter/{name}/requeue: the letter's rows are back in the feedback log."""

    name: str
    rows: int
