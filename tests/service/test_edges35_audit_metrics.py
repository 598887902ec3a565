"""An audit job's record carries the report's figures as `metrics` (worst group's accuracy, gap, ...).
Session 34 took a group whose users were all deleted out of the report (result.json, the output,
members.json) and so out of its worst group and gaps, but not out of the job's record: GET
/admin/jobs/{id} still gave the figures drawn with the deleted user's group."""

from __future__ import annotations

import pytest

from pluralign.fairness.report import decode_report
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE, MARKER, run_job


def give(client, user: str, segment: str, consistent: bool, n: int = 8) -> None:
    for i in range(n):
        tea_first = consistent or i % 2 == 0  # the inconsistent user's choices flip: their group's accuracy is the worst
        chosen, rejected = (f"Tea {i}.", f"Coffee {i}.") if tea_first else (f"Coffee {i}.", f"Tea {i}.")
        r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Drink {i}?", "chosen": chosen,
                                               "rejected": rejected, "attributes": {"segment": segment}})
        assert r.status_code == 201, r.text


def report_figures(data, job_id: str) -> dict[str, float]:
    """The numbers the runner takes from a result as a job's metrics, from the report as stored now."""
    import msgspec

    report = msgspec.to_builtins(decode_report((data / "jobs" / f"{job_id}.result.json").read_bytes()))
    return {k: float(v) for k, v in report.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@pytest.mark.slow  # a real audit job's worker: 15-20 s
def test_a_group_only_a_deleted_user_was_in_leaves_the_job_record_s_metrics_too(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("admin") as admin:
        give(acme, GONE, MARKER, consistent=False)
        give(acme, "ann", "s1", consistent=True)
        give(acme, "bob", "s2", consistent=True)
        job = run_job(admin, "audit", {"group_by": "segment", "min_comparisons": 0})
        before = admin.get(f"/admin/jobs/{job['id']}").json()["metrics"]
        assert before == report_figures(data, job["id"]), before
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        after = admin.get(f"/admin/jobs/{job['id']}").json()["metrics"]
        assert after == report_figures(data, job["id"]), (before, after)
        assert after != before  # their group was the worst: the worst group's accuracy and the gaps changed
