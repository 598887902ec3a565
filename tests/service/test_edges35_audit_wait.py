"""`GET /admin/audits/fairness?wait=S` answers within S seconds even when its first step, moving the
acknowledged feedback into the table, cannot: the feedback worker is in the middle of a batch (here
held by `Ingestor.paused`, as a long batch holds it). Before, that step waited for the worker however
long it took, whatever the wait (the request hung until the client gave up). Now: a 503 naming the
backlog, with Retry-After, and no job queued; once the rows are moved the same request queues the audit."""

from __future__ import annotations

import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import give_comparisons


def test_the_wait_bounds_moving_the_feedback_before_the_audit(serve):
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        with rt.ingest.paused():  # the worker's batch, as a long one holds the feedback log's worker lock
            give_comparisons(acme, "ann", "tea", n=2)  # acknowledged, still in the log
            # answered while the worker still holds its lock: the request did not wait for the move (before, it hung
            # until the client's read gave up: a ReadTimeout here)
            r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "wait": 1}, timeout=20)
            still_pending = rt.ingest.pending_rows()
        assert r.status_code == 503 and still_pending == 2, (r.status_code, still_pending, r.text)
        error = r.json()["error"]
        assert error["code"] == "feedback_backlog" and error["message"].startswith("2 acknowledged feedback rows still being moved") and "`wait` of 1 s" in error["message"], error
        assert r.headers["Retry-After"].isdigit()
        assert admin.get("/admin/jobs", params={"kind": "audit"}).json()["jobs"] == []  # nothing was queued
        deadline = time.monotonic() + 60
        while rt.ingest.pending_rows() and time.monotonic() < deadline:  # the worker moves them once free
            time.sleep(0.05)
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "wait": 0})
        assert r.status_code == 202, r.text
        admin.post(f"/admin/jobs/{r.json()['job']['id']}/cancel")


def test_a_worker_busy_with_nothing_of_the_tenants_left_is_no_backlog(serve):
    """The worker holding its lock (a batch finishing, or another tenant's) while nothing acknowledged is
    waiting: the audit is queued at once, even with `wait` 0. Before: a 503 saying "0 acknowledged feedback
    rows still being moved" (the lock not taken within the wait was read as a backlog; the suite saw it
    when the worker was still settling after moving the first test's rows)."""
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rt = svc.runtime
    with server, svc.client("admin") as admin:
        with rt.ingest.paused():
            assert rt.ingest.pending_rows() == 0
            r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "wait": 0}, timeout=20)
        assert r.status_code == 202, r.text
        admin.post(f"/admin/jobs/{r.json()['job']['id']}/cancel")
