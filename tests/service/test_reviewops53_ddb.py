"""The service on an `s3+ddb://` store (Lance's DynamoDB commit store, deploy/README.md's way for several writers on
S3; moto's S3 and DynamoDB on loopback), its commit table deleted while it serves, then made again: what ops53 checked
by hand only (session reviewops53)."""

from __future__ import annotations

import pytest

from tests.s3 import S3Server
from tests.service.test_break27_storage import comparison
from tests.service.test_delete_journal import wait_until
from tests.service.test_ops53_store_settings import _commit_table

pytestmark = pytest.mark.slow  # moto, a service started on it and the AWS SDK's retries (`make test-object-store`)


def test_a_commit_table_deleted_under_the_service_is_a_503_feedback_is_kept_and_moved_in_once_it_is_back(serve, tmp_path, monkeypatch):
    """ops53's claim, checked through the real app over HTTP: feedback is acknowledged while the table is gone, `/health`
    is degraded naming `commit-store`, a profile read is the 503 `storage_unavailable`, and once the table is made again
    (empty) the feedback is moved in without a restart, each row once. No defect found (~10 s + 5 s setup)."""
    table = f"commits-{tmp_path.name}"[:60]
    with S3Server("pluralign-test") as s3:
        monkeypatch.setenv("DYNAMODB_ENDPOINT", s3.endpoint)
        _commit_table(s3.endpoint, table, make=True)
        settings = {**s3.settings(tmp_path.name), "store_uri": f"s3+ddb://pluralign-test/{tmp_path.name}?ddbTableName={table}"}
        _, server, svc = serve(**settings, store_retries=0)
        with server, svc.client("acme") as acme:
            assert acme.post("/v1/feedback", json=comparison("ann", 0)).status_code == 201
            assert wait_until(lambda: acme.get("/health").json()["feedback_pending"] == 0, timeout=30)
            _commit_table(s3.endpoint, table, make=False)
            for i in (1, 2):
                assert acme.post("/v1/feedback", json=comparison("ann", i)).status_code == 201  # the local log keeps it
            assert wait_until(lambda: any(p["problem"] == "commit-store" for p in acme.get("/health").json()["storage"]), timeout=60)
            health = acme.get("/health").json()
            assert health["status"] == "degraded" and health["feedback_pending"] == 2, health
            read = acme.get("/v1/users/ann/preferences")
            assert read.status_code == 503 and read.json()["error"]["code"] == "storage_unavailable", read.text
            _commit_table(s3.endpoint, table, make=True)
            assert wait_until(lambda: acme.get("/health").json()["feedback_pending"] == 0, timeout=60), acme.get("/health").json()
            rows = acme.get("/v1/users/ann/preferences").json()["data"]
            assert sorted(p["chosen"] for p in rows) == ["Tea 0.", "Tea 1.", "Tea 2."], rows  # each once
            assert wait_until(lambda: acme.get("/health").json()["status"] == "ok", timeout=30), acme.get("/health").json()
