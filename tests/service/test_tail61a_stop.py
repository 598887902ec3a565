"""What a stopped service leaves of the audits' members index (`service.admin.audit_members`, SQLite in WAL mode): the
app's shutdown closes it (`close_admin`), so no `-wal` or `-shm` file stays beside it and what it indexed is in the file.
One service started and stopped, the index written directly as an audit's check writes it: what keeps, in the default
suite, the checks of tests/service/test_startup41_stop.py's slow flow (an audit job over four users, a second start and a
DELETE; `make test-generation`), and that the stop hands the heap its start froze back to the collector
(`service.heap`). The DELETE's own use of the index is kept by test_live37_audit_delete_leaves_nothing.py."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import service.heap
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_startup41_stop import _thawed


def test_a_stopped_service_folds_the_audit_index_s_write_ahead_log_in_and_keeps_what_it_indexed(serve):
    serving = service.heap._serving  # (0 unless another service of this process serves)
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    index = data / "jobs" / AUDIT_MEMBERS_INDEX
    with server:
        server.server.config.app.state.admin.audit_members.add("audit-live", [key_hash("acme/ann")])
        assert index.with_name(index.name + "-wal").exists()  # open, in WAL mode: what the stop must fold back in
    assert _thawed(serving), "the stopped service left the heap frozen"
    assert sorted(p.name for p in index.parent.glob(AUDIT_MEMBERS_INDEX + "*")) == [AUDIT_MEMBERS_INDEX]
    with closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:  # read as it is: in the file, not in a log
        assert db.execute("SELECT job_id FROM audit").fetchall() == [("audit-live",)]
