"""A DELETE of a user who is in an audit only through a group its report does not show (audit session 41).

A group of fewer than `min_group_size` users is suppressed: the report lists no figures of it, but its users and
comparisons are in the report's `users` and `comparisons` counts and its comparisons in the overall figures. Its
users were in no members file, so their DELETE found nothing to withhold and the overall figures and the counts
kept their comparisons. Now the members file lists them (apart from the shown groups), and their DELETE withholds
the overall figures and takes the unshown groups' part out of the counts."""

from __future__ import annotations

import sqlite3
import time

import msgspec

from pluralign.fairness.report import AuditReport, decode_report, report_encoder
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete import GONE
from tests.service.test_data34_delete_audit import give
from tests.service.test_live37_audit_delete_leaves_nothing import holders
from tests.service.test_privacy40_audit_figures import figures
from tests.service.test_scale37_delete_audits import members_of
from training.jobs.record import Job, job_encoder
from training.jobs.runner import result_metrics


def stored_audit(admin, uri: str, job_id: str, report: AuditReport) -> Job:
    """The audit job `job_id` with `report`, checked as the runner checks one that succeeded, then recorded."""
    job = Job(id=job_id, kind="audit", params={"store": uri, "group_by": "segment", "tenant": "acme", "min_group_size": 2},
              state="running", created_at=report.created_at)
    return recorded_succeeded(admin, job, report)


def recorded_succeeded(admin, job: Job, report: AuditReport) -> Job:
    """The running audit `job` recorded with `report` as the runner records one that succeeded (its result, output and
    members file written, then the record)."""
    data = report_encoder.encode(report)
    admin.runner.store.add(job)
    admin.runner.store.path(job.id, "result.json").write_bytes(data)
    admin.runner.store.path(job.id, "out").write_bytes(data + b"\n")
    admin.keep_audit_members(job)
    admin.runner.store.put(msgspec.structs.replace(job, state="succeeded", metrics=result_metrics(msgspec.json.decode(data)),
                                                   result_path=str(admin.runner.store.path(job.id, "result.json"))))
    return job


def test_a_delete_of_a_user_only_in_a_suppressed_group_withholds_the_overall_figures_and_their_counts(serve):
    """ann and bob in s1, cal and dee in s2, GONE alone in s3 (suppressed at min_group_size 2). Before: after GONE's
    DELETE the report still gave the overall figures over all five users and counted GONE's user and comparisons."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    with server, svc.client("acme") as acme, svc.client("admin") as admin_http:
        for user, segment in ((GONE, "s3"), ("ann", "s1"), ("bob", "s1"), ("cal", "s2"), ("dee", "s2")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        admin = server.server.config.app.state.admin
        uri = svc.runtime.settings.lancedb_uri
        created = time.time()
        shown = [figures("s1", 2, 0.75), figures("s2", 2, 0.5)]  # 4 comparisons each
        report = AuditReport(group_by="segment", created_at=created, encoder_id="minilm", personalized_model="online-logistic",
                             base_model="crossfit-logistic", users=5, comparisons=10, min_group_size=2, suppressed_groups=1,
                             overall=figures("all", 5, 0.6), groups=shown, worst_group="s2", worst_group_accuracy=0.5, gap=0.25)
        job = stored_audit(admin, uri, "audit-suppressed", report)
        gone = key_hash(f"acme/{GONE}")
        assert admin.audit_members.audits_of([gone]) == {job.id}
        assert gone in {h for users in members_of(jobs, job.id).values() for h in users}  # listed: their DELETE finds it

        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        stored = decode_report((jobs / f"{job.id}.result.json").read_bytes())
        assert stored.overall is None  # over GONE's comparisons too
        assert (stored.users, stored.comparisons) == (4, 8)  # the shown groups' alone
        assert [g.group for g in stored.groups] == ["s1", "s2"] and stored.withheld_groups == 0  # they held none of GONE's
        assert (stored.worst_group, stored.gap) == ("s2", 0.25)
        assert decode_report((jobs / f"{job.id}.out").read_bytes()) == stored
        metrics = admin_http.get(f"/admin/jobs/{job.id}").json()["metrics"]
        assert metrics["users"] == 4 and metrics["comparisons"] == 8
        page = admin_http.get("/admin/dashboard")
        assert page.status_code == 200, page.text
        assert "4 users, 8 comparisons" in page.text, page.text
        assert admin.audit_members.audits_of([gone]) == set()
        # the shown groups' figures stand: ann's DELETE withholds s1 as before
        assert acme.delete("/v1/users/ann").status_code == 200
        stored = decode_report((jobs / f"{job.id}.result.json").read_bytes())
        assert [g.group for g in stored.groups] == ["s2"] and (stored.users, stored.comparisons) == (2, 4)

        # an audit that counted a user deleted while it ran (bob's s1 and theirs suppressed, 2 comparisons each): what
        # the store holds from before it began counts one user fewer, so it is withheld when the job is checked
        ran = AuditReport(group_by="segment", created_at=time.time(), encoder_id="minilm", personalized_model="online-logistic",
                          base_model="crossfit-logistic", users=4, comparisons=8, min_group_size=2, suppressed_groups=1,
                          overall=figures("all", 4, 0.6), groups=[figures("s2", 2, 0.5)], worst_group="s2", worst_group_accuracy=0.5, gap=0.0)
        during = stored_audit(admin, uri, "audit-during", ran)
        checked = decode_report((jobs / f"{during.id}.result.json").read_bytes())
        assert checked.overall is None and (checked.users, checked.comparisons) == (2, 4), checked
    assert holders(data, gone.encode()) == []
    assert holders(data, bytes.fromhex(gone[:16])) == []


def old_form_audit(jobs, uri: str, job_id: str, report: AuditReport, members: dict[str, list[str]]) -> None:
    """A succeeded audit as a release before audit41 left it: its members file lists the shown groups' users alone."""
    data = report_encoder.encode(report)
    job = Job(id=job_id, kind="audit", params={"store": uri, "group_by": "segment", "tenant": "acme", "min_group_size": 2},
              state="succeeded", created_at=report.created_at, finished_at=report.created_at,
              result_path=str(jobs / f"{job_id}.result.json"))
    (jobs / f"{job_id}.job.json").write_bytes(job_encoder.encode(job))
    (jobs / f"{job_id}.result.json").write_bytes(data)
    (jobs / f"{job_id}.out").write_bytes(data + b"\n")
    (jobs / "artifacts" / job_id).mkdir(parents=True)
    (jobs / "artifacts" / job_id / AUDIT_MEMBERS).write_bytes(msgspec.json.encode(members))


