"""The admin area's state: the job runner, the adapter trigger, and audit reports kept by audit jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from pluralign.fairness.report import AuditReport, decode_report
from service.settings import Settings
from training.jobs.record import ACTIVE_STATES, Job, Param
from training.jobs.runner import LocalJobRunner, RunnerConfig
from training.jobs.triggers import AdapterTrigger

log = logging.getLogger("pluralign.service")


@dataclass
class Admin:
    runner: LocalJobRunner
    trigger: AdapterTrigger
    store_uri: str

    @classmethod
    def build(cls, settings: Settings) -> Admin:
        runner = LocalJobRunner(RunnerConfig(folder=settings.data_path / "jobs", workers=settings.job_workers))
        return cls(runner=runner, trigger=AdapterTrigger(runner, settings.adapter_every), store_uri=settings.lancedb_uri)

    def submit(self, kind: str, params: dict[str, Param]) -> Job:
        if kind == "audit":
            params = {"store": self.store_uri, **params}  # audit jobs read the service's own tables
        return self.runner.submit(kind, params)

    def on_feedback(self, tenant: str, user: str, comparisons: int) -> None:
        """Queue an adapter job when the user has enough new comparisons; never fails the feedback."""
        try:
            job = self.trigger.on_feedback(tenant, user, comparisons)
            if job is not None:
                log.info("queued adapter job %s for %s/%s at %d comparisons", job.id, tenant, user, comparisons)
        except Exception:
            log.exception("adapter trigger failed for %s/%s", tenant, user)

    async def audit(self, params: dict[str, Param], wait: float) -> Job:
        """Run an audit job and wait (without blocking the event loop) until it ends or `wait` passes."""
        job = self.submit("audit", params)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            job = self.runner.get(job.id)
            if job.state not in ACTIVE_STATES:
                break
            await asyncio.sleep(0.1)
        return job

    def report(self, job: Job) -> AuditReport | None:
        if job.kind != "audit" or job.state != "succeeded" or not job.result_path:
            return None
        try:
            return decode_report(Path(job.result_path).read_bytes())
        except (OSError, ValueError, msgspec.DecodeError):
            return None

    def reports(self, limit: int = 50) -> list[AuditReport]:
        """Stored audit reports, newest first."""
        found = (self.report(j) for j in self.runner.list(kind="audit", state="succeeded", limit=limit))
        return [r for r in found if r is not None]
