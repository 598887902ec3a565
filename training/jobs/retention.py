"""Which finished jobs may go: a retention policy for the job folder.

Every training job leaves a record, a log, a data snapshot (an adapter job's copy of its user's
comparisons, a population job's copy of every tenant's) and an artifact (a LoRA adapter, a mixture
checkpoint). The adapter trigger queues one per user every `adapter_every` comparisons, so without
a policy the folder grows without bound, and the trigger's and the dashboard's scans of the job
list grow with it. `expired` names the jobs whose files can be removed; the service's
`service.admin.retention.JobRetention` removes them.

Kept whatever their age: jobs still queued or running, succeeded audits (their reports are the dashboard's
history, a few KB each; a failed or cancelled audit has no report and goes like any job), a job whose artifact is served (promotions.json names the job), and the newest
job of each lineage (kind, tenant, user), with the one the adapter trigger counts a user's new
comparisons from (`training.jobs.triggers.baseline`: the most comparisons recorded by a job not
cancelled; for a population kind, its newest job not cancelled).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from training.jobs.record import FINAL_STATES, Job
from training.jobs.triggers import baseline

# kinds whose succeeded jobs are kept whatever their age: an audit's report is the dashboard's history. A failed or
# cancelled one holds none, and goes with age (kept, every audit a typo in `group_by` or `tenant` failed would stay for good)
KEPT_KINDS = frozenset({"audit"})


def lineage(job: Job) -> tuple[str, str | None, str | None]:
    """(kind, tenant, user): a user's adapter jobs form one lineage, a population kind's jobs another."""
    user = job.params.get("user")
    if not isinstance(user, str):
        return job.kind, None, None
    return job.kind, str(job.params.get("tenant", "default")), user


def expired(jobs: Iterable[Job], *, now: float, keep_s: float, served: Collection[str]) -> list[Job]:
    """The jobs, in the order given, whose files a retention of `keep_s` seconds removes at `now`
    (unix seconds): finished (succeeded, failed or cancelled) at least `keep_s` ago, not a succeeded audit,
    not in `served` (ids of the jobs whose artifacts promotions.json serves), and not the newest job of their
    lineage nor its `training.jobs.triggers.baseline`. Raises ValueError when `keep_s` is not
    positive and finite (a retention of 0 means "keep every job": do not call)."""
    if not 0 < keep_s < float("inf"):  # NaN fails too
        raise ValueError(f"`keep_s` must be positive and finite, got {keep_s}")
    jobs = list(jobs)
    lineages: dict[tuple, list[Job]] = {}
    for job in jobs:
        lineages.setdefault(lineage(job), []).append(job)
    kept = set()
    for members in lineages.values():
        kept.add(max(members, key=lambda j: (j.created_at, j.id)).id)
        counted = baseline(members)
        if counted is not None:
            kept.add(counted.id)
    cutoff = now - keep_s
    return [
        j for j in jobs
        if j.state in FINAL_STATES and not (j.kind in KEPT_KINDS and j.state == "succeeded") and j.id not in kept
        and (j.finished_at if j.finished_at is not None else j.created_at) <= cutoff
        and j.id not in served
    ]
