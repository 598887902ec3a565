"""Session 55: an audit of one tenant moving its backlog of feedback into the table never stalls another tenant's.

An audit first moves every comparison of the tenant it audits from the feedback log into the table
(`Admin.submit` -> `Ingestor.flush(tenant)`). That flush held the feedback worker's lock over all of the tenant's
waiting rows: a tenant at its backlog bound (50,000 rows, 100 imports) kept it minutes (a POST /admin/jobs of an
audit of the flooding tenant took 145 s in benchmarks/tenant_flood.py), and meanwhile the worker moved no other
tenant's rows, whatever turns it takes (`Ingestor._next_batch`): their imports stayed unreadable (503 "still being
stored") for as long, and an audit of another tenant waited for that flush to end whatever it had to move itself.
Now the flush gives the other tenants a batch of the worker's between two of its own, so their rows wait for at most
one batch of the audited tenant's, as they do for the worker's, and another audit's flush that finds none of its rows
waiting any more returns without waiting for the lock."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_tenant39_request_threads import HOLD, HeldEncoder
from tests.service.tiny import start_service


def import_body(tag: str, n: int) -> bytes:
    return b"\n".join(msgspec.json.encode({"prompt": f"Question {tag} {i}?", "chosen": f"Short answer {tag} {i}.",
                                           "rejected": f"A long and rambling answer {tag} {i}."}) for i in range(n))


@pytest.mark.slow  # a service of its own (5.7 s at load 10 on 2 shared cores): make test-tenant-removal
def test_an_audit_moving_one_tenants_backlog_lets_another_tenants_rows_move_between_its_batches(
    tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch,
):
    """The worker held (its embedding thread busy, as at nice 19 on a loaded machine), acme has two records waiting and
    globex two imports of 15 rows (30: more than a read moves itself, 20 here: `READ_INLINE_ROWS`, 500 served, cut so
    that the test embeds little). An audit of acme moves acme's first record, and
    its second is held in the encoder: meanwhile globex's profile is read (200), one of its imports moved by the
    audit's flush in between; and an audit of globex is queued (201). Before, the flush went on to acme's second record,
    globex's 30 rows waited behind all of acme's backlog, and its profile was a 503 ("still being stored") until the
    audit's flush ended; with that fixed, globex's audit still waited for acme's flush to let go of the worker's lock."""
    from service.users import services

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(services, "READ_INLINE_ROWS", 20)
    encoder = HeldEncoder(minilm)
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, encoder, admin_handlers=ADMIN_HANDLERS,
                                deletion_sweep_s=3600, ingest_batch=1)
    rt = svc.runtime
    worker_free = threading.Event()
    # the worker's embedding thread runs this first: the worker embeds none of its batches until it is set
    holder = threading.Thread(target=rt.ingest._low.run, args=(worker_free.wait, 60), daemon=True)
    audit: list = []
    with server, svc.client("acme") as acme, svc.client("globex") as globex, svc.client("admin") as admin, \
            svc.client("admin") as admin_b:
        holder.start()
        for i, text in enumerate(("Tea or coffee?", f"Tea or coffee {HOLD}?")):
            r = acme.post("/v1/feedback", json={"type": "comparison", "user": f"ann{i}", "prompt": text,
                                                "chosen": "Tea.", "rejected": "Coffee."})
            assert r.status_code == 201, r.text
        for part in ("one", "two"):
            r = globex.post("/v1/users/gus/import", content=import_body(part, 15), headers={"Content-Type": "application/x-ndjson"})
            assert r.status_code in (200, 201), r.text
        assert (rt.ingest.pending_rows("acme"), rt.ingest.pending_rows("globex")) == (2, 30)
        assert globex.get("/v1/users/gus").status_code == 503  # 30 rows waiting: more than a read moves itself

        def audit_acme() -> None:
            audit.append(admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "acme"}}))

        auditing = threading.Thread(target=audit_acme, daemon=True)
        try:
            auditing.start()
            deadline = time.monotonic() + 60
            while encoder.held < 1 and time.monotonic() < deadline:  # the flush reached acme's second record
                time.sleep(0.02)
            assert encoder.held == 1 and not audit, (encoder.held, audit)
            r = globex.get("/v1/users/gus")
            during = (r.status_code, rt.ingest.pending_rows("acme"), encoder.held, bool(audit))
            # an audit of globex meanwhile: what it must move, the acme audit's turn moved; it does not wait for that flush
            other = threading.Thread(target=lambda: audit.append(admin_b.post("/admin/jobs", json={
                "kind": "audit", "params": {"group_by": "segment", "tenant": "globex"}})), daemon=True)
            other.start()
            other.join(30)
            globex_audit = (len(audit), encoder.held)
        finally:
            encoder.release.set()
            worker_free.set()
            auditing.join(60)
        assert during == (200, 1, 1, False), (during, r.text[:300])  # served while the audit's flush still held acme's record
        assert globex_audit == (1, 1), globex_audit  # globex's audit answered while acme's flush still held its record
        assert [a.status_code for a in audit] == [201, 201], [a.text for a in audit]
        assert [a.json()["params"]["tenant"] for a in audit] == ["globex", "acme"]
        for queued in audit:
            assert admin.post(f"/admin/jobs/{queued.json()['id']}/cancel").status_code == 200
        assert globex.get("/v1/users/gus").json()["counts"]["preferences"] == 30, "globex's rows all stored"
