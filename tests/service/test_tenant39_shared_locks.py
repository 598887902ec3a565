"""Session 39: one tenant's long DELETE never holds up another tenant's users.

The locks that order a user's DELETE against their writes (`Runtime.user_lock`: refits, stated
preferences, a chat's stored interaction) and the requests carrying one `Idempotency-Key`
(`Runtime.idempotency_lock`) were stripes shared by every tenant: 64 and 256 locks picked by
`hash((tenant, id))`. A DELETE holds its user's lock for all of its steps (stopping the user's jobs, the
store's purge, rewriting every population file), and an import sent with `Idempotency-Key` for a user whose
DELETE is still running holds its key's lock until that DELETE ends; so a user, or a key, of another tenant
that fell on the same stripe waited for them (one user in 64, one key in 256: a tenant sending a few hundred
keys at once held them all). Each tenant now has stripes of its own.

The tests pick, in this process, the other tenant's ids that shared a stripe with acme's under the old
layout, and hold acme's DELETE in its first step (a delete hook: the admin area's, which stops the user's
jobs, kills their workers and waits for them)."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.service.tiny import start_service


def same_old_stripe(stripes: int, theirs: tuple[str, str], prefix: str) -> str:
    """An id of tenant globex whose (tenant, id) fell on the stripe of `theirs` among `stripes` shared locks."""
    return next(f"{prefix}{i}" for i in range(100_000) if hash(("globex", f"{prefix}{i}")) % stripes == hash(theirs) % stripes)


@pytest.fixture
def held_delete(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    """A live service whose next DELETE stops in its first step until released: yields (service, entered, release)."""
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    entered, release = threading.Event(), threading.Event()

    def slow_jobs_stop(forget) -> int:
        entered.set()
        assert release.wait(60), "never released"
        return 0

    svc.runtime.delete_hooks.append(slow_jobs_stop)
    with server:
        try:
            yield svc, entered, release
        finally:
            release.set()


def delete_under_way(svc, acme: httpx.Client, entered: threading.Event) -> threading.Thread:
    """acme's user `leaving`, given one comparison, then their DELETE in a thread of its own, returned once it is in
    its held first step (`entered`, `held_delete`)."""
    r = acme.post("/v1/feedback", json={"type": "comparison", "user": "leaving", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
    assert r.status_code == 201, r.text

    def run() -> None:
        with svc.client("acme") as other:
            assert other.delete("/v1/users/leaving").status_code == 200

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert entered.wait(30), "the DELETE never began"
    return thread


def test_another_tenants_user_does_not_wait_for_a_delete_that_shared_its_lock(held_delete):
    svc, entered, release = held_delete
    neighbour = same_old_stripe(64, ("acme", "leaving"), "g")
    with svc.client("acme") as acme, svc.client("globex") as globex:
        deleting = delete_under_way(svc, acme, entered)
        try:
            r = globex.patch(f"/v1/users/{neighbour}/stated-preferences", json={"preferences": {"length": "less"}}, timeout=10)
        except httpx.ReadTimeout:
            raise AssertionError(f"globex's {neighbour} waited for acme's DELETE (10 s and more)") from None
        finally:
            release.set()
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        deleting.join(30)
        assert acme.get("/v1/users/leaving").status_code == 404


def test_another_tenants_idempotent_feedback_does_not_wait_for_an_import_that_shared_its_lock(held_delete):
    svc, entered, release = held_delete
    key = same_old_stripe(256, ("acme", "acme-chunk-1"), "globex-key-")
    with svc.client("acme") as acme, svc.client("globex") as globex:
        deleting = delete_under_way(svc, acme, entered)
        imported: list[httpx.Response] = []
        line = b'{"prompt": "Coffee?", "chosen": "Yes.", "rejected": "No."}\n'
        importer = threading.Thread(target=lambda: imported.append(acme.post(  # waits for the DELETE, as documented
            "/v1/users/leaving/import", content=line, headers={"Idempotency-Key": "acme-chunk-1"})), daemon=True)
        importer.start()
        try:
            importer.join(1.0)  # in the import's wait for the DELETE
            assert not imported, imported[0].text
            try:
                r = globex.post("/v1/feedback", json={"type": "comparison", "user": "gil", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."},
                                headers={"Idempotency-Key": key}, timeout=10)
            except httpx.ReadTimeout:
                raise AssertionError("globex's feedback waited for acme's import, which waits for acme's DELETE (10 s and more)") from None
        finally:
            release.set()
        assert r.status_code == 201, r.text
        deleting.join(30)
        importer.join(30)
        assert imported and imported[0].status_code == 201, imported and imported[0].text
        assert acme.get("/v1/users/leaving").json()["counts"]["preferences"] == 1  # the import, after the DELETE
