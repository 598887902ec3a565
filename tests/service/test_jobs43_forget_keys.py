"""A DELETE notes, for each queued or running `pal`, `em` or `audit` job, the keys (SHA-256) of the deleted user's
texts in `jobs/forget-at-exit/<job>.keys`, to take from the embedding cache what that job embeds of them once its
worker ends. A job cancelled while still queued never has a worker: before, its note waited for another job's
worker to end (or another DELETE, or a restart) before it went, so the hashes of a deleted user's texts stayed in the
data folder after the job had ended, for as long as the service ran no other job (docs/api.md: "then the file goes").
ray44: the runner told `on_exit` (`Admin.forget_at_exit`) that a job's worker was gone before it wrote the job's final
record, and never after: a DELETE in between saw the job still running (`JobRunner.active`), noted the keys of the
deleted user's texts for it, and its own pass left the note, which stayed after the job had ended. Both are checked on
one app start (reviewry44: the exit window's check had an app start of its own, ~16 s under load)."""

from __future__ import annotations

import threading
import time

from pluralign.embed.cache import text_key
from service.admin.controllers import ADMIN_HANDLERS
from tests.e2e.job_kinds import work
from tests.service.conftest import serve  # noqa: F401
from tests.service.test_admin import wait_job
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from training.jobs.kinds import JobKind


def test_a_job_cancelled_while_queued_leaves_no_note_of_a_deleted_users_texts(serve, tmp_path):  # noqa: F811
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    keys = [text_key(f"Some tea, number {i}. {MARKER}") for i in range(2)]
    notes = data / "jobs" / "forget-at-exit"
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        runner = server.server.config.app.state.admin.runner
        runner.stop()  # no worker starts: the audit stays queued, as behind a busy one
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        give_comparisons(acme, "ann", "coffee", n=2)
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_group_size": 1}})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert all(k in (notes / f"{job_id}.keys").read_bytes() for k in keys)  # the job may still read them: noted
        cancelled = admin.post(f"/admin/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        assert list(notes.iterdir()) == []  # before: the note stayed, holding their texts' hashes
        assert [p for p in data.rglob("*") if p.is_file() and any(k in p.read_bytes() for k in keys)] == []
        delete_in_the_exit_window(runner, acme, admin, notes, user="ann")


def delete_in_the_exit_window(runner, acme, admin, notes, user: str) -> None:
    """`user`'s DELETE comes between an audit's worker exit and its final record (`on_exit` told, the record still
    running): noted for the job, and the note goes once the record says it ended (before: it stayed)."""
    runner.kinds["audit"] = JobKind("audit", work)  # a worker of a few lines: the window is the runner's
    forget_at_exit, deleted, noted = runner.on_exit, [], []

    def delete_in_the_window(job_id: str) -> None:
        forget_at_exit(job_id)
        job = runner.get(job_id)
        if deleted or job is None or job.state != "running":
            return
        # the worker is gone, the record still says running: a DELETE now, answered before the record is written
        thread = threading.Thread(target=lambda: deleted.append(acme.delete(f"/v1/users/{user}")))
        thread.start()
        thread.join(timeout=60)
        noted.append((notes / f"{job_id}.keys").is_file())

    runner.on_exit = delete_in_the_window
    r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_group_size": 1}})
    assert r.status_code == 201, r.text
    runner.start()
    ended = wait_job(admin, r.json()["id"], timeout=60)
    assert ended["state"] in ("succeeded", "failed"), ended
    assert len(deleted) == 1 and deleted[0].status_code == 200, deleted
    assert noted == [True]  # the DELETE saw it running: noted for it
    deadline = time.monotonic() + 10  # told again just after the record: a poll's wait at most
    while list(notes.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(notes.iterdir()) == []  # before ray44: the note of the deleted user's texts stayed
