"""A user's DELETE and the fairness audits made before it (data session 34): a report's group is named
by an attribute's value the users sent, and its figures are drawn from its users alone."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.files import files_holding
from tests.service.test_break20_delete import GONE, MARKER, run_job


def give(client, user: str, segment: str, n: int = 8) -> None:
    for i in range(n):
        r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Drink {i}?", "chosen": f"Tea {i}.",
                                               "rejected": f"Coffee {i}.", "attributes": {"segment": segment}})
        assert r.status_code == 201, r.text


@pytest.mark.slow  # a real audit job's worker: 17 s
def test_an_audit_group_only_a_deleted_user_was_in_leaves_the_report(serve):
    """Before: the audit job's result.json and output kept the group named by the deleted user's own
    `segment` value (`Quokka-marmalade-41x9`, 1 user: their accuracy), and the dashboard showed it. Since session 49 a
    group of one user is suppressed by the audit itself (its figures would be that user's): the report never names it."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give(acme, GONE, MARKER)
        give(acme, "ann", "s1")
        give(acme, "bob", "s1")
        give(acme, "cal", "s2")
        give(acme, "cy", "s2")
        job = run_job(admin, "audit", {"group_by": "segment", "min_comparisons": 0})
        assert files_holding(data / "jobs", MARKER) == []  # their group, of one user, suppressed (named until session 49)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert files_holding(data, MARKER, GONE) == []
        assert MARKER not in admin.get("/admin/dashboard").text
        stored = (data / "jobs" / f"{job['id']}.result.json").read_text()
        assert '"s1"' in stored and '"s2"' in stored, stored  # the other users' groups stay
        # cal's DELETE withholds s2 (cal's comparisons are in its figures); s1 keeps ann and bob
        assert acme.delete("/v1/users/cal").status_code == 200
        stored = (data / "jobs" / f"{job['id']}.result.json").read_text()
        assert '"s1"' in stored and '"s2"' not in stored, stored
