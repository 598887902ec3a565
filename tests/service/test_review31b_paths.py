"""A job's log tail and error as the admin routes show them name no path of the server's (or a worker's)
disk outside the data folder either: a file there by its name, as /health names a model folder.

Before: session 30 rewrote only the data folder's own path in them, so an adapter job's log tail showed the
worker's interpreter install (`/srv/app/.venv/lib/python3.11/site-packages/transformers/modeling_utils.py:3303:
FutureWarning: ...`, printed by every adapter job here), a traceback its checkout, and a Ray worker's temporary
folder."""

from __future__ import annotations

import sys
import time

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service
from training.jobs.record import Job, job_encoder

JOB = "19c0ffee002-cccccccc"


def test_a_job_s_log_tail_and_error_name_no_path_outside_the_data_folder(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path / "data"
    now = time.time()
    ray_tmp = "/tmp/ray/session_2026-12-04_03-00-00_123456_7/runtime_resources/working_dir_files/_ray_pkg_0a1b"
    job = Job(
        id=JOB, kind="adapter", state="failed", created_at=now - 60, started_at=now - 59, finished_at=now - 30,
        params={"user": "alice", "tenant": "acme"},
        error="exit code 1: OSError: [Errno 28] No space left on device: '/tmp/tmpa1b2c3d4/adapter_model.safetensors'",
        log_tail=[
            f"{sys.prefix}/lib/python3.11/site-packages/transformers/modeling_utils.py:3303: FutureWarning: deprecated",
            '  File "/srv/app/training/cli.py", line 106, in main',
            f"wrote {ray_tmp}/out.json and {data}/jobs/{JOB}.result.json",
            "encoder openai:http://embeddings:80/v1/embeddings, 12 texts/s, ~/.cache/pluralign kept",
        ],
    )
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / f"{JOB}.job.json").write_bytes(job_encoder.encode(job))
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("admin") as admin:
        shown = admin.get(f"/admin/jobs/{JOB}").json()
        assert shown["log_tail"] == [
            "modeling_utils.py:3303: FutureWarning: deprecated",
            '  File "cli.py", line 106, in main',
            f"wrote out.json and jobs/{JOB}.result.json",
            "encoder openai:http://embeddings:80/v1/embeddings, 12 texts/s, ~/.cache/pluralign kept",  # a URL, a default: as they are
        ]
        assert shown["error"] == "exit code 1: OSError: [Errno 28] No space left on device: 'adapter_model.safetensors'"
        page = admin.get("/admin/dashboard").text
        for where in (sys.prefix, "/srv/app", "/tmp/"):
            assert where not in page and where not in admin.get("/admin/jobs").text, where
