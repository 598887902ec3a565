"""Review fair59: a tenant's users page (`GET /v1/users`) reads its `pending` counts without a pass over the tenant's
pending records, under the feedback log's lock that every tenant's feedback waits on. fair59 made it a pass over the
tenant's own records (`FeedbackLog.tenant_pending`): 20,000 records of one user held that lock 18.8 ms a page (load 7),
so a tenant with a deep backlog listing its users in a loop held back every tenant's feedback. Work counted as the
records read (`Entry.key`), not timed."""

from __future__ import annotations

from pluralign.store.feedback_log import Entry
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_feedback_log import feedback
from tests.service.tiny import start_service


def test_a_users_page_reads_no_record_of_its_tenants_backlog(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """acme's ann has 1,500 records pending and bob one of 3 rows; a page counts them (1,500 and 3) reading none of the
    records (before: each of acme's 1,501 was read). Once bob's rows are moved into the store, his count goes."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        with rt.ingest.paused():
            for i in range(1500):
                rt.ingest.log.append(feedback("ann", i, tenant="acme"))
            rt.ingest.log.append(feedback("bob", 0, tenant="acme", n=3))
            reads = []
            key = Entry.key
            monkeypatch.setattr(Entry, "key", property(lambda entry: reads.append(1) or key.fget(entry)))
            page = acme.get("/v1/users").json()
            monkeypatch.setattr(Entry, "key", key)
            assert page["pending"] == {"ann": 1500, "bob": 3}, page
            assert len(reads) <= 4, f"a page read {len(reads)} of acme's pending records"
        rt.ingest.flush_user("acme", "bob")
        assert "bob" not in acme.get("/v1/users").json()["pending"]
