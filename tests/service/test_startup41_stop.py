"""What a stopped service leaves (startup41): the audits' members index (`service.admin.audit_members`, SQLite in
WAL mode) was never closed at the app's shutdown, so its `-wal` and `-shm` files stayed beside it after every stop
(and the write-ahead log's pages with them), until the next start opened it again. Nor is the heap it froze at its
start (`service.heap`) left frozen: the last stop of the process hands it back to the collector."""

from __future__ import annotations

import gc
import os
import signal
import time

import pytest

import service.heap
from pluralign.store.deletions import key_hash
from service.admin.controllers import ADMIN_HANDLERS
from service.admin.services import AUDIT_MEMBERS_INDEX
from tests.service.test_break20_delete import GONE
from tests.service.test_live37_audit_delete_leaves_nothing import audit_of
from tests.service.tiny import free_port, start_service
from tests.serving import left_as_found


def _thawed(serving: int) -> bool:
    """The services of the process serving are the `serving` of before a start (`service.heap`'s count), and, when
    none serves, nothing is frozen: the app's stop step found what its start step put into the app's state (review
    rest61: the two named one key, `heap_frozen`), or its cycles stayed out of every collection for the process's life."""
    return service.heap._serving == serving and (serving > 0 or gc.get_freeze_count() == 0)


# an audit job over four users, two starts and a DELETE (~1.3-2 CPU-s); fast: tests/service/test_tail61a_stop.py (the stop
# folds the log in, what was indexed kept) and test_live37_audit_delete_leaves_nothing.py (a DELETE's use of the index)
@pytest.mark.slow
def test_a_stopped_service_leaves_no_write_ahead_log_of_the_audit_index_and_deletes_after_a_restart(serve, tiny_generator_dir,
                                                                                                   tiny_pal_dir, minilm):
    serving = service.heap._serving  # (0 unless another service of this process serves)
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    index = data / "jobs" / AUDIT_MEMBERS_INDEX
    with server, svc.client("acme") as acme:
        assert service.heap._serving == serving + 1 and gc.get_freeze_count() > 0  # its start froze the heap
        audit_of(server, svc, acme)
        assert index.with_name(index.name + "-wal").exists()  # open, in WAL mode: what the stop must fold back in
    assert sorted(p.name for p in index.parent.glob(AUDIT_MEMBERS_INDEX + "*")) == [AUDIT_MEMBERS_INDEX]
    assert _thawed(serving), "the stopped service left the heap frozen"
    again, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=3600)
    with again, svc.client("acme") as acme:
        members = again.server.config.app.state.admin.audit_members
        assert members.audits_of([key_hash(f"acme/{GONE}")]) == {"audit-live"}  # what the first run indexed, kept
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert members.audits_of([key_hash(f"acme/{GONE}")]) == set()
    assert sorted(p.name for p in index.parent.glob(AUDIT_MEMBERS_INDEX + "*")) == [AUDIT_MEMBERS_INDEX]
    assert _thawed(serving), "the stopped service left the heap frozen"


class Unhandled(Exception):
    """The SIGTERM reached the caller's handler: `pluralign serve` had none of its own during its start."""


def test_a_sigterm_during_serves_start_undoes_it_and_exits_143(tmp_path, tiny_generator_dir, tiny_pal_dir, monkeypatch, capsys):
    """The mechanism, in-process (tests/e2e/test_startup41_stop_at_start.py: a real process, its generation child):
    SIGTERM comes while `start` reads the jobs folder, after it made the data folder and before any model loads."""
    import service.admin.paths
    from training.cli import main

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
    caller = signal.signal(signal.SIGTERM, unhandled)
    try:
        with left_as_found():
            assert main(["serve", "--host", "127.0.0.1", "--port", str(free_port())]) == 143
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the caller's handler put back
    finally:
        signal.signal(signal.SIGTERM, caller)
    assert capsys.readouterr().err.strip().splitlines()[-1] == "pluralign: error: stopped by SIGTERM"
    assert not data.exists()  # the start made it: undone


@pytest.mark.slow
def test_a_stop_once_the_models_loaded_ends_the_generation_process_and_the_ingest_worker(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                        monkeypatch):
    """Ctrl-C (or SIGTERM, raised as Stopped by the CLI) while `create_app` builds the app around the runtime it
    built: the generation process was left running until the interpreter's exit, the ingest worker with it.
    Slow (a generation process started, ~10 s): `make test-all`."""
    import service.app
    from service.app import create_app
    from service.settings import Settings

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    built = []

    def interrupted(app):
        built.append(app.state.runtime)
        raise KeyboardInterrupt

    monkeypatch.setattr(service.app, "install_openapi", interrupted)  # the app's last step
    settings = Settings(data_dir=str(tmp_path / "data"), generator=str(tiny_generator_dir), pal_dir=str(tiny_pal_dir), generation_process=True)
    with pytest.raises(KeyboardInterrupt):
        create_app(settings)
    (runtime,) = built
    child = runtime.generator._process
    assert child.exitcode is not None, f"generation process {child.pid} left running"  # ended and reaped (joined)
    assert not runtime.ingest._thread.is_alive()
