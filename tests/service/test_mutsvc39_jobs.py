"""Admin jobs over real HTTP: what survived mutation testing (session 39)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_admin import wait_job
from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("jobs-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                     admin_handlers=ADMIN_HANDLERS, job_workers=1)
    with server:
        yield service


def test_a_job_cancelled_while_queued_is_cancelled_at_once(svc):
    """With one worker, a job sent behind another is still queued: its cancel answers it `cancelled` (with
    when it finished), not `failed`, and it never runs; the first, cancelled while it runs, ends cancelled too."""
    with svc.client("admin") as admin:
        first, second = (admin.post("/admin/jobs", json={"kind": "em", "params": {"protocol": "persona", "groups": 2, "max_iter": n}})
                         for n in (1000, 999))
        assert first.status_code == second.status_code == 201, (first.text, second.text)
        r = admin.post(f"/admin/jobs/{second.json()['id']}/cancel")
        assert r.status_code == 200, r.text
        cancelled = r.json()
        assert cancelled["state"] == "cancelled" and cancelled["cancel_requested"] is True and cancelled["finished_at"] is not None
        assert admin.post(f"/admin/jobs/{first.json()['id']}/cancel").status_code == 200
        assert wait_job(admin, first.json()["id"])["state"] == "cancelled"
        again = admin.get(f"/admin/jobs/{second.json()['id']}").json()
        assert again["state"] == "cancelled" and again["started_at"] is None
