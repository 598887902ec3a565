"""Queued jobs start in turns per tenant: one tenant's many queued jobs, audits among them, never keep another
tenant's one waiting behind them all (the real app over HTTP, its real job runner with one worker)."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job

COMPARISON = {"type": "comparison", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def _running(admin) -> list[dict]:
    return admin.get("/admin/jobs", params={"state": "running"}).json()["jobs"]


def test_a_tenants_one_job_starts_before_another_tenants_earlier_queued_ones(serve):
    """jobs41: acme's queued audits (audits go first within a tenant's turn) kept globex's training waiting behind all
    of them: audits came before every tenant's training. Now tenants take turns over all kinds of job."""
    _, server, service = serve(admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server, service.client("acme") as acme, service.client("globex") as globex, service.client("admin") as admin:
        for client, user in ((acme, "a1"), (acme, "a2"), (acme, "a3"), (globex, "b1")):
            assert client.post("/v1/feedback", json={**COMPARISON, "user": user}).status_code == 201
        jobs = {}
        for tenant, user in (("acme", "a1"), ("acme", "a2"), ("acme", "a3")):
            r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": tenant, "user": user, "steps": 2000}})
            assert r.status_code == 201, r.text
            jobs[user] = r.json()["id"]
        for size in (1, 2, 3):  # three distinct audits of acme's, queued after its training and before globex's job
            r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "acme", "min_group_size": size}})
            assert r.status_code == 201, r.text
            jobs[f"audit{size}"] = r.json()["id"]
        r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "globex", "user": "b1", "steps": 2000}})
        assert r.status_code == 201, r.text  # b1's comes last
        jobs["b1"] = r.json()["id"]
        try:
            assert admin.post(f"/admin/jobs/{jobs['a1']}/cancel").status_code == 200  # the one worker is free again
            assert wait_job(admin, jobs["a1"], timeout=60)["state"] == "cancelled"
            deadline = time.monotonic() + 30
            while not (running := _running(admin)):
                assert time.monotonic() < deadline, "no job started"
                time.sleep(0.1)
            assert [j["params"].get("user", j["kind"]) for j in running] == ["b1"]  # globex's turn, before acme's audits, a2, a3
            waiting = ("audit1", "audit2", "audit3", "a2", "a3")
            assert [admin.get(f"/admin/jobs/{jobs[name]}").json()["state"] for name in waiting] == ["queued"] * 5
        finally:
            for job_id in jobs.values():
                admin.post(f"/admin/jobs/{job_id}/cancel")
