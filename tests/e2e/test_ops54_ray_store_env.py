"""The service's object-store settings reach its jobs on Ray nodes (session ops54): a Ray node's processes have the
node's environment, not the service's, so what the service reads of its own environment for the store (Lance's
`AWS_ALLOW_HTTP`, `DYNAMODB_ENDPOINT`, the store's `PLURALIGN_STORE_*` settings, from variables or the PLURALIGN_CONFIG
file) must travel with the job. A local Ray started before those variables are set stands for the nodes; moto's S3 and
DynamoDB on loopback for the store (`s3+ddb://`, deploy/README.md's way for several writers).

Slow-marked (`make test-scaleout`): Ray's start (once), a service on tiny models and an audit job: ~45 s, then ~20 s."""

from __future__ import annotations

import pytest

from tests.e2e.test_ray_runner import ray_cluster, wait_for  # noqa: F401 (the module's Ray, started once: before the variables)
from tests.s3 import S3Server
from tests.service.test_ops53_store_settings import _commit_table

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("allowed_by", ["AWS_ALLOW_HTTP", "store_allow_http"])
def test_an_audit_job_on_ray_reaches_the_store_as_the_service_does(ray_cluster, tmp_path, monkeypatch, tiny_generator_dir,  # noqa: F811
                                                                  tiny_pal_dir, minilm, allowed_by):
    """The service reaches its `s3+ddb://` store at a plain-http endpoint allowed by Lance's `AWS_ALLOW_HTTP` (or by
    the setting), its commit table at `DYNAMODB_ENDPOINT`; an audit job submitted over HTTP runs on Ray and reads it.
    Before: the worker on the Ray node had neither variable (the job's environment carried the five `PLURALIGN_STORE_*`
    options only), so it refused the plain-http endpoint, or, allowed by the setting, looked for the commit table at
    AWS's DynamoDB, and the job failed while the service itself served."""
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.tiny import start_service

    with S3Server("pluralign-ops54r") as s3:
        for name in ("PLURALIGN_STORE_ALLOW_HTTP", "AWS_ALLOW_HTTP", "DYNAMODB_ENDPOINT"):
            assert name not in ray_cluster_environment(), name  # the nodes lack them, as a cluster's own would
        if allowed_by == "AWS_ALLOW_HTTP":
            monkeypatch.setenv("AWS_ALLOW_HTTP", "true")  # the service's, after Ray started
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        table = f"ops54-ray-{allowed_by.lower().replace('_', '-')}"
        _commit_table(s3.endpoint, table, make=True)
        settings = {**s3.settings(allowed_by), "store_uri": f"s3+ddb://pluralign-ops54r/{allowed_by}?ddbTableName={table}",
                    "store_allow_http": allowed_by == "store_allow_http"}
        server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                    job_runner="ray", **settings)
        with server, svc.client("acme") as tenant, svc.client("admin") as admin:
            for i in range(4):
                body = {"type": "comparison", "user": f"u{i % 2}", "prompt": f"Q{i}?", "chosen": "yes", "rejected": "no",
                        "attributes": {"segment": "a" if i % 2 else "b"}}
                assert tenant.post("/v1/feedback", json=body).status_code == 201
            r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "min_group_size": 1}})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            wait_for(lambda: admin.get(f"/admin/jobs/{job_id}").json()["state"] not in ("queued", "running"), 240, "the audit never ended")
            job = admin.get(f"/admin/jobs/{job_id}").json()
    assert job["state"] == "succeeded", (job["error"], job["log_tail"][-3:])
    assert any(line.startswith("on Ray (") for line in job["log_tail"])
    assert job["metrics"]["comparisons"] == 4


def ray_cluster_environment() -> dict[str, str]:
    """The environment of a process Ray starts on its node (a task's)."""
    import os

    import ray

    return ray.get(ray.remote(lambda: dict(os.environ)).remote(), timeout=120)
