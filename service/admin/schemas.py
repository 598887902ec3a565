"""Wire formats of the admin routes (msgspec)."""

from __future__ import annotations

import msgspec

from pluralign.data.record import Base
from training.jobs.record import Job, Param


class JobRequest(Base):
    """POST /admin/jobs: `kind` is adapter, pal, em or audit; `params` must fit the kind's typed
    allow-list (`training.jobs.params`: names, types and bounds; no paths), else a 400 naming it.

    Example: {"kind": "adapter", "params": {"tenant": "acme", "user": "alice"}}"""

    kind: str
    params: dict[str, Param] = {}


class JobList(msgspec.Struct):
    jobs: list[Job]


class AuditPending(msgspec.Struct):
    """202 from GET /admin/audits/fairness: the audit is still running; poll GET /admin/jobs/{id}."""

    job: Job
