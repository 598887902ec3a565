"""A tenant's removal with replicas, followed the way an operator behind a load balancer does (trial ops53): the POST
reached one replica, the GET that polls it another."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import minilm, start_replicas, tiny_generator_dir, tiny_pal_dir  # noqa: F401

pytestmark = pytest.mark.slow  # two services on one store: ~10 s on two busy cores (`make test-tenant-removal`)


def test_a_removal_asked_of_another_replica_says_where_it_is_kept(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):  # noqa: F811
    """Before: replica 1 answered `GET /admin/tenants/globex/removal` 404 "no removal of tenant globex was begun" while
    the removal sent to replica 0 ran (or was done): untrue, and nothing said that a removal's record is kept by the
    replica it was sent to (docs/admin.md said only "send it to one replica"). Now the 404 says which replica answered,
    that the record is on the replica the removal was sent to, and how to ask it; the replica it was sent to answers
    the record as before."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200, admin_handlers=ADMIN_HANDLERS)
    with first, second, a.client("admin") as admin_a, b.client("admin") as admin_b:
        assert admin_a.post("/admin/tenants/globex/removal").status_code == 202
        assert admin_a.get("/admin/tenants/globex/removal").json()["tenant"] == "globex"
        answer = admin_b.get("/admin/tenants/globex/removal")
        assert answer.status_code == 404, answer.text
        message = answer.json()["error"]["message"]
        assert message.startswith("no removal of tenant globex was begun on this replica (replica 1 of 2): a removal's "
                                  "record is kept by the replica it was sent to"), message
        assert "at its own address" in message and "/admin/tenants/globex/users" in message, message
