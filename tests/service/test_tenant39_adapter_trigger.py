"""Session 39: the automatic adapter trigger logged a traceback for every job it queued.

`Admin.submit` returns (job, created) since session 37; the trigger (`AdapterTrigger`, built with it as its
`submit`) handed that tuple back as the job, and `Admin.on_feedback` logged `job.id`: an AttributeError,
caught and logged as "adapter trigger failed ..." with a traceback, for every adapter job queued
automatically (seen in the logs of test_stall34_import and test_tenant39_ingest_turns). The job was queued;
its log line, which operators follow jobs by, was lost. Now the trigger gets the job itself."""

from __future__ import annotations

import logging

from service.admin.controllers import ADMIN_HANDLERS


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_an_automatically_queued_adapter_job_is_logged_as_queued_not_as_a_failure(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS, adapter_every=2)
    logger, seen = logging.getLogger("pluralign.service"), Lines()  # the app's logging set-up keeps it from the root's
    logger.addHandler(seen)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        for topic in ("tea", "rain"):
            r = acme.post("/v1/feedback", json={"type": "comparison", "user": "ada", "prompt": f"Tips on {topic}?",
                                                "chosen": "Short.", "rejected": "Long and winding."})
            assert r.status_code == 201, r.text
        svc.runtime.wait_for_background()
        jobs = admin.get("/admin/jobs", params={"kind": "adapter"}).json()["jobs"]
        assert len(jobs) == 1 and jobs[0]["params"]["user"] == "ada", jobs
        admin.post(f"/admin/jobs/{jobs[0]['id']}/cancel")
    logger.removeHandler(seen)
    assert not [line for line in seen.lines if "adapter trigger failed" in line], seen.lines
    assert any(f"queued adapter job {jobs[0]['id']}" in line for line in seen.lines), seen.lines
