"""A service whose data folder is given relative (the default `./data`) run from a working folder other than the
checkout: its jobs' workers (which run in the checkout, `RunnerConfig.cwd`) read and write that data folder.

Before: the settings kept the folder relative, so a job's artifact folder, snapshot and store reached its worker
as paths relative to the service's working folder, which the worker read from the checkout's instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.test_admin import wait_job
from tests.service.tiny import start_service


@pytest.mark.slow
def test_a_job_of_a_service_whose_data_folder_is_relative_works_from_another_working_folder(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from service.admin.controllers import ADMIN_HANDLERS

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    server, svc = start_service(Path("data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        for i in range(4):
            body = {"type": "comparison", "user": f"u{i % 2}", "prompt": f"Tea or coffee {i}?", "chosen": "Tea.", "rejected": "Coffee.",
                    "attributes": {"segment": "ab"[i % 2]}}
            assert c.post("/v1/feedback", json=body).status_code == 201
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_comparisons": 0}})
        assert r.status_code == 201, r.text
        job = wait_job(admin, r.json()["id"])
    assert job["state"] == "succeeded", (job["error"], job["log_tail"][-3:])
    assert (tmp_path / "data" / "jobs" / "artifacts" / job["id"]).is_dir()
