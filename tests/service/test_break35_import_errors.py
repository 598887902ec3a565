"""Break session 35: what session 34's import route and backlog reads still let through."""

from __future__ import annotations

import contextlib
import json
import time

from service.users.services import READ_INLINE_ROWS, READ_RETRY_AFTER
from tests.service.tiny import field_named


def backlog() -> tuple[int, str]:
    """(rows, body): an import of READ_INLINE_ROWS + 100 rows, past what a read moves inside its request."""
    rows = READ_INLINE_ROWS + 100
    return rows, "\n".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."}) for i in range(rows))


@contextlib.contextmanager
def backlog_left_in_the_log(svc):
    """The ingest worker moves nothing meanwhile (the backlog waits in the log, as behind a busy worker), nor
    after: it is stopped before the pause ends. Let go, it embedded the whole backlog at the server's shutdown
    (~10 s a test on a quiet machine), which no test here reads."""
    with svc.runtime.ingest.paused():
        try:
            yield
        finally:
            svc.runtime.ingest.stop()


def test_an_import_rows_long_unknown_field_is_cut_in_the_error(serve):
    """Before: a 5,000-character key made a 5.3 kB error body, its message
    "`line 2.yyy...`: Object contains unknown field `yyy` (all 5,000)"."""
    _, server, svc = serve()
    key = "y" * 5000
    rows = [{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}, {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", key: 1}]
    with server, svc.client("acme") as c:
        r = c.post("/v1/users/ann/import", content="\n".join(map(json.dumps, rows)))
        assert r.status_code == 400 and len(r.content) < 1000, (r.status_code, len(r.content))
        message = r.json()["error"]["message"]
        assert message.startswith("`line 2.yyyy") and message.endswith("`: unknown field (README, 'Preference files', names "
                                                                        "the fields a row takes)"), message
        assert field_named(r).startswith("line 2.yyy")


def test_a_head_of_the_export_of_a_user_with_an_imports_backlog_answers_at_once(serve):
    """HEAD .../export, as GET .../export, answers 503 with Retry-After while the user's large import is
    still being stored, and 200 for a user with a few rows pending. Before: the HEAD embedded and moved
    the whole backlog inside the request (`anything_held` flushed it unbounded): here 600 rows took ~15 s
    for a 200 (a 3,000-row import: past a 60 s client timeout), while the GET answered 503 at once."""
    _, server, svc = serve()
    rows, body = backlog()
    with server, svc.client("acme") as c, backlog_left_in_the_log(svc):  # the worker is busy elsewhere: the rows wait in the log
        assert c.post("/v1/users/big/import", content=body).status_code == 201
        assert c.post("/v1/users/small/import", content=body.split("\n", 1)[0]).status_code == 201
        for method in ("GET", "HEAD"):
            started = time.monotonic()
            r = c.request(method, "/v1/users/big/export")
            took = time.monotonic() - started
            assert (r.status_code, r.headers.get("retry-after")) == (503, str(READ_RETRY_AFTER)), (method, r.status_code, took)
            assert took < 5, (method, took)
        assert c.head("/v1/users/small/export").status_code == 200
        assert c.head("/v1/users/nobody/export").status_code == 404


def test_an_adapter_job_for_a_user_with_an_imports_backlog_is_a_503_at_once(serve):
    """POST /admin/jobs (kind adapter) snapshots the user's comparisons under their lock. Before: it first
    moved every pending row of theirs inside the request, holding that lock (their DELETE, chats and
    refits waited): a 3,000-row import's backlog kept the admin call past a 15 s client timeout, and
    /admin/dashboard behind it. Now it answers 503 with Retry-After as the user's reads do, queuing nothing."""
    from service.admin.controllers import ADMIN_HANDLERS

    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rows, body = backlog()
    with server, svc.client("acme") as c, svc.client("admin") as admin, backlog_left_in_the_log(svc):
        assert c.post("/v1/users/big/import", content=body).status_code == 201
        started = time.monotonic()
        r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"user": "big", "tenant": "acme"}})
        took = time.monotonic() - started
        assert (r.status_code, r.headers.get("retry-after")) == (503, str(READ_RETRY_AFTER)), (r.status_code, r.text[:300], took)
        assert f"{rows} rows" in r.json()["error"]["message"] and took < 5, (r.text, took)
        assert admin.get("/admin/jobs").json()["jobs"] == []


def test_the_dashboard_beside_an_imports_backlog_answers_at_once_and_says_so(serve):
    """/admin/dashboard moved the whole tenant's feedback log into the table inside the request first. Before:
    a large import's backlog kept the page minutes (past a 15 s client timeout on a served data folder; here,
    600 rows, over 3 s). Now it moves a few rows as before, and past READ_INLINE_ROWS describes what is stored,
    saying how many rows are still being stored."""
    from service.admin.controllers import ADMIN_HANDLERS

    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    rows, body = backlog()
    with server, svc.client("acme") as c, svc.client("admin") as admin, backlog_left_in_the_log(svc):
        assert c.post("/v1/users/big/import", content=body).status_code == 201
        started = time.monotonic()
        page = admin.get("/admin/dashboard", params={"tenant": "acme"})
        took = time.monotonic() - started
        assert page.status_code == 200 and took < 10, (page.status_code, took)
        assert f"more than {READ_INLINE_ROWS} comparisons are still being stored" in page.text
        assert svc.runtime.ingest.pending_rows("acme") == rows  # nothing moved inside the request
