"""A user's DELETE and the stored audits (scale session 37): it used to read every stored audit's
members file (`Admin._forget_in_audits`), ~0.1 ms each per DELETE, for every user; now it reads those
the audit members index (`service.admin.audit_members`) names for its user. The index must never miss
an audit that holds the user: not one stored by an earlier release, not after a crash between an
audit's index entries and its members file, not for a DELETE the journal finishes at the next start. And the
promoted population model's per-user weights file is decoded only when its bytes may name the user."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import msgspec

from pluralign.fairness.report import AuditReport, GroupMetrics, decode_report, report_encoder
from pluralign.store.deletions import key_hash
from service.admin import services as admin_services
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS, AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_data34_delete_audit import give
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import stop_after_the_rows
from tests.service.tiny import start_service
from training.jobs.record import Job, job_encoder

AUDITS = 300


def group(name: str, users: int) -> GroupMetrics:
    return GroupMetrics(group=name, users=users, comparisons=8 * users, personalized_accuracy=0.75, base_accuracy=0.5,
                        personalized_ece=None, base_ece=None)


def report(groups: list[GroupMetrics], created_at: float) -> AuditReport:
    return AuditReport(group_by="segment", created_at=created_at, encoder_id="minilm", personalized_model="pal", base_model="bt",
                       users=sum(g.users for g in groups), comparisons=sum(g.comparisons for g in groups), groups=groups)


def stored_audits(jobs, n: int = AUDITS) -> str:
    """`n` succeeded audit jobs in the jobs folder `jobs` with their reports and members files, as a service
    leaves them (an earlier release: no index entry); the first (oldest) has GONE alone in group MARKER,
    the others other users. Returns the first's id."""
    jobs.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(n):
        job_id = f"audit-{i:04d}-{uuid.uuid4().hex[:6]}"
        created = time.time() - 3600 + i
        members = {"s1": [key_hash(f"acme/member-{i}-{k}") for k in range(3)]}
        groups = [group("s1", 3)]
        if i == 0:
            members[MARKER] = [key_hash(f"acme/{GONE}")]
            groups.append(group(MARKER, 1))
        data = report_encoder.encode(report(groups, created))
        (jobs / f"{job_id}.result.json").write_bytes(data)
        (jobs / f"{job_id}.out").write_bytes(data + b"\n")
        # the params its report was made with (`report`'s settings: the change since the previous audit compares those)
        job = Job(id=job_id, kind="audit", params={"group_by": "segment", "min_comparisons": 0, "personalized": "pal"}, state="succeeded", created_at=created,
                  result_path=str(jobs / f"{job_id}.result.json"))
        (jobs / f"{job_id}.job.json").write_bytes(job_encoder.encode(job))
        (jobs / "artifacts" / job_id).mkdir(parents=True)
        (jobs / "artifacts" / job_id / AUDIT_MEMBERS).write_bytes(msgspec.json.encode(members))
        ids.append(job_id)
    return ids[0]


def groups_of(jobs, job_id: str) -> set[str]:
    return {g.group for g in decode_report((jobs / f"{job_id}.result.json").read_bytes()).groups}


def members_of(jobs, job_id: str) -> dict[str, list[str]]:
    return msgspec.json.decode((jobs / "artifacts" / job_id / AUDIT_MEMBERS).read_bytes())


def test_a_user_in_the_first_of_300_stored_audits_is_forgotten_by_their_delete(serve, monkeypatch):
    """And the DELETE looks for fitted weights in no audit's folder (it read two directory listings of each)."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    first = stored_audits(jobs)  # before the start: the index is built from the members files then
    looked, original = [], admin_services.forget_training_users
    monkeypatch.setattr(admin_services, "forget_training_users", lambda folder, forget: looked.append(folder) or original(folder, forget))
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", n=2)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
    assert groups_of(jobs, first) == {"s1"}
    assert members_of(jobs, first) == {"s1": [key_hash(f"acme/member-0-{k}") for k in range(3)]}
    assert looked == []


def test_a_delete_reads_no_members_file_of_an_audit_its_user_is_not_in(serve):
    """Before: every stored audit's members file was read; the first unreadable one (the newest here)
    stopped the walk, and the DELETE was a 500 with the user's group still in audit #1."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    first = stored_audits(jobs)
    with server, svc.client("acme") as acme:
        for path in (jobs / "artifacts").glob(f"*/{AUDIT_MEMBERS}"):
            if path.parent.name != first:
                path.write_bytes(b"not read")
        give_comparisons(acme, GONE, "tea", n=2)
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
    assert groups_of(jobs, first) == {"s1"}


