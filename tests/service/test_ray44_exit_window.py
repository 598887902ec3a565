"""ray44: the runner told `on_exit` (`Admin.forget_at_exit`) that a job's worker was gone before it wrote the job's final
record, and never after. A DELETE in between saw the job still running (`JobRunner.active`), noted the keys of the
deleted user's texts for it (`jobs/forget-at-exit/<job>.keys`), and its own pass left the note (the job was running),
so the hashes stayed in the data folder after the job had ended, until another job's worker ended or the next start.
Now `on_exit` is told again once the final record is written."""

from __future__ import annotations

import threading
import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.e2e.job_kinds import work
from tests.service.conftest import serve  # noqa: F401
from tests.service.test_admin import wait_job
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from training.jobs.kinds import JobKind


def test_a_delete_noted_between_a_jobs_exit_and_its_final_record_goes_once_it_ended(serve):  # noqa: F811
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    notes = data / "jobs" / "forget-at-exit"
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        runner = server.server.config.app.state.admin.runner
        runner.stop()
        # an audit's worker of a few lines (tests.e2e.job_kinds): the window is the runner's, whatever the worker did
        runner.kinds["audit"] = JobKind("audit", work)
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        forget_at_exit, deleted, noted = runner.on_exit, [], []

        def delete_in_the_window(job_id: str) -> None:
            forget_at_exit(job_id)
            job = runner.get(job_id)
            if deleted or job is None or job.state != "running":
                return
            # the worker is gone, the record still says running: a DELETE now, answered before the record is written
            thread = threading.Thread(target=lambda: deleted.append(acme.delete(f"/v1/users/{GONE}")))
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
        assert list(notes.iterdir()) == []  # before: the note of the deleted user's texts stayed
