"""Automatic jobs: a user who has given `every` new comparisons since their last adapter gets one queued."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from training.jobs.record import ACTIVE_STATES, Job, Param
from training.jobs.runner import JobRunner


def baseline(jobs: Iterable[Job]) -> Job | None:
    """Of one user's adapter jobs, the one the trigger counts new comparisons from: the one recording
    the most (`params.comparisons`, 0 when absent: an operator's retrain) that was not cancelled (a
    failed one included, so a failing user is retried only after `every` more); the newest of equals.
    None when every job was cancelled."""
    counted = [j for j in jobs if j.state != "cancelled"]
    return max(counted, key=lambda j: (int(j.params.get("comparisons", 0)), j.created_at, j.id), default=None)


class AdapterTrigger:
    def __init__(self, runner: JobRunner, every: int = 50, submit: Callable[[str, dict[str, Param]], Job] | None = None):
        """`submit(kind, params)` queues the job (default `runner.submit`; the service adds the user's data)."""
        if every < 1:
            raise ValueError("`every` must be at least 1 comparison")
        self.runner = runner
        self.every = every
        self.submit = submit or runner.submit

    def on_feedback(self, tenant: str, user_id: str, comparisons: int) -> Job | None:
        """Call after storing a user's feedback with their total comparison count; returns a queued job or None.

        The baseline is the comparison count `baseline` reads from the user's adapter jobs."""
        jobs = [
            j for j in self.runner.list(kind="adapter", limit=100_000)
            if j.params.get("user") == user_id and j.params.get("tenant") == tenant
        ]
        if any(j.state in ACTIVE_STATES for j in jobs):
            return None
        counted = baseline(jobs)
        last = int(counted.params.get("comparisons", 0)) if counted is not None else 0
        if comparisons - last < self.every:
            return None
        return self.submit("adapter", {"tenant": tenant, "user": user_id, "comparisons": comparisons})
