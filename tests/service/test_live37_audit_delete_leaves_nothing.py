"""A user's DELETE leaves their hash nowhere in the stored audits (live session 37). Before: an audit's members
file (AUDIT_MEMBERS: `key_hash("tenant/user")`, an unsalted sha256 anyone knowing the id computes) was rewritten by
a DELETE only when a group became empty, so a user deleted from a group that kept others stayed in it; and the
audit members index (`service.admin.audit_members`) kept their entry (the hash's first 8 bytes) for good."""

from __future__ import annotations

import shutil
import sqlite3
import time

import msgspec
import pytest

from pluralign.fairness.report import report_encoder
from pluralign.store.deletions import key_hash
from service.admin.audit_members import hash_key
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from service.users import services
from tests.service.test_break20_delete import GONE
from tests.service.test_data34_delete_audit import give
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import Stopped
from tests.service.test_scale37_delete_audits import group, members_of, report
from tests.service.tiny import start_service
from training.jobs.record import Job

# the deletion record names a deleted user by this hash by design (`pluralign.store.deletions`): it is the
# record every replica reads, and it outlives the user
DELETION_RECORD = ("deletions.lance",)


def holders(data, needle: bytes) -> list[str]:
    """The files under `data` whose bytes hold `needle`, but the deletion record's."""
    return sorted(str(p.relative_to(data)) for p in data.rglob("*")
                  if p.is_file() and not any(part in DELETION_RECORD for part in p.parts) and needle in p.read_bytes())


def audit_of(server, svc, acme):
    """GONE, ann and bob of acme each give 2 comparisons in segment s1, cal in s2, and the audit job `audit-live`
    over them is checked as the runner checks one that succeeded (`keep_audit_members`). Returns (admin, job)."""
    for user, segment in ((GONE, "s1"), ("ann", "s1"), ("bob", "s1"), ("cal", "s2")):
        give(acme, user, segment, n=2)
    for user in (GONE, "ann", "bob", "cal"):
        assert acme.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved into the table
    admin = server.server.config.app.state.admin
    job = Job(id="audit-live", kind="audit", params={"store": svc.runtime.settings.lancedb_uri, "group_by": "segment",
                                                      "tenant": "acme"}, state="running", created_at=time.time())
    admin.runner.store.add(job)
    admin.runner.store.path(job.id, "result.json").write_bytes(report_encoder.encode(report([group("s1", 3), group("s2", 1)], time.time())))
    admin.keep_audit_members(job)
    return admin, job


def test_a_user_deleted_from_an_audit_group_that_keeps_others_leaves_no_hash_behind(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    gone = key_hash(f"acme/{GONE}")
    with server, svc.client("acme") as acme:
        admin, job = audit_of(server, svc, acme)
        assert gone in members_of(data / "jobs", job.id)["s1"]
        assert admin.audit_members.audits_of([gone]) == {job.id}
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        # s1's figures held GONE's comparisons: withheld since privacy40, and ann and bob leave the file with it
        assert members_of(data / "jobs", job.id) == {"s2": [key_hash("acme/cal")]}
        assert admin.audit_members.audits_of([gone]) == set()
        assert admin.audit_members.audits_of([key_hash("acme/ann")]) == set()
        assert admin.audit_members.audits_of([key_hash("acme/cal")]) == {job.id}  # the others are still found
    db = sqlite3.connect(data / "jobs" / AUDIT_MEMBERS_INDEX)
    assert db.execute("SELECT count(*) FROM member WHERE user = ?", (hash_key(gone),)).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM member").fetchone() == (1,)
    db.close()
    # as the index stores its key on disk: a SQLite record holds a 64-bit integer as 8 big-endian bytes
    assert holders(data, gone.encode()) == []
    assert holders(data, bytes.fromhex(gone[:16])) == []
    assert holders(data, bytes.fromhex(key_hash("acme/cal")[:16])) != []  # the grep finds what is there


def test_a_delete_stopped_between_the_members_file_and_the_index_is_finished_by_the_journal(tmp_path, tiny_generator_dir,
                                                                                          tiny_pal_dir, minilm, monkeypatch):
    """Killed after the members file was rewritten, before the index's entries followed: the index still names the
    audit for the user (more, never fewer), and the journal's replay at the next start drops their entry."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    gone = key_hash(f"acme/{GONE}")
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with server, svc.client("acme") as acme:
        audit_of(server, svc, acme)
        index = server.server.config.app.state.admin.audit_members

        def killed(job_id, user_hashes, kept):
            raise Stopped

        monkeypatch.setattr(index, "drop", killed)
        with pytest.raises(Stopped):
            services.delete(svc.runtime, "acme", GONE)
        assert gone not in str(members_of(data / "jobs", "audit-live"))
        assert index.audits_of([gone]) == {"audit-live"}
    server.server.config.app.state.admin.audit_members.close()
    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)  # the next start
    with again:
        index = again.server.config.app.state.admin.audit_members
        assert wait_until(lambda: index.audits_of([gone]) == set())
        assert index.audits_of([key_hash("acme/ann")]) == {"audit-live"}
    assert holders(data, bytes.fromhex(gone[:16])) == []


def test_a_delete_leaves_no_entry_for_an_audit_whose_members_file_went_with_a_failed_check_or_its_retention(serve):
    """An audit's members go into the index before its members file is written (`_prune_audit`): when the check then
    fails (a full disk refused the file), the runner records the audit failed and removes its folder, and since
    admin42 the retention purges such a failed audit after `job_retention_s`. Before (reviewa42), a DELETE skipped an
    audit the index named without a members file (`continue`): the user's key stayed in the index until the next
    start's `catch_up`, against "once a DELETE has finished neither the members files nor the index hold the user"."""
    from service.admin.retention import JobRetention

    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    gone = key_hash(f"acme/{GONE}")
    with server, svc.client("acme") as acme:
        admin, live = audit_of(server, svc, acme)
        day, old = 86_400.0, time.time() - 10 * 86_400.0
        for job_id in ("audit-check-failed", "audit-expired"):  # both checked as `live` was, then their check failed
            job = Job(id=job_id, kind="audit", params=live.params, state="running", created_at=old)
            admin.runner.store.add(job)
            admin.runner.store.path(job_id, "result.json").write_bytes(report_encoder.encode(report([group("s1", 3), group("s2", 1)], old)))
            admin.keep_audit_members(job)
            shutil.rmtree(data / "jobs" / "artifacts" / job_id)  # as the runner does when the check raises
            admin.runner.store.put(msgspec.structs.replace(job, state="failed", finished_at=old, error="checking its result failed"))
        admin.runner.store.put(msgspec.structs.replace(live, state="succeeded", finished_at=time.time()))
        # the retention purges one failed audit (the newest audit, `live`, is kept); the other's record stays, as in
        # the window before its retention
        admin.runner.store.put(msgspec.structs.replace(admin.runner.get("audit-check-failed"), finished_at=time.time()))
        assert JobRetention(admin, day).run_once().jobs == 1
        assert admin.runner.get("audit-expired") is None and admin.runner.get("audit-check-failed") is not None
        assert admin.audit_members.audits_of([gone]) == {live.id, "audit-check-failed", "audit-expired"}
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert admin.audit_members.audits_of([gone]) == set()
        assert admin.audit_members.audits_of([key_hash("acme/cal")]) == {live.id, "audit-check-failed", "audit-expired"}  # no DELETE of cal
    assert holders(data, bytes.fromhex(gone[:16])) == []
