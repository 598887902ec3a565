"""A DELETE and the admin area's population snapshots (privacy session 40): each snapshot is every stored comparison
when a PAL or EM job was queued, and they pile up until their jobs' retention. A DELETE read every one whole, and a
deletion record of another replica (by hash) decoded and hashed every row of every one (benchmarks/delete_population.py:
2.3 s for 40 snapshots of 20,000 rows, none holding the user). Now each snapshot has a users file beside it
(`comparisons-<ms>.jsonl.users`: the hash of each user it holds), and only the snapshots it names the user in are read."""

from __future__ import annotations

import time

from pluralign.store.deletions import Forget, key_hash, new_deletion
from service.admin import services as admin_services
from service.admin.controllers import ADMIN_HANDLERS
from tests.service.test_break20_delete import GONE
from tests.service.test_data34_delete_audit import give
from tests.service.test_live37_audit_delete_leaves_nothing import holders


def snapshots_with_and_without(server, acme) -> tuple:
    """(admin, a snapshot of ann alone, a snapshot of ann and GONE), as population jobs queued before and after
    GONE's first comparisons take them."""
    admin = server.server.config.app.state.admin
    give(acme, "ann", "s1", n=2)
    assert acme.get("/v1/users/ann/preferences").json()["total"] == 2
    without = admin.population_snapshot()
    time.sleep(0.002)  # snapshots are named by the millisecond
    give(acme, GONE, "s1", n=2)
    assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
    return admin, without, admin.population_snapshot()


def test_a_delete_reads_only_the_population_snapshots_that_hold_its_user(serve, monkeypatch):
    """Before: `_drop_rows` read both snapshots (the one without GONE too, to search its bytes for the name)."""
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    read, original = [], admin_services._drop_rows
    with server, svc.client("acme") as acme:
        admin, without, holding = snapshots_with_and_without(server, acme)
        monkeypatch.setattr(admin_services, "_drop_rows", lambda path, *args: read.append(path) or original(path, *args))
        r = acme.delete(f"/v1/users/{GONE}")
        assert r.status_code == 200, r.text
        assert read == [holding]
        assert GONE not in holding.read_text() and "acme/ann" in holding.read_text() and "acme/ann" in without.read_text()
        # another replica's record of a user in neither (by hash) reads neither
        read.clear()
        with svc.runtime.population_lock:
            admin.forget_in_population(Forget.of([new_deletion("acme", "nobody", time.time(), 1, began_at=time.time())]))
        assert read == []


def test_the_users_files_keep_no_hash_of_a_deleted_user_and_a_record_by_hash_finds_them(serve):
    data, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    gone, ann = key_hash(f"acme/{GONE}"), key_hash("acme/ann")
    with server, svc.client("acme") as acme:
        admin, without, holding = snapshots_with_and_without(server, acme)
        users = admin_services.snapshot_users_path
        assert users(without).read_text().split()[:-3] == [ann]
        assert sorted(users(holding).read_text().split()[:-3]) == sorted([ann, gone])
        # a snapshot an earlier release wrote has no users file: read whole, as before, and given one
        older = holding.with_name("comparisons-1.jsonl")
        older.write_bytes(holding.read_bytes())
        # another replica's deletion record names GONE by hash only
        with svc.runtime.population_lock:
            assert admin.forget_in_population(Forget.of([new_deletion("acme", GONE, time.time(), 1, began_at=time.time())])) == 2
        assert users(holding).read_text().split()[:-3] == [ann] and users(older).read_text().split()[:-3] == [ann]
        assert GONE not in holding.read_text() + older.read_text()
        # a users file whose snapshot is gone goes at the next DELETE
        older.unlink()
        assert acme.delete("/v1/users/ann").status_code == 200
        assert not users(older).exists()
    assert holders(data, gone.encode()) == [] and holders(data, ann.encode()) == []
