"""A report stored before session 43 named the comparisons with no value of its attribute `unknown`; since then the
store labels them `" (no value)"` (`pluralign.fairness.audit.NO_VALUE`). The start's pass over an audit an earlier
release stored without a members file draws its groups' users from the store as they are labelled now (review of
admin43)."""

from __future__ import annotations

import time

import pytest

from pluralign.fairness.audit import OLD_NO_VALUE
from pluralign.fairness.report import report_encoder
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_data34_delete_audit import give
from tests.service.test_privacy40_old_audits import groups_in
from tests.service.test_scale37_delete_audits import group, members_of, report
from training.jobs.record import Job, job_encoder


@pytest.mark.slow  # two service starts (~7 s): make test-all runs it
def test_a_pre_members_audits_unknown_group_keeps_its_users_and_figures_at_the_start(serve):
    """ann sent segment s1, bob no segment: an audit of a release before data34 put bob in `unknown`. Before: the start
    drew the groups' users from the store, bob in " (no value)", so `unknown` held nobody and left the report, its
    figures and the overall ones redrawn without it (an audit of before lost for good), and bob was listed as a user
    of a group it does not show."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        give(acme, "ann", "s1", n=2)
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": "bob", "prompt": "Drink?", "chosen": "Tea.", "rejected": "Coffee."})
        assert r.status_code == 201, r.text
        for user in ("ann", "bob"):
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] >= 1  # moved into the table
        uri = svc.runtime.settings.lancedb_uri
    jobs = data / "jobs"
    created = time.time()  # after the feedback it audits
    old = report_encoder.encode(report([group("s1", 1), group(OLD_NO_VALUE, 1)], created))
    job = Job(id="audit-before-data34", kind="audit", params={"store": uri, "group_by": "segment", "tenant": "acme"},
              state="succeeded", created_at=created, result_path=str(jobs / "audit-before-data34.result.json"))
    (jobs / "audit-before-data34.job.json").write_bytes(job_encoder.encode(job))
    (jobs / "audit-before-data34.result.json").write_bytes(old)
    (jobs / "audit-before-data34.out").write_bytes(old + b"\n")
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        assert acme.get("/v1/users/ann").status_code == 200
        assert groups_in(jobs, job.id) == {"s1", OLD_NO_VALUE}
        assert members_of(jobs, job.id) == {"s1": [key_hash("acme/ann")], OLD_NO_VALUE: [key_hash("acme/bob")]}
