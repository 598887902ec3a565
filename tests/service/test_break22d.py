"""Session 22d: today's features (job retention, damaged adapters falling back, JSON 404/405s) driven
the way a careless or hostile operator or client would, each over HTTP against the real app."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service
from training.jobs.record import Job, job_encoder

RETENTION_S = 3.0
LONG_AGO = time.time() - 30 * 86400


def finished_job(jobs_folder: Path, kind: str, params: dict, created_at: float, state: str = "succeeded") -> str:
    """A finished job's record, as the runner writes it, in the jobs folder the service reads at start."""
    job = Job(id=uuid.uuid4().hex[:12], kind=kind, params=params, state=state, created_at=created_at,
              started_at=created_at + 1, finished_at=created_at + 60)
    jobs_folder.mkdir(parents=True, exist_ok=True)
    (jobs_folder / f"{job.id}.job.json").write_bytes(job_encoder.encode(job))
    return job.id


def adapter_jobs(admin, user: str) -> list[dict]:
    return [j for j in admin.get("/admin/jobs?kind=adapter").json()["jobs"] if j["params"].get("user") == user]


def test_retention_keeps_the_job_the_adapter_trigger_counts_from(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """The trigger counts a user's new comparisons from the most any of their adapter jobs that was
    not cancelled recorded; an operator's own retrain (`{"user": "lena"}`, `comparisons` 0) is newer.
    Before: the retention kept the newest job not cancelled (the retrain, 0), purged the trigger's,
    and the user's next check queued a job at once, counting every comparison they ever gave as new."""
    jobs_folder = tmp_path / "jobs"
    every = 6
    by_trigger = finished_job(jobs_folder, "adapter", {"tenant": "acme", "user": "lena", "comparisons": every}, LONG_AGO)
    by_hand = finished_job(jobs_folder, "adapter", {"tenant": "acme", "user": "lena"}, LONG_AGO + 3600)
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                adapter_every=every, job_retention_s=RETENTION_S)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        time.sleep(1.5)  # a retention pass ran at start
        give_comparisons(c, "lena", "tea", n=every)  # the count the trigger's job recorded: nothing new
        svc.runtime.wait_for_background()
        ids = {j["id"] for j in adapter_jobs(admin, "lena")}
        assert ids == {by_trigger, by_hand}, adapter_jobs(admin, "lena")
