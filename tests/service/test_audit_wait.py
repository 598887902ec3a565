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
    admin = Admin.__new__(Admin)  # the method alone: a submit that takes its time and a job that never ends
    submitted = []

    def slow_submit(kind, params, deadline=None):
        time.sleep(1.5)
        submitted.append(kind)
        return SimpleNamespace(id="job-1", state="running"), True

    admin.submit = slow_submit
    admin.runner = SimpleNamespace(get=lambda job_id: SimpleNamespace(id=job_id, state="running"))
    start = time.monotonic()
    job = asyncio.run(admin.audit({}, wait=1.5))
    took = time.monotonic() - start
    assert submitted == ["audit"] and job.state == "running"  # still running: the caller polls /admin/jobs/{id}
    assert 1.5 <= took < 2.7, took  # the submit's 1.5 s came out of the wait (3 s and more before)
