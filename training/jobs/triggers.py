"""Automatic jobs: a user who has given `every` new comparisons since their last adapter gets one queued."""

from __future__ import annotations

from collections.abc import Callable

from training.jobs.record import ACTIVE_STATES, Job, Param
from training.jobs.runner import JobRunner


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

        The baseline is the comparison count recorded by the user's latest adapter job that was not
        cancelled (a failed one included, so a failing user is retried only after `every` more)."""
        jobs = [
            j for j in self.runner.list(kind="adapter", limit=100_000)
            if j.params.get("user") == user_id and j.params.get("tenant") == tenant
        ]
        if any(j.state in ACTIVE_STATES for j in jobs):
            return None
        baselines = [int(j.params.get("comparisons", 0)) for j in jobs if j.state != "cancelled"]
        last = max(baselines, default=0)
        if comparisons - last < self.every:
            return None
        return self.submit("adapter", {"tenant": tenant, "user": user_id, "comparisons": comparisons})
