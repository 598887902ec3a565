"""What a stopped service leaves (startup41): the audits' members index (`service.admin.audit_members`, SQLite in
WAL mode) was never closed at the app's shutdown, so its `-wal` and `-shm` files stayed beside it after every stop
(and the write-ahead log's pages with them), until the next start opened it again."""

from __future__ import annotations

import os
import signal
import time

from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete import GONE
from tests.service.test_live37_audit_delete_leaves_nothing import audit_of
from tests.service.tiny import free_port, start_service


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


class Unhandled(Exception):
    """The SIGTERM reached the caller's handler: `pluralign serve` had none of its own during its start."""


def test_a_sigterm_during_serves_start_undoes_it_and_exits_143(tmp_path, tiny_generator_dir, tiny_pal_dir, monkeypatch, capsys):
    """The mechanism, in-process (tests/e2e/test_startup41_stop_at_start.py: a real process, its generation child):
    SIGTERM comes while `start` reads the jobs folder, after it made the data folder and before any model loads."""
    import service.admin.paths
    from training.cli import main
    from training.commands import serve

    data = tmp_path / "data"
    for name, value in {"PLURALIGN_DATA_DIR": data, "PLURALIGN_GENERATOR": tiny_generator_dir, "PLURALIGN_PAL_DIR": tiny_pal_dir,
                        "PLURALIGN_CACHE_DIR": tmp_path / "cache"}.items():
        monkeypatch.setenv(name, str(value))
    read_jobs_folder = service.admin.paths.check_jobs_folder

    def stopped_there(settings):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal's handler runs here
        read_jobs_folder(settings)

    def unhandled(signum, frame):
        raise Unhandled

    monkeypatch.setattr(service.admin.paths, "check_jobs_folder", stopped_there)
    umask, held = os.umask(0o022), len(serve._HELD)
    caller = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert main(["serve", "--host", "127.0.0.1", "--port", str(free_port())]) == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the caller's handler put back
    finally:
        signal.signal(signal.SIGTERM, caller)
        os.umask(umask)
        for fd in serve._HELD[held:]:  # the data folder's lock, held for the life of a real process
            os.close(fd)
        del serve._HELD[held:]
    assert capsys.readouterr().err.strip().splitlines()[-1] == "pluralign: error: stopped by SIGTERM"
    assert not data.exists()  # the start made it: undone
