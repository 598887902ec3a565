"""A tenant's removal (`POST /admin/tenants/{tenant}/removal`, `service.tenants`) through `pluralign serve`, the
process SIGKILLed in the middle of it: inside the first batch of its users' DELETEs (ann and bob, `delete_batch`),
right after the store deleted their rows (their claims, deletion records, adapters, population rows, journal
entries and the other users not reached yet). The next start finishes the removal
without the operator sending it again: nothing of the tenant is left in the data folder, its keys are refused, and
another tenant's rows are the same, byte for byte.

Slow (two starts of `pluralign serve`, ~60 s on two shared cores): `make test-tenant-removal`. The fast tests of
the same path (a removal stopped part way, finished at the next start: slow-marked too, ~4 s) are in
tests/service/test_tenant48_removal.py."""

from __future__ import annotations

import contextlib
import time

import httpx
import msgspec
import pytest

from tests.files import files_holding

KILLED_IN_THE_FIRST_BATCH = r"""
import os, signal, sys
import service.tenants
from pluralign.store.tables import Store

service.tenants.USERS_PER_LOOK = 2  # the removal's batches: ann and bob, then cat and dan
delete_users = Store.delete_users

def killed(self, tenant, user_ids):
    counts = delete_users(self, tenant, user_ids)
    if tenant == "acme" and len(user_ids) == 2:  # the batch's rows are gone; everything after them in it is not done
        os.kill(os.getpid(), signal.SIGKILL)
    return counts

Store.delete_users = killed
from training.cli import main
raise SystemExit(main(sys.argv[1:]))
"""

MARKER = "Narwhal-kedgeree-48t"  # acme's texts
KEPT = "Ocelot-piccalilli-48g"  # globex's


def globex_rows(data) -> dict[str, list]:
    """Every row of globex in every table, every column, in a fixed order (read while no service writes)."""
    from pluralign.store.location import connect
    from pluralign.store.tenants import TIME_COLUMNS

    db = connect(str(data / "lancedb"))
    out = {}
    for name in TIME_COLUMNS:
        rows = db.open_table(name).search().where("tenant = 'globex'").limit(None).to_arrow().to_pylist()
        out[name] = sorted(rows, key=lambda r: msgspec.json.encode(r, order="sorted"))
    return out


def comparisons(client, user: str, marker: str, n: int = 2) -> None:
    for i in range(n):
        r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Breakfast {i}? {marker}",
                                              "chosen": f"Porridge {i}. {marker}", "rejected": "Toast."})
        assert r.status_code == 201, r.text


def removal_sent(data, c: httpx.Client, acme: httpx.Client, globex: httpx.Client, users: tuple[str, ...],
                 admin: dict) -> tuple[bytes, dict[str, list]]:
    """Two comparisons from each of acme's `users` (its texts marked MARKER) and from globex's bea (KEPT), moved into
    the table and refitted; then acme's removal sent with the `admin` headers (the test's hook kills the service in
    it). Returns bea's export and `globex_rows` as they were before the removal."""
    for user in users:
        comparisons(acme, user, MARKER)
    comparisons(globex, "bea", KEPT)
    assert globex.get("/v1/users/bea/preferences").json()["total"] == 2  # moved into the table
    assert acme.get(f"/v1/users/{users[-1]}/preferences").json()["total"] == 2
    deadline = time.monotonic() + 60  # the background refits ran (else the next start runs them: bea's row changes)
    while (data / "refits-waiting.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    export = globex.get("/v1/users/bea/export").content
    before = globex_rows(data)
    with contextlib.suppress(httpx.TransportError):  # killed before or after it answers
        r = c.post("/admin/tenants/acme/removal", headers=admin)
        assert r.status_code == 202, r.text
    return export, before


def removal_done(c: httpx.Client, headers: dict) -> dict:
    """acme's removal record (`GET /admin/tenants/acme/removal`) once it says `done`; it must within 120 s."""
    deadline = time.monotonic() + 120
    while (removal := c.get("/admin/tenants/acme/removal", headers=headers).json())["state"] != "done":
        assert time.monotonic() < deadline, removal
        time.sleep(0.2)
    return removal


@pytest.mark.slow
def test_a_removal_killed_inside_a_users_delete_is_finished_at_the_next_start(tmp_path, tiny_pal_dir):
    from service.auth import KeyRing
    from tests.e2e.test_crash39_kills import NO_GENERATOR
    from tests.e2e.test_e2e_serve import ServeProcess

    data = tmp_path / "data"
    env = {"PLURALIGN_CACHE_DIR": str(tmp_path / "cache"), "PLURALIGN_DELETION_SWEEP_S": "1"}
    keys = KeyRing(data / "api_keys.json")
    acme_key, globex_key, admin_key = keys.issue("acme"), keys.issue("globex"), keys.issue("ops", admin=True)
    auth = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    proc = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, code=KILLED_IN_THE_FIRST_BATCH, **env)
    try:
        with (httpx.Client(base_url=proc.url, timeout=60) as c, httpx.Client(base_url=proc.url, headers=auth(acme_key), timeout=60) as acme,
              httpx.Client(base_url=proc.url, headers=auth(globex_key), timeout=60) as globex):
            export, before = removal_sent(data, c, acme, globex, ("ann", "bob", "cat", "dan"), auth(admin_key))
        proc.killed(timeout=120)
    finally:
        proc.stop()
    removal = msgspec.json.decode(next((data / "tenant-removals").iterdir()).read_bytes())
    assert removal["state"] == "running" and removal["users_removed"] == 0, removal
    assert files_holding(data, MARKER)  # killed part way: acme's texts are still there
    kept = globex_rows(data)
    assert kept == before

    again = ServeProcess(data, NO_GENERATOR, tiny_pal_dir, **env)  # the removal is never sent again
    try:
        with httpx.Client(base_url=again.url, timeout=60) as c:
            removal = removal_done(c, auth(admin_key))
            assert removal["users_removed"] >= 2, removal  # the killed batch's users are finished by their journal entries
            assert c.get("/admin/tenants/acme/users", headers=auth(admin_key)).json()["users"] == []
            assert c.get("/v1/users/ann/preferences", headers=auth(acme_key)).status_code == 401
            assert c.get("/v1/users/bea/export", headers=auth(globex_key)).content == export
            deadline = time.monotonic() + 60  # the killed DELETE's journal entry: finished by its own pass too
            while list((data / "deletes-in-progress").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        again.stop()
    assert files_holding(data, MARKER) == []
    assert list((data / "deletes-in-progress").iterdir()) == []
    assert not (data / "adapters" / "acme").exists()
    assert globex_rows(data) == kept
