"""Session 37 review: live37's audit members rewrite attacked with many DELETEs at once, from two tenants, on
one audit covering every tenant (real app over HTTP, real LanceDB and audit members index in a temp dir):
each DELETE rewrites the one members file, so two of them interleaved could write back a hash the other took
out, with its index entry already gone. Afterwards the deleted users' hashes and keys are in no file, and every
other user is still in the members file and found by the index."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from pluralign.fairness.report import report_encoder
from pluralign.store.deletions import key_hash
from service.admin.audit_members import hash_key
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_data34_delete_audit import give
from tests.service.test_live37_audit_delete_leaves_nothing import holders
from tests.service.test_scale37_delete_audits import group, members_of, report
from training.jobs.record import Job

USERS = [f"u{i}" for i in range(8)]
GONE = {("acme", u) for u in USERS[:5]} | {("globex", u) for u in USERS[3:]}


def segment(globex: bool, user: str) -> str:
    return f"{'globex' if globex else 'acme'}-{user}"


def test_many_deletes_at_once_in_two_tenants_leave_exactly_the_others_in_an_audit(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        clients = {"acme": acme, "globex": globex}
        for client in clients.values():
            for user in USERS:  # a group each: a group a deleted user was in is withheld whole (privacy40)
                give(client, user, segment(client is globex, user), n=1)
            for user in USERS:
                assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 1  # moved into the table
        admin = server.server.config.app.state.admin
        job = Job(id="audit-all", kind="audit", params={"store": svc.runtime.settings.lancedb_uri, "group_by": "segment"},
                  state="running", created_at=time.time())
        admin.runner.store.add(job)
        admin.runner.store.path(job.id, "result.json").write_bytes(report_encoder.encode(report([group(segment(t == "globex", u), 1) for t in ("acme", "globex") for u in USERS], time.time())))
        admin.keep_audit_members(job)  # as the runner checks an audit that succeeded: every tenant's users
        assert sum(len(users) for users in members_of(data / "jobs", job.id).values()) == 16

        def delete(who) -> int:
            tenant, user = who
            with svc.client(tenant) as own:  # a connection of its own: the DELETEs arrive together
                return own.delete(f"/v1/users/{user}").status_code

        with ThreadPoolExecutor(len(GONE)) as pool:
            assert list(pool.map(delete, sorted(GONE))) == [200] * len(GONE)
        kept = {key_hash(f"{t}/{u}") for t in clients for u in USERS if (t, u) not in GONE}
        assert {h for users in members_of(data / "jobs", job.id).values() for h in users} == kept
        assert admin.audit_members.audits_of(kept) == {job.id}
        for tenant, user in GONE:
            assert admin.audit_members.audits_of([key_hash(f"{tenant}/{user}")]) == set()
    db = sqlite3.connect(data / "jobs" / AUDIT_MEMBERS_INDEX)
    assert {k for (k,) in db.execute("SELECT user FROM member")} == {hash_key(h) for h in kept}
    db.close()
    for tenant, user in GONE:
        gone = key_hash(f"{tenant}/{user}")
        assert holders(data, gone.encode()) == [] and holders(data, bytes.fromhex(gone[:16])) == [], (tenant, user)
