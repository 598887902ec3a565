"""Queued jobs start in turns per tenant: one tenant's many queued jobs never keep another tenant's one
waiting behind them all (the real app over HTTP, its real job runner with one worker)."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job

COMPARISON = {"type": "comparison", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def _running(admin) -> list[dict]:
    return admin.get("/admin/jobs", params={"state": "running"}).json()["jobs"]


def test_a_tenants_one_job_starts_before_another_tenants_earlier_queued_ones(serve):
    _, server, service = serve(admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server, service.client("acme") as acme, service.client("globex") as globex, service.client("admin") as admin:
        for client, user in ((acme, "a1"), (acme, "a2"), (acme, "a3"), (globex, "b1")):
            assert client.post("/v1/feedback", json={**COMPARISON, "user": user}).status_code == 201
        jobs = {}
        for tenant, user in (("acme", "a1"), ("acme", "a2"), ("acme", "a3"), ("globex", "b1")):  # b1's comes last
            r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": tenant, "user": user, "steps": 2000}})
            assert r.status_code == 201, r.text
            jobs[user] = r.json()["id"]
        try:
            assert admin.post(f"/admin/jobs/{jobs['a1']}/cancel").status_code == 200  # the one worker is free again
            assert wait_job(admin, jobs["a1"], timeout=60)["state"] == "cancelled"
            deadline = time.monotonic() + 30
            while not (running := _running(admin)):
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.1)
            assert [j["params"]["user"] for j in running] == ["b1"]  # globex's turn, before acme's a2 and a3
            assert [admin.get(f"/admin/jobs/{jobs[u]}").json()["state"] for u in ("a2", "a3")] == ["queued", "queued"]
        finally:
            for job_id in jobs.values():
                admin.post(f"/admin/jobs/{job_id}/cancel")
