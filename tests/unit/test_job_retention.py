"""The job retention policy (`training.jobs.retention.expired`) and its setting."""

from __future__ import annotations

import pytest

from service.settings import Settings
from training.jobs.record import Job
from training.jobs.retention import expired

NOW = 1_000_000.0
DAY = 86_400.0


def job(id: str, kind: str = "adapter", state: str = "succeeded", ended: float = NOW - 2 * DAY, user: str | None = "ana",
        tenant: str = "acme") -> Job:
    params = {"user": user, "tenant": tenant} if user else {}
    return Job(id=id, kind=kind, params=params, state=state, created_at=ended - 60, finished_at=ended)


def ids(jobs) -> list[str]:
    return [j.id for j in jobs]


def test_old_finished_jobs_go_but_the_newest_of_each_lineage_stays():
    jobs = [job("a1", ended=NOW - 3 * DAY), job("a2"), job("b1", user="bo"), job("p1", kind="pal", user=None, ended=NOW - 3 * DAY),
            job("p2", kind="pal", user=None)]
    assert ids(expired(jobs, now=NOW, keep_s=DAY, served=set())) == ["a1", "p1"]


def test_the_same_user_in_two_tenants_is_two_lineages():
    jobs = [job("a1", ended=NOW - 3 * DAY), job("g1", tenant="globex")]
    assert expired(jobs, now=NOW, keep_s=DAY, served=set()) == []


def test_young_active_audit_and_served_jobs_stay():
    jobs = [job("old", ended=NOW - 5 * DAY), job("young", ended=NOW - 60), job("queued", state="queued", ended=NOW - 4 * DAY),
            job("served", ended=NOW - 4 * DAY), job("audit", kind="audit", user=None, ended=NOW - 9 * DAY),
            job("audit2", kind="audit", user=None)]
    jobs[2] = Job(id="queued", kind="adapter", params={"user": "ana", "tenant": "acme"}, state="queued", created_at=NOW - 4 * DAY)
    assert ids(expired(jobs, now=NOW, keep_s=DAY, served={"served"})) == ["old"]


def test_the_newest_job_that_was_not_cancelled_stays_it_is_the_triggers_baseline():
    jobs = [job("a1", ended=NOW - 5 * DAY), job("a2", ended=NOW - 4 * DAY), job("a3", state="cancelled", ended=NOW - 3 * DAY)]
    assert ids(expired(jobs, now=NOW, keep_s=DAY, served=set())) == ["a1"]


def test_a_failed_job_goes_like_a_succeeded_one():
    jobs = [job("f1", state="failed", ended=NOW - 5 * DAY), job("a2")]
    assert ids(expired(jobs, now=NOW, keep_s=DAY, served=set())) == ["f1"]


def test_a_failed_or_cancelled_audit_goes_it_holds_no_report():
    """Succeeded audits stay (their reports are the dashboard's history); before, every audit stayed for good, so each
    request with a misspelt `group_by` or a tenant with no comparisons (a failed audit job, its record and log) did."""
    jobs = [job("typo", kind="audit", state="failed", user=None, ended=NOW - 9 * DAY),
            job("stopped", kind="audit", state="cancelled", user=None, ended=NOW - 8 * DAY),
            job("report", kind="audit", user=None, ended=NOW - 7 * DAY), job("newest", kind="audit", state="failed", user=None)]
    assert ids(expired(jobs, now=NOW, keep_s=DAY, served=set())) == ["typo", "stopped"]


@pytest.mark.parametrize("keep_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_retention_must_be_positive_and_finite(keep_s):
    with pytest.raises(ValueError, match="keep_s"):
        expired([], now=NOW, keep_s=keep_s, served=set())


def test_the_setting_takes_zero_for_keep_everything_and_refuses_nonsense():
    assert Settings(job_retention_s=0).job_retention_s == 0
    assert Settings().job_retention_s == 7 * DAY
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="job_retention_s"):
            Settings(job_retention_s=bad)
