"""Audits an earlier release stored, and the DELETEs of their members (privacy session 40).

Two older forms leave a user behind:
- before data34 (the upgrade fixtures' releases, 2a4712d and b7168d1) an audit job kept no members file:
  nothing said which users a report's group held, so a DELETE left the group named by a deleted user's own
  attribute value, with figures drawn from their comparisons alone;
- from data34 to live37 a DELETE rewrote an audit's members file only when a group became empty: a user
  deleted from a group that kept others stayed in it, as the sha256 of `tenant/user`.
Today's start draws the first kind's members from the store, as a job's check does, and takes from the second
kind the users the store no longer holds."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from pluralign.fairness.report import decode_report, report_encoder
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX
from tests.files import files_holding
from tests.service.test_break20_delete import GONE, MARKER
from tests.service.test_data34_delete_audit import give
from tests.service.test_live37_audit_delete_leaves_nothing import holders
from tests.service.test_scale37_delete_audits import group, members_of, report
from tests.service.test_upgrade29 import upgraded  # noqa: F401
from training.jobs.record import Job, job_encoder


def groups_in(jobs, job_id: str) -> set[str]:
    return {g.group for g in decode_report((jobs / f"{job_id}.result.json").read_bytes()).groups}


def old_audit(jobs: Path, job_id: str, params: dict, groups: list, created: float, members: bytes | None = None) -> Job:
    """An audit job `job_id` as an earlier release left it in the job folder `jobs`: its record (`params`, succeeded at
    `created`), its report of `groups` as its result and output files and, given `members` (bytes), its members file
    beside no members index, as data34 left them (an index there is removed). Returns its record."""
    if members is not None:
        for stale in jobs.glob(f"{AUDIT_MEMBERS_INDEX}*"):
            stale.unlink()
    old = report_encoder.encode(report(groups, created))
    job = Job(id=job_id, kind="audit", params=params, state="succeeded", created_at=created,
              result_path=str(jobs / f"{job_id}.result.json"))
    (jobs / f"{job_id}.job.json").write_bytes(job_encoder.encode(job))
    (jobs / f"{job_id}.result.json").write_bytes(old)
    (jobs / f"{job_id}.out").write_bytes(old + b"\n")
    if members is not None:
        (jobs / "artifacts" / job_id).mkdir(parents=True)
        (jobs / "artifacts" / job_id / AUDIT_MEMBERS).write_bytes(members)
    return job


def test_a_delete_takes_the_group_of_its_user_out_of_an_audit_a_release_before_members_files_stored(upgraded):  # noqa: F811
    """b7168d1's own audit job over segment: alice alone in `a`, bob and dave in `b`. Before: after alice's DELETE
    the report (result.json, .out, the job record's metrics) still held group `a` with her accuracy."""
    expected, data, service = upgraded("b7168d1")
    jobs = data / "jobs"
    audit = next(j for j in expected["jobs"]["jobs"] if j["kind"] == "audit")["id"]
    # `a` is read suppressed (a group of one user: review session 49), but the file still names it until the DELETE
    assert groups_in(jobs, audit) == {"b"} and files_holding(jobs, '"group":"a"') != []
    with service.client("default") as default:
        r = default.delete("/v1/users/alice")
        assert r.status_code == 200, r.text
    assert groups_in(jobs, audit) == {"b"}
    assert files_holding(jobs, '"group":"a"', '"worst_group":"a"') == []
    record = msgspec.json.decode((jobs / f"{audit}.job.json").read_bytes())
    assert record["metrics"]["worst_group_accuracy"] == record["metrics"]["base_worst_group_accuracy"] == 0.2  # b's alone
    assert members_of(jobs, audit) == {"b": sorted(key_hash(k) for k in ("default/bob", "acme/dave"))}


def test_a_user_an_earlier_release_deleted_from_a_group_that_kept_others_leaves_the_members_file_at_the_start(serve):
    """Before: GONE's hash stayed in the members file, and the index (built from it at the start) held its key."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        for user, segment in (("ann", "s1"), ("bob", "s1"), ("cal", "s2")):
            give(acme, user, segment, n=2)
            assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
        uri = svc.runtime.settings.lancedb_uri
    # as a data34 release left its audit after GONE's DELETE (GONE's rows gone, their hash kept), with no index
    jobs = data / "jobs"
    gone = key_hash(f"acme/{GONE}")
    created = time.time()  # after the feedback it audits (reviewp40: a user whose rows all came later was not in it)
    job = old_audit(jobs, "audit-data34", {"store": uri, "group_by": "segment", "tenant": "acme"}, [group("s1", 3), group("s2", 1)],
                    created, msgspec.json.encode({"s1": sorted([gone, *(key_hash(f"acme/{u}") for u in ("ann", "bob"))]),
                                                  "s2": [key_hash("acme/cal")]}))
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        assert acme.get("/v1/users/ann").status_code == 200
        # s1's figures held GONE's comparisons: withheld, as a DELETE today does
        assert members_of(jobs, job.id) == {"s2": [key_hash("acme/cal")]}
        assert groups_in(jobs, job.id) == {"s2"}
    assert holders(data, gone.encode()) == []
    assert holders(data, bytes.fromhex(gone[:16])) == []
    assert holders(data, bytes.fromhex(key_hash("acme/cal")[:16])) != []  # the grep finds what is there


def test_a_pre_members_audit_whose_group_s_users_are_all_gone_loses_it_at_the_start(serve):
    """A release before data34 answered GONE's DELETE and left the group MARKER (GONE alone in it) in its audit."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        give(acme, "ann", "s1", n=2)
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 2
        uri = svc.runtime.settings.lancedb_uri
    jobs = data / "jobs"
    created = time.time()  # after the feedback it audits (reviewp40: a user whose rows all came later was not in it)
    job = old_audit(jobs, "audit-b7168d1", {"store": uri, "group_by": "segment"}, [group("s1", 1), group(MARKER, 1)], created)
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        assert acme.get("/v1/users/ann").status_code == 200
        assert groups_in(jobs, job.id) == {"s1"}
        assert members_of(jobs, job.id) == {"s1": [key_hash("acme/ann")]}
    assert files_holding(data, MARKER) == []
