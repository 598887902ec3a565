"""left57: bad input over HTTP, each a 400 naming its field: an audit's `since` written as a date in digits
(20260101), which was read as Unix seconds (1970-08-23) and audited every comparison."""

from __future__ import annotations

import pytest

from tests.service.tiny import fixed_answers, fixed_service

FixedGenerator = fixed_answers(["Tea."])


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    from service.admin.controllers import ADMIN_HANDLERS

    with fixed_service(tmp_path_factory.mktemp("left57"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator,
                       admin_handlers=ADMIN_HANDLERS) as service:
        yield service


def jobs(admin) -> int:
    r = admin.get("/admin/jobs", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["jobs"])


@pytest.mark.parametrize("since, shown, seconds", [
    (20260101, "the date 2026-01-01 written YYYYMMDD", "1767225600.0"),  # `date +%Y%m%d`: 1970-08-23 as seconds
    (202601011230, "the date 2026-01-01 12:30:00 written YYYYMMDDhhmm", "1767270600.0"),  # the year 8390 as seconds
    (20260101123000, "the date 2026-01-01 12:30:00 written YYYYMMDDhhmmss", "1767270600.0"),  # was "milliseconds?"
])
def test_an_audit_since_written_as_a_date_in_digits_is_a_400_with_its_seconds_nothing_queued(svc, since, shown, seconds):
    """The audit route's `since` and an audit job's `params.since` (a JSON number, also given as a float)."""
    with svc.client("admin") as admin:
        before = jobs(admin)
        answers = {"since": admin.get(f"/admin/audits/fairness?group_by=segment&since={since}&wait=0")}
        for sent in (since, float(since)):
            answers["params.since"] = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": sent}})
            for param, r in answers.items():
                assert r.status_code == 400, (param, r.text)
                error = r.json()["error"]
                assert error["param"] == param and shown in error["message"], error
                assert f"give its Unix time, {seconds} for this one read as UTC" in error["message"], error
                assert "divide by" not in error["message"], error
        assert jobs(admin) == before


def test_an_audit_since_a_time_in_seconds_is_queued_as_before(svc):
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness?group_by=segment&since=1767225600&wait=0")
    assert r.status_code in (200, 202), r.text
