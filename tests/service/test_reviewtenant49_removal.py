"""Review of session 49's tenant removal in batches (`service.tenants.TenantRemovals.run`): the record counts a
batch's users as removed as soon as the batch is done, not at the next look only, so a stop between the two (the
service stopping while a batch runs, as a rolling restart does) loses no user from `users_removed`."""

from __future__ import annotations

import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

pytestmark = pytest.mark.usefixtures("short_read_margin")


def test_a_service_stopped_while_a_batch_runs_counts_its_users_removed(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm,
                                                                       monkeypatch):
    """acme's 3 users (an adapter folder each) go in one batch; the service is asked to stop while it runs (a rolling restart). The batch
    ends, the removal stops before `done`, and its record says 3 users removed beside their 3 adapter files (before:
    0 users removed; the next start found none of them, so the done record said 0 of 3)."""
    from service.tenants import TenantRemovals, read_removal

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt = svc.runtime
    for user in ("ann", "bob", "cat"):  # what a trained adapter leaves (no row in the store: no purge, a fast test)
        folder = rt.adapters.registry.folder("acme", user)
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    delete_users = TenantRemovals._delete_users
    stopped: list[TenantRemovals] = []

    def stop_meanwhile(self, tenant, users):
        counts = delete_users(self, tenant, users)
        self._stop.set()  # what `stop()` does, the batch running
        self._wake.set()
        stopped.append(self)
        return counts

    monkeypatch.setattr(TenantRemovals, "_delete_users", stop_meanwhile)
    with server, svc.client("admin") as admin:
        assert admin.post("/admin/tenants/acme/removal").status_code == 202
        deadline = time.monotonic() + 60
        while not stopped:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        thread = stopped[0]._thread
        thread.join(30)  # the removal's thread ends, as `stop()` waits for it
        assert not thread.is_alive()
        removal = read_removal(rt.settings.data_path, "acme")
        assert removal.state == "running" and removal.users_removed == 3 and removal.counts["adapter_files"] == 3, removal
        assert rt.adapters.registry.holders("acme") == set()


def test_a_batch_killed_before_a_restart_is_finished_by_the_removal_in_one_batch(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                                 minilm, monkeypatch):
    """A process killed inside a batch of acme's removal leaves a journal entry for each of its users (12 here, more
    than the 8 DELETEs a tenant may have waiting; an adapter folder each, no row: no purge, a fast test). At the next
    start the running removal takes them up in one batch and is done. Before: the journal's pass submitted each of
    them as a DELETE of its own, the tenant's 8 places in the DELETEs' queue were full, and the removal waited
    ('waiting for a turn of the DELETEs') until a later pass of both (`deletion_sweep_s`); with rows, a killed
    256-user batch took minutes, one user's purge after another."""
    from service.tenants import begin_removal
    from tests.service.test_tenant48_removal import wait_removed

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600)
    rt = svc.runtime
    users = [f"u{i:02d}" for i in range(12)]
    for user in users:
        folder = rt.adapters.registry.folder("acme", user)
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
    begin_removal(rt.settings.data_path, rt.keys, "acme")
    for entry in rt.delete_journal.begin_many("acme", users, time.time()):  # what the killed process left
        rt.delete_journal.release(entry)
    with server, svc.client("admin") as admin:
        removal = wait_removed(admin, "acme", timeout=20)
        assert removal["users_removed"] == 12 and removal["counts"]["adapter_files"] == 12, removal
        assert rt.delete_journal.pending() == [] and rt.adapters.registry.holders("acme") == set()
