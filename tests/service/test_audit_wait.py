"""`GET /admin/audits/fairness?wait=S` waits at most S seconds in all: the wait's clock starts before
the audit is submitted, whose first act (moving the feedback log into the table) can itself take a
while under load. It used to start after, so a slow flush and a slow job added up (a 120 s wait took
more than the test's 240 s read under a heavy machine)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from service.admin.services import Admin


def test_the_wait_bounds_the_submit_and_the_job_together():
    """A submit that takes the whole wait (it returns once `wait` seconds have passed since the call began) leaves no
    time to poll the job: the audit returns the job as the submit left it, without reading it once. Before, the wait's
    clock started after the submit, and the job was polled for `wait` seconds more."""
    admin = Admin.__new__(Admin)  # the method alone: a submit that takes its time and a job that never ends
    submitted, polled = [], []
    wait = 0.1

    def slow_submit(kind, params, deadline=None):
        time.sleep(wait)  # the audit's call began before this one: its `wait` has passed once this returns
        submitted.append(kind)
        return SimpleNamespace(id="job-1", state="running"), True

    def get(job_id):
        polled.append(job_id)
        return SimpleNamespace(id=job_id, state="running")

    admin.submit = slow_submit
    admin.runner = SimpleNamespace(get=get)
    job = asyncio.run(admin.audit({}, wait=wait))
    assert submitted == ["audit"] and job.state == "running"  # still running: the caller polls /admin/jobs/{id}
    assert polled == [], polled  # the submit's time came out of the wait (before: polled until `wait` after the submit)
