"""A tenant's removal and an admin job with replicas, followed the way an operator behind a load balancer does (trial
ops53): the POST reached one replica, the GET that polls it another. Each record is kept by the replica it was sent
to (its own data folder): another replica's 404 says so, as a dead letter's does (`service.admin.controllers.no_letter`)."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import minilm, start_replicas, tiny_generator_dir, tiny_pal_dir  # noqa: F401

pytestmark = pytest.mark.slow  # two services on one store: ~10 s on two busy cores (`make test-tenant-removal`)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):  # noqa: F811
    root = tmp_path_factory.mktemp("ops53-replicas")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLURALIGN_CACHE_DIR", str(root / "cache"))
        first, a, second, b = start_replicas(root, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, admin_handlers=ADMIN_HANDLERS)
        with first, second:
            yield a, b


def test_a_removal_asked_of_another_replica_says_where_it_is_kept(replicas):
    """Before: replica 1 answered `GET /admin/tenants/globex/removal` 404 "no removal of tenant globex was begun" while
    the removal sent to replica 0 ran (or was done): untrue, and nothing said that a removal's record is kept by the
    replica it was sent to (docs/admin.md said only "send it to one replica"). Now the 404 says which replica answered,
    that the record is on the replica the removal was sent to, and how to ask it; the replica it was sent to answers
    the record as before."""
    a, b = replicas
    with a.client("admin") as admin_a, b.client("admin") as admin_b:
        assert admin_a.post("/admin/tenants/globex/removal").status_code == 202
        assert admin_a.get("/admin/tenants/globex/removal").json()["tenant"] == "globex"
        answer = admin_b.get("/admin/tenants/globex/removal")
        assert answer.status_code == 404, answer.text
        message = answer.json()["error"]["message"]
        assert message.startswith("no removal of tenant globex was begun on this replica (replica 1 of 2): a removal's "
                                  "record is kept by the replica it was sent to"), message
        assert "at its own address" in message and "/admin/tenants/globex/users" in message, message


def test_a_job_asked_of_another_replica_says_where_it_is_kept(replicas):
    """Before: a job queued through replica 0 (`POST /admin/jobs`, or an audit's 202) was `404 no job <id>` on replica 1
    for its state, its report and its cancel, as for an id no replica has. Now each 404 says which replica answered and
    that a job's record is kept by the replica that queued it."""
    a, b = replicas
    with a.client("admin") as admin_a, b.client("admin") as admin_b:
        queued = admin_a.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment"}})
        assert queued.status_code in (200, 201, 202), queued.text
        job_id = queued.json()["id"]
        assert admin_a.get(f"/admin/jobs/{job_id}").json()["id"] == job_id
        for answer in (admin_b.get(f"/admin/jobs/{job_id}"), admin_b.get(f"/admin/jobs/{job_id}/report"),
                       admin_b.post(f"/admin/jobs/{job_id}/cancel")):
            assert answer.status_code == 404, answer.text
            message = answer.json()["error"]["message"]
            assert message.startswith(f"no job '{job_id}' on this replica (replica 1 of 2): a job's record is kept by the "
                                      "replica that queued it"), message
