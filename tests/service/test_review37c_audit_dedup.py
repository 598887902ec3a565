"""Session 37 review: break37's "an audit identical to a queued one is that job", attacked over HTTP.
Identical audits sent at the same instant from many connections, the same params spelled in another
key order or with their defaults written out, another tenant's audit with otherwise the same params,
and an identical audit once the first one ran."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.test_break28_jobs import give

PARAMS = {"group_by": "seg", "tenant": "acme", "min_comparisons": 1}


def test_identical_audits_at_once_are_one_job_and_another_tenants_or_a_later_one_are_their_own(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        give(c, "fred")
        busy = admin.post("/admin/jobs", json={"kind": "pal", "params": {"k": 1, "epochs": 200}})  # the one worker busy: audits wait
        assert busy.status_code == 201, busy.text
        first = None
        statuses: list[int] = []
        try:
            def post(params: dict) -> str:
                with svc.client("admin") as own:  # a connection of its own: the requests arrive together
                    answer = own.post("/admin/jobs", json={"kind": "audit", "params": params})
                    assert answer.status_code in (200, 201), answer.text  # 200: an identical audit still queued
                    statuses.append(answer.status_code)
                    return answer.json()["id"]

            spellings = [PARAMS, dict(reversed(PARAMS.items())), {**PARAMS, "min_group_size": 1, "personalized": "logistic"}]
            with ThreadPoolExecutor(8) as pool:
                ids = set(pool.map(post, [spellings[i % len(spellings)] for i in range(16)]))
            assert len(ids) == 1, ids  # one job, however many arrived at once and however spelled
            assert sorted(statuses) == [200] * 15 + [201], statuses  # created once
            (first,) = ids
            other_tenant = post({**PARAMS, "tenant": "globex"})
            every_tenant = post({k: v for k, v in PARAMS.items() if k != "tenant"})
            assert len({first, other_tenant, every_tenant}) == 3  # never another tenant's job
            assert post({**PARAMS, "since": 1000}) == post({**PARAMS, "since": 1000.0}) not in (first, other_tenant)
            audits = admin.get("/admin/jobs", params={"kind": "audit", "limit": 100}).json()["jobs"]
            assert len(audits) == 4, audits
        finally:
            for job in admin.get("/admin/jobs", params={"limit": 100}).json()["jobs"]:
                if job["state"] in ("queued", "running") and job["id"] != first:
                    admin.post(f"/admin/jobs/{job['id']}/cancel")
        ended = wait_job(admin, first)
        assert ended["state"] in ("succeeded", "failed"), ended
        again = post(PARAMS)  # once it ran, the same audit is a job of its own (it reads the table again)
        assert again != first
        admin.post(f"/admin/jobs/{again}/cancel")
