"""A DELETE notes, for each queued or running `pal`, `em` or `audit` job, the keys (SHA-256) of the deleted user's
texts in `jobs/forget-at-exit/<job>.keys`, to take from the embedding cache what that job embeds of them once its
worker ends. A job cancelled while still queued never has a worker: before, its note waited for another job's
worker to end (or another DELETE, or a restart) before it went, so the hashes of a deleted user's texts stayed in the
data folder after the job had ended, for as long as the service ran no other job (docs/api.md: "then the file goes")."""

from __future__ import annotations

from pluralign.embed.cache import text_key
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.conftest import serve  # noqa: F401
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons


def test_a_job_cancelled_while_queued_leaves_no_note_of_a_deleted_users_texts(serve, tmp_path):  # noqa: F811
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    keys = [text_key(f"Some tea, number {i}. {MARKER}") for i in range(2)]
    notes = data / "jobs" / "forget-at-exit"
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        server.server.config.app.state.admin.runner.stop()  # no worker starts: the audit stays queued, as behind a busy one
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
