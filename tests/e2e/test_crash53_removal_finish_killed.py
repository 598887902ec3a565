"""A tenant's removal (`POST /admin/tenants/{tenant}/removal`) through `pluralign serve`, SIGKILLed in its last step
(`TenantRemovals._finish`): every user of the tenant deleted, its jobs purged (`_purge_jobs` returned), and its folders
(adapters), pooled priors, set-aside feedback and the `done` record not yet removed or written. tests/e2e/
test_tenant48_removal_killed.py kills it inside the first batch of its users' DELETEs; this is the other end.

The next start finishes the removal without the operator sending it again: the record says `done`, nothing of the
tenant's texts is left in the data folder, its keys are refused, and another tenant's rows and export are the same.
A guard: it held at once (the start's pass finds the record `running`, looks again, finds no user, and runs the last
step again, each part of it idempotent). The kill is a fault-injection hook of the test's own (`KILLED_IN_THE_FINISH`).
Slow (two starts of `pluralign serve`, ~60-90 s on two shared cores): `make test-crash`."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from tests.e2e.test_tenant48_removal_killed import MARKER, globex_rows, removal_done, removal_sent
from tests.files import files_holding

KILLED_IN_THE_FINISH = r"""
import os, signal, sys
from service.tenants import TenantRemovals

purge_jobs = TenantRemovals._purge_jobs

def killed(self, tenant):
    out = purge_jobs(self, tenant)
    if tenant == "acme":  # its users are deleted, its jobs purged; its folders and the `done` record not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return out

TenantRemovals._purge_jobs = killed
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_removal_killed_in_its_last_step_is_finished_at_the_next_start(tmp_path, tiny_pal_dir):
    from service.auth import KeyRing
    from tests.e2e.test_crash39_kills import NO_GENERATOR
    from tests.e2e.test_e2e_serve import ServeProcess

    data = tmp_path / "data"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PLURALIGN_DELETION_SWEEP_S": "1"}
    keys = KeyRing(data / "api_keys.json")
    acme_key, globex_key, admin_key = keys.issue("acme"), keys.issue("globex"), keys.issue("ops", admin=True)
    auth = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_IN_THE_FINISH, **env)
    try:
        with (httpx.Client(base_url=proc.url, timeout=60) as c, httpx.Client(base_url=proc.url, headers=auth(acme_key), timeout=60) as acme,
              httpx.Client(base_url=proc.url, headers=auth(globex_key), timeout=60) as globex):
            export, before = removal_sent(data, c, acme, globex, ("ann", "bob"), auth(admin_key))
        proc.killed(timeout=120)
    finally:
        proc.stop()
    removal = msgspec.json.decode(next((data / "tenant-removals").iterdir()).read_bytes())
    assert removal["state"] == "running", removal  # killed in its last step
    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)  # the removal is never sent again
    try:
        with httpx.Client(base_url=again.url, timeout=60) as c:
            removal = removal_done(c, auth(admin_key))
            assert removal["users_removed"] == 2, removal
            assert c.get("/admin/tenants/acme/users", headers=auth(admin_key)).json()["users"] == []
            assert c.get("/v1/users/ann/preferences", headers=auth(acme_key)).status_code == 401
            assert c.get("/v1/users/bea/export", headers=auth(globex_key)).content == export
    finally:
        again.stop()
    assert files_holding(data, MARKER, "acme/ann", "acme/bob") == []
    assert not (data / "adapters" / "acme").exists()
    assert globex_rows(data) == before
