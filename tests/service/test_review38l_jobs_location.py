"""Session 38 review: POST /admin/jobs's 201 and 200 say where the job is, as HTTP has them say it."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break28_jobs import give


def test_a_queued_job_s_201_has_its_location_and_an_identical_audit_s_200_names_that_job(serve):
    """Before: neither carried a header naming the job, so a 201 Created named, by HTTP's rule, the
    resource at the request's own URL (/admin/jobs, the list), and a client following it found no job.
    Now the 201 has `Location: /admin/jobs/{id}` and the 200 (an identical audit still queued) its
    `Content-Location`; a GET of either is the job; the OpenAPI document declares both headers."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give(c, "fred")
        busy = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 1, "epochs": 200}})  # the one worker busy
        assert busy.status_code == 201, busy.text
        assert busy.headers.get("location") == f"/admin/jobs/{busy.json()['id']}", dict(busy.headers)
        deadline = time.monotonic() + 60
        while admin.get(busy.headers["location"]).json()["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            params = {"group_by": "seg", "tenant": "acme", "min_comparisons": 1}
            first, again = (admin.post("/admin/jobs", json={"kind": "audit", "params": params}) for _ in range(2))
            assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)
            assert first.headers.get("location") == again.headers.get("content-location") == f"/admin/jobs/{first.json()['id']}"
            assert "location" not in again.headers  # nothing was created
            assert admin.get(first.headers["location"]).json()["id"] == again.json()["id"] == first.json()["id"]
        finally:
            for job in admin.get("/admin/jobs", params={"limit": 100}).json()["jobs"]:
                if job["state"] in ("queued", "running"):
                    admin.post(f"/admin/jobs/{job['id']}/cancel")
        responses = c.get("/schema/openapi.json").json()["paths"]["/admin/jobs"]["post"]["responses"]
        assert "Location" in responses["201"]["headers"] and "Content-Location" in responses["200"]["headers"], responses