def test_an_audit_s_members_are_in_the_index_before_its_members_file_is_written(serve, monkeypatch):
    """A crash at any moment of an audit's check (`keep_audit_members`) leaves no members file that the index
    misses: each time one is written, the index already names the audit for every user in it."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme:
        give(acme, GONE, MARKER, n=2)
        give(acme, "ann", "s1", n=2)
        # both users' rows moved into the table (a read moves its own user's pending rows only: GONE's were left to
        # the feedback worker's timing, and the audit's members read below missed them now and then)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        assert acme.get("/v1/users/ann/preferences").json()["total"] == 2
        admin = server.server.config.app.state.admin
        job = Job(id="audit-live", kind="audit", params={"store": svc.runtime.settings.lancedb_uri, "group_by": "segment",
                                                          "tenant": "acme"}, state="running", created_at=time.time())
        admin.runner.store.add(job)
        admin.runner.store.path(job.id, "result.json").write_bytes(report_encoder.encode(report([group("s1", 1), group(MARKER, 1)],
                                                                                               time.time())))
        written, original = [], admin_services.write_atomic

        def checked(path, payload):
            if path.name == AUDIT_MEMBERS:
                hashes = [h for users in msgspec.json.decode(payload).values() for h in users]
                assert hashes
                for h in hashes:
                    assert job.id in admin.audit_members.audits_of([h]), "a members file written before its index entries"
                written.append(path)
            return original(path, payload)

        monkeypatch.setattr(admin_services, "write_atomic", checked)
        admin.keep_audit_members(job)
        assert written
        assert admin.audit_members.audits_of([key_hash(f"acme/{GONE}")]) == {job.id}
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert members_of(data / "jobs", job.id) == {"s1": [key_hash("acme/ann")]}
        assert groups_of(data / "jobs", job.id) == {"s1"}


def test_the_journal_finishes_a_stopped_delete_in_an_audit_with_its_index_lost(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                            monkeypatch):
    """A DELETE stopped after the user's rows left the store, the index file then lost (a crash before it
    reached the disk, a restore without it): the next start rebuilds it from the members files, and the
    journal's pass finishes the DELETE in audit #1."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    jobs = data / "jobs"
    first = stored_audits(jobs)
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        stop_after_the_rows(svc.runtime, GONE, monkeypatch)
        assert MARKER in groups_of(jobs, first)
    server.server.config.app.state.admin.audit_members.close()
    for path in jobs.glob(f"{AUDIT_MEMBERS_INDEX}*"):
        path.unlink()
    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)  # the next start
    with again:
        # the report is rewritten first, the members file last (`_prune_audit`): wait for both
        assert wait_until(lambda: groups_of(jobs, first) == {"s1"} and key_hash(f"acme/{GONE}") not in str(members_of(jobs, first))), \
            (groups_of(jobs, first), members_of(jobs, first))


def test_a_damaged_index_is_built_again_at_the_start_and_the_delete_finds_the_audit(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    jobs = data / "jobs"
    first = stored_audits(jobs, 20)
    (jobs / AUDIT_MEMBERS_INDEX).write_bytes(b"not a SQLite file, a partial copy" * 200)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", n=2)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
    assert groups_of(jobs, first) == {"s1"}


def test_a_delete_decodes_no_served_weights_file_that_cannot_name_its_user(serve, tiny_pal_dir, monkeypatch):
    """The promoted population model's user_weights.json holds a row per training user (all of them: 12 MB and
    235 ms to decode at 100,000 users), decoded by every DELETE. Now a file whose bytes do not hold the user's
    name is not decoded (before: it was, once per DELETE); one that does is (tests/service/test_break20_delete.py)."""
    from pluralign.reward import pal_checkpoint
    from service.runtime import PROMOTED_PAL

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    decoded, load = [], pal_checkpoint.UserWeights.load
    monkeypatch.setattr(pal_checkpoint.UserWeights, "load", classmethod(lambda cls, path, **kw: decoded.append(path) or load(path, **kw)))
    with server, svc.client("acme") as acme:
        svc.runtime.swap_rewards(tiny_pal_dir)
        served = data / PROMOTED_PAL / "user_weights.json"
        before = served.read_bytes()
        decoded.clear()
        give_comparisons(acme, GONE, "tea", n=2)
        assert acme.delete(f"/v1/users/{GONE}").status_code == 200
        assert served not in [Path(p) for p in decoded], decoded
        assert served.read_bytes() == before
