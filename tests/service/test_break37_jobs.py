"""Session 37: admin jobs over HTTP, attacked. Before: population jobs (`pal`, `em`) had no bound at all.
Forty `POST /admin/jobs {"kind": "pal"}` were forty queued jobs, and each one of the default protocol
(`file`: the service's own feedback) first wrote a snapshot of every stored comparison of every
tenant into `jobs/data/population/`: a retry loop in a script filled the disk with copies of the
store, one per request, and queued hours of training. Now they count, together, against
`tenant_queued_jobs` as the reserved tenant `population`'s: beyond it a 429 with Retry-After, and no
snapshot written."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break28_jobs import give


def test_population_jobs_beyond_the_queue_bound_are_429_and_write_no_snapshot(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, tenant_queued_jobs=2)
    snapshots = data / "jobs" / "data" / "population"
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give(c, "fred")
        answers = [admin.post("/admin/jobs", json={"kind": kind, "params": {"k": 1}}) for kind in ("pal", "em", "pal", "em")]
        try:
            assert [r.status_code for r in answers] == [201, 201, 429, 429], [r.text for r in answers]
            refused = answers[2]
            assert refused.headers["Retry-After"] == "60"
            message = refused.json()["error"]["message"]
            assert "population jobs (pal, em)" in message and "2 queued or running" in message and "at most 2" in message, message
            assert len(list(snapshots.glob("comparisons-*.jsonl"))) == 2  # one per job queued, none for a refusal
            # an adapter job is another tenant's count: still queued
            assert admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "fred", "steps": 1}}).status_code == 201
        finally:
            for job in admin.get("/admin/jobs", params={"limit": 100}).json()["jobs"]:
                if job["state"] in ("queued", "running"):
                    admin.post(f"/admin/jobs/{job['id']}/cancel")
        # once they ended, population jobs may be queued again
        assert admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 1}}).status_code == 201
        for job in admin.get("/admin/jobs", params={"limit": 100}).json()["jobs"]:
            if job["state"] in ("queued", "running"):
                admin.post(f"/admin/jobs/{job['id']}/cancel")


def test_an_audit_identical_to_a_queued_one_is_that_job_not_another(serve):
    """Before: every `GET /admin/audits/fairness` (a dashboard script polling with `wait=0`) and every
    `POST /admin/jobs {"kind": "audit"}` queued one more audit, and audits start before queued training:
    thirty identical audits were thirty jobs, the training behind them waiting. Now an audit with the
    params of one still queued is that job (it reads the table when it starts: it covers the new
    request's feedback too); one with other params, or once it runs, is a job of its own."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give(c, "fred")
        busy = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 1, "epochs": 200}})  # the one worker busy: audits wait
        assert busy.status_code == 201, busy.text
        # running, not queued: a queued audit starts before queued training, so with the PAL job still queued
        # the first audit could start (and a later identical one be a job of its own) before the others came
        deadline = time.monotonic() + 60
        while admin.get(f"/admin/jobs/{busy.json()['id']}").json()["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            params = {"group_by": "seg", "tenant": "acme", "min_comparisons": 1}
            posted = [admin.post("/admin/jobs", json={"kind": "audit", "params": params}) for _ in range(5)]
            polled = [admin.get("/admin/audits/fairness", params={**params, "wait": 0}) for _ in range(5)]
            # the first queued the audit (201 Created); the others are that job, nothing created: 200 (before: 201 each)
            assert [r.status_code for r in posted] == [201, 200, 200, 200, 200] and [r.status_code for r in polled] == [202] * 5
            ids = {r.json()["id"] for r in posted} | {r.json()["job"]["id"] for r in polled}
            assert len(ids) == 1, ids
            other = admin.post("/admin/jobs", json={"kind": "audit", "params": {**params, "min_comparisons": 2}})
            assert other.status_code == 201 and other.json()["id"] not in ids
            audits = [j for j in admin.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"]]
            assert len(audits) == 2, audits
            assert admin.get(f"/admin/jobs/{busy.json()['id']}").json()["state"] == "running"  # the premise held throughout
        finally:
            for job in admin.get("/admin/jobs", params={"limit": 100}).json()["jobs"]:
                if job["state"] in ("queued", "running"):
                    admin.post(f"/admin/jobs/{job['id']}/cancel")
