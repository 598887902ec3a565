"""The automatic adapter trigger at a tenant's job quota: a warning line, no traceback, and the user
is checked again at their next comparison (not `adapter_every` comparisons later)."""

from __future__ import annotations

import logging
import time

from service.admin.controllers import ADMIN_HANDLERS

COMPARISON = {"type": "comparison", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def _adapter_jobs(admin, user: str) -> list[dict]:
    jobs = admin.get("/admin/jobs", params={"kind": "adapter"}).json()["jobs"]
    return [j for j in jobs if j["params"].get("user") == user]


def _until(check, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("not within the time")


class _Records(logging.Handler):
    """The records a logger writes meanwhile (caplog's handler is gone once the app configures logging)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_trigger_at_the_quota_warns_and_checks_the_user_again_at_their_next_comparison(serve):
    _, server, service = serve(admin_handlers=ADMIN_HANDLERS, adapter_every=2, tenant_queued_jobs=1, job_workers=1)
    seen = _Records()
    with server, service.client("acme") as c, service.client("admin") as admin:
        logging.getLogger("pluralign.service").addHandler(seen)  # after the app's logging set-up
        try:
            assert c.post("/v1/feedback", json={**COMPARISON, "user": "qa"}).status_code == 201
            # the tenant's one adapter job (long: it stays queued or running until cancelled)
            first = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "qa", "steps": 2000}})
            assert first.status_code == 201, first.text
            for _ in range(2):  # qb's second strict comparison makes them due: the quota is full
                assert c.post("/v1/feedback", json={**COMPARISON, "user": "qb"}).status_code == 201
            waits = _until(lambda: [r for r in seen.records if "adapter trigger waits" in r.getMessage()])
            assert waits[0].levelno == logging.WARNING and waits[0].exc_info is None
            assert "qb" not in waits[0].getMessage()  # no user id in logs
            assert not [r for r in seen.records if r.levelno >= logging.ERROR and "adapter trigger" in r.getMessage()]
            assert _adapter_jobs(admin, "qb") == []

            assert admin.post(f"/admin/jobs/{first.json()['id']}/cancel").status_code in (200, 202)
            _until(lambda: all(j["state"] not in ("queued", "running") for j in _adapter_jobs(admin, "qa")))
            # one more comparison, not adapter_every (2) more: qb's job is queued now
            assert c.post("/v1/feedback", json={**COMPARISON, "user": "qb"}).status_code == 201
            queued = _until(lambda: _adapter_jobs(admin, "qb"))
            assert queued[0]["params"]["comparisons"] == 3
            admin.post(f"/admin/jobs/{queued[0]['id']}/cancel")
        finally:
            logging.getLogger("pluralign.service").removeHandler(seen)
