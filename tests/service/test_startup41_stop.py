"""What a stopped service leaves (startup41): the audits' members index (`service.admin.audit_members`, SQLite in
WAL mode) was never closed at the app's shutdown, so its `-wal` and `-shm` files stayed beside it after every stop
(and the write-ahead log's pages with them), until the next start opened it again."""

from __future__ import annotations

from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete import GONE
from tests.service.test_live37_audit_delete_leaves_nothing import audit_of
from tests.service.tiny import start_service


def test_a_stopped_service_leaves_no_write_ahead_log_of_the_audit_index_and_deletes_after_a_restart(serve, tiny_generator_dir,
                                                                                                   tiny_pal_dir, minilm):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    index = data / "jobs" / AUDIT_MEMBERS_INDEX
    with server, svc.client("acme") as acme:
        audit_of(server, svc, acme)
        assert index.with_name(index.name + "-wal").exists()  # open, in WAL mode: what the stop must fold back in
    assert sorted(p.name for p in index.parent.glob(AUDIT_MEMBERS_INDEX + "*")) == [AUDIT_MEMBERS_INDEX]
    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with again, svc.client("acme") as acme:
        members = again.server.config.app.state.admin.audit_members
        assert members.audits_of([key_hash(f"acme/{GONE}")]) == {"audit-live"}  # what the first run indexed, kept
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert members.audits_of([key_hash(f"acme/{GONE}")]) == set()
    assert sorted(p.name for p in index.parent.glob(AUDIT_MEMBERS_INDEX + "*")) == [AUDIT_MEMBERS_INDEX]
