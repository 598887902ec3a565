"""Session fair59: a tenant's listing of its users (`GET /v1/users`) costs work in proportion to its own tenant's
feedback pending in the log, not to every tenant's: it sorted every user with a record in the log's files, of every
tenant, at each page."""

from __future__ import annotations

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_feedback_log import feedback
from tests.service.tiny import start_service


class Counted:
    """The feedback log, each call's answer counted: the keys or entries a caller is handed (a set, list or dict: its
    length; anything else: 1)."""

    def __init__(self, log):
        self._log, self.handed = log, 0

    def __getattr__(self, name):
        found = getattr(self._log, name)
        if not callable(found):
            return found

        def counted(*args, **kwargs):
            out = found(*args, **kwargs)
            self.handed += len(out) if isinstance(out, (set, list, dict, frozenset, tuple)) else 1
            return out

        return counted


def test_a_tenants_listing_reads_its_own_pending_users_not_every_tenants(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                         monkeypatch):
    """2,000 users of 200 other tenants and 3 of acme's have feedback pending in the log: acme's page counts its 3
    users' pending rows, handed 3 keys or entries by the log, not the 2,003 of every tenant (the listing read every
    user key of the log's files and sorted them all)."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt = svc.runtime
    with server, svc.client("acme") as acme, svc.client("admin") as admin, rt.ingest.paused():
        for t in range(200):
            for u in range(10):
                rt.ingest.log.append(feedback(f"u{u}", 0, tenant=f"other{t}"))
        for user, rows in (("ann", 2), ("bob", 1), ("cat", 3)):
            rt.ingest.log.append(feedback(user, 0, tenant="acme", n=rows))
        log, counted = rt.ingest.log, Counted(rt.ingest.log)
        monkeypatch.setattr(rt.ingest, "log", counted)
        try:
            page = acme.get("/v1/users").json()
            assert page["pending"] == {"ann": 2, "bob": 1, "cat": 3}, page
            first = admin.get("/admin/tenants/acme/users", params={"limit": 1, "after": "ann"}).json()
        finally:
            monkeypatch.setattr(rt.ingest, "log", log)
        assert first["pending"] == {"bob": 1, "cat": 3}, first  # nothing of acme's stored yet: one page, after ann
        assert counted.handed <= 2 * 3 + 2, f"two pages of acme's handed {counted.handed} keys or entries of the log"
