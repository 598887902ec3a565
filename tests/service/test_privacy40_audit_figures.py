"""What a DELETE leaves of an audit's figures (privacy session 40). An audit's per-group figures are means over
its users' comparisons, and its overall figures are over every group's: once a DELETE takes a user out of a group
that keeps other users, the figures still held their comparisons, and the overall and the group left beside it
gave an emptied group's figures back by subtraction. Now the groups a deleted user was in are withheld (counted
in `withheld_groups`), with the overall figures, and the report's user and comparison counts lose theirs."""

from __future__ import annotations

import time

import msgspec

from pluralign.fairness.report import AuditReport, GroupMetrics, decode_report, report_encoder
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE
from tests.service.test_data34_delete_audit import give
from tests.service.test_scale37_delete_audits import members_of
from training.jobs.record import Job
from training.jobs.runner import result_metrics


def figures(name: str, users: int, accuracy: float) -> GroupMetrics:
    return GroupMetrics(group=name, users=users, comparisons=2 * users, personalized_accuracy=accuracy, base_accuracy=0.5,
                        personalized_ece=0.1, base_ece=0.2)


def test_a_delete_withholds_the_figures_of_the_groups_its_user_was_in(serve):
    """Before: after GONE's DELETE, s1 (GONE and ann) kept its accuracy 0.25 (GONE's comparisons in it), the overall
    figures all three users', and the job's metrics users=3."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    with server, svc.client("acme") as acme, svc.client("admin") as admin_http:
        for user, segment in ((GONE, "s1"), ("ann", "s1"), ("bob", "s2"), ("cal", "s3")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        admin = server.server.config.app.state.admin
        created = time.time()
        job = Job(id="audit-figures", kind="audit", params={"store": svc.runtime.settings.lancedb_uri, "group_by": "segment",
                                                             "tenant": "acme"}, state="running", created_at=created)
        groups = [figures("s1", 2, 0.25), figures("s2", 1, 0.75), figures("s3", 1, 1.0)]
        report = AuditReport(group_by="segment", created_at=created, encoder_id="minilm", personalized_model="online-logistic",
                             base_model="crossfit-logistic", users=4, comparisons=8, ties_skipped=3, overall=figures("all", 4, 0.5625),
                             groups=groups, worst_group="s1", worst_group_accuracy=0.25, gap=0.75)
        data_ = report_encoder.encode(report)
        admin.runner.store.add(job)
        admin.runner.store.path(job.id, "result.json").write_bytes(data_)
        admin.runner.store.path(job.id, "out").write_bytes(data_ + b"\n")
        admin.keep_audit_members(job)  # as the runner checks one that succeeded, then records it
        admin.runner.store.put(msgspec.structs.replace(job, state="succeeded", metrics=result_metrics(msgspec.json.decode(data_)),
                                                       result_path=str(admin.runner.store.path(job.id, "result.json"))))

        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        stored = decode_report((jobs / f"{job.id}.result.json").read_bytes())
        assert [g.group for g in stored.groups] == ["s2", "s3"]  # s1 held GONE's comparisons: withheld
        assert stored.withheld_groups == 1
        assert stored.overall is None  # over GONE's comparisons too
        assert (stored.users, stored.comparisons) == (2, 4)
        # the ties skipped, counted over every user's (a store's audit counts them since trial48b), GONE's among them:
        # they cannot be told apart by user, so the count is withheld too (before review session trial48b it stood, and
        # a new audit's gave GONE's ties back by subtraction)
        assert stored.ties_skipped is None
        assert (stored.worst_group, stored.worst_group_accuracy, stored.gap) == ("s2", 0.75, 0.25)
        assert decode_report((jobs / f"{job.id}.out").read_bytes()) == stored
        shown = admin_http.get(f"/admin/jobs/{job.id}")
        assert shown.status_code == 200, shown.text
        metrics = shown.json()["metrics"]
        assert metrics["users"] == 2 and metrics["comparisons"] == 4 and metrics["withheld_groups"] == 1
        assert metrics["worst_group_accuracy"] == 0.75
        assert members_of(jobs, job.id) == {"s2": [key_hash("acme/bob")], "s3": [key_hash("acme/cal")]}
        page = admin_http.get("/admin/dashboard")
        assert page.status_code == 200, page.text
        assert "<bdi>s1</bdi>" not in page.text and "<bdi>s2</bdi>" in page.text
        assert "1 group withheld" in page.text
        # ann, still in the store, is in no audit's list now: her DELETE reads none
        assert admin.audit_members.audits_of([key_hash("acme/ann")]) == set()
        # a second DELETE, of a user alone in their group: that group leaves too, and the report counts both
        assert acme.delete("/v1/users/cal").status_code == 200
        stored = decode_report((jobs / f"{job.id}.result.json").read_bytes())
        assert [g.group for g in stored.groups] == ["s2"] and stored.withheld_groups == 2
        assert (stored.users, stored.comparisons) == (1, 2)