def test_the_start_lists_the_unshown_users_of_audits_an_earlier_release_stored(serve):
    """`before`: ann and bob in s1, GONE alone in s3 (suppressed), deleted after it by a release that left it whole.
    `after`: made after that DELETE, eve alone in s4 (suppressed). Before: the start left both as they were (the
    overall figures over GONE's comparisons), and eve's DELETE found no file listing her."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    with server, svc.client("acme") as acme:
        for user, segment in ((GONE, "s3"), ("ann", "s1"), ("bob", "s1"), ("eve", "s4")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        uri = svc.runtime.settings.lancedb_uri
        s1 = {"s1": sorted(key_hash(f"acme/{u}") for u in ("ann", "bob"))}
        made = time.time()
        old_form_audit(jobs, uri, "audit-before", AuditReport(
            group_by="segment", created_at=made, encoder_id="minilm", personalized_model="online-logistic", base_model="crossfit-logistic",
            users=4, comparisons=8, min_group_size=2, suppressed_groups=2, overall=figures("all", 4, 0.6), groups=[figures("s1", 2, 0.75)]), s1)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200  # the index knows no such audit: as before audit41
        made = time.time()
        old_form_audit(jobs, uri, "audit-after", AuditReport(
            group_by="segment", created_at=made, encoder_id="minilm", personalized_model="online-logistic", base_model="crossfit-logistic",
            users=3, comparisons=6, min_group_size=2, suppressed_groups=1, overall=figures("all", 3, 0.6), groups=[figures("s1", 2, 0.75)]), s1)
        # and one a later release wrote (rolled back since): this release cannot read it, and still checks the others
        old_form_audit(jobs, uri, "audit-later", msgspec.structs.replace(
            decode_report((jobs / "audit-after.result.json").read_bytes()), created_at=time.time()), s1)
        later = jobs / "audit-later.result.json"
        later.write_bytes(msgspec.json.encode({**msgspec.json.decode(later.read_bytes()), "schema_version": 5}))
    # the index as the release before audit41 left it: its members files checked for that release's DELETEs (marker 1),
    # not for the unshown groups' users (a start that saw marker 1 as checked left both audits as they were)
    index = sqlite3.connect(jobs / AUDIT_MEMBERS_INDEX)
    index.execute("PRAGMA user_version = 1")
    index.close()
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        before = decode_report((jobs / "audit-before.result.json").read_bytes())
        assert before.overall is None and (before.users, before.comparisons) == (2, 4), before  # GONE's were in them
        after = decode_report((jobs / "audit-after.result.json").read_bytes())
        assert after.overall is not None  # no DELETE since it was made
        assert acme.delete("/v1/users/eve").status_code == 200
        after = decode_report((jobs / "audit-after.result.json").read_bytes())
        assert after.overall is None and (after.users, after.comparisons) == (2, 4), after
        assert members_of(jobs, "audit-after") == s1
