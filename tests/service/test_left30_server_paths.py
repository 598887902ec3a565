"""The HTTP API never shows where the server keeps its files: a path in the data folder is shown
relative to it (`jobs/<id>.result.json`), one elsewhere by its name (as /health names a model folder).

Before: the admin job routes (list, one job, create, cancel, the audit's 202) and the dashboard showed a
job's `result_path`, `artifact` and the server-set `params` (`data`, `store`, `base`) as absolute paths
of the server's disk, and its `log_tail` and `promotion_note` named them too."""

from __future__ import annotations

import time

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service
from training.jobs.record import Job, job_encoder

ADAPTER, AUDIT = "19c0ffee000-aaaaaaaa", "19c0ffee001-bbbbbbbb"


def finished_jobs(data) -> list[Job]:
    """What an earlier start left in the data folder: a succeeded adapter job not put into service, an audit."""
    now = time.time()
    jobs = data / "jobs"
    adapter = Job(
        id=ADAPTER, kind="adapter", state="succeeded", progress=1.0, created_at=now - 60, started_at=now - 59, finished_at=now - 30,
        params={"user": "alice", "tenant": "acme", "base": "/srv/models/tiny-llama", "data": f"{jobs}/data/acme/alice-1.jsonl"},
        result_path=f"{jobs}/{ADAPTER}.result.json", artifact=f"{jobs}/artifacts/{ADAPTER}/acme/alice", promoted=False,
        promotion_note=f"kept, not served: putting it into service failed: File too large: {data}/adapters/acme/alice/x.safetensors",
        log_tail=[f"$ -m training.cli train adapter --data={jobs}/data/acme/alice-1.jsonl --registry={jobs}/artifacts/{ADAPTER}"],
    )
    audit = Job(id=AUDIT, kind="audit", state="failed", created_at=now - 20, finished_at=now - 10,
                params={"group_by": "segment", "store": f"{data}/lancedb"}, error=f"exit code 2: cannot read {data}/lancedb/x.lance")
    jobs.mkdir(parents=True)
    for job in (adapter, audit):
        (jobs / f"{job.id}.job.json").write_bytes(job_encoder.encode(job))
    return [adapter, audit]


@pytest.fixture
def svc(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path / "data"
    finished_jobs(data)
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    service.data_dir = data
    with server:
        yield service


def test_job_routes_show_paths_relative_to_the_data_folder(svc, tiny_generator_dir):
    data = str(svc.data_dir)
    with svc.client("admin") as admin:
        listed = admin.get("/admin/jobs")
        assert listed.status_code == 200 and data not in listed.text, listed.text
        jobs = {j["id"]: j for j in listed.json()["jobs"]}
        adapter = admin.get(f"/admin/jobs/{ADAPTER}").json()
        assert adapter == jobs[ADAPTER]
        assert adapter["result_path"] == f"jobs/{ADAPTER}.result.json"  # the field kept, where it is in the data folder
        assert adapter["artifact"] == f"jobs/artifacts/{ADAPTER}/acme/alice"
        assert adapter["params"] == {"user": "alice", "tenant": "acme", "base": "tiny-llama", "data": "jobs/data/acme/alice-1.jsonl"}
        assert adapter["log_tail"] == [f"$ -m training.cli train adapter --data=jobs/data/acme/alice-1.jsonl --registry=jobs/artifacts/{ADAPTER}"]
        assert adapter["promotion_note"].endswith("File too large: adapters/acme/alice/x.safetensors")
        assert jobs[AUDIT]["params"]["store"] == "lancedb" and jobs[AUDIT]["error"] == "exit code 2: cannot read lancedb/x.lance"
        # a job queued now: its record (the service's own paths) as created, as cancelled, and as the audit's 202
        created = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment"}})
        assert created.status_code == 201 and created.json()["params"]["store"] == "lancedb", created.text
        pending = admin.get("/admin/audits/fairness", params={"group_by": "segment", "wait": 0})
        assert pending.status_code == 202 and pending.json()["job"]["params"]["store"] == "lancedb", pending.text
        for job in (created.json(), pending.json()["job"]):
            cancelled = admin.post(f"/admin/jobs/{job['id']}/cancel")
            assert cancelled.status_code == 200 and data not in cancelled.text, cancelled.text
        page = admin.get("/admin/dashboard")
        assert page.status_code == 200 and data not in page.text and "data=jobs/data/acme/alice-1.jsonl" in page.text
        assert str(tiny_generator_dir) not in listed.text + page.text
    # the other routes that could name a file: health, a user's export and profile, errors
    with svc.client("acme") as c:
        assert c.post("/v1/feedback", json={"type": "comparison", "user": "alice", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).status_code == 201
        for path in ("/health", "/v1/users/alice", "/v1/users/alice/export", "/v1/users/nobody", "/admin/jobs"):
            r = c.get(path)
            assert data not in r.text and str(tiny_generator_dir) not in r.text, (path, r.text)
    # the record on disk keeps the paths the server uses
    on_disk = msgspec.json.decode((svc.data_dir / "jobs" / f"{ADAPTER}.job.json").read_bytes())
    assert on_disk["result_path"] == f"{data}/jobs/{ADAPTER}.result.json"
