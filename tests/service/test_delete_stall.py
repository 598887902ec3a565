"""DELETEs that wait for the store's maintenance lease (another replica's turn) must not stall
anyone else: they wait off the request threads, tenants in turn (`rt.deletes`), past
`tenant_deletes` a tenant's are refused with 429, and while one waits it holds no user's lock."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from pluralign.store.lease import Lease
from tests.service.test_break20_delete import give_comparisons
from tests.service.tiny import start_service

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a DELETE's wait for readers (store_sync_ms set): tests/service/conftest.py


def until(condition, timeout: float = 60.0) -> None:
    """Until `condition()` holds (AssertionError after `timeout` seconds, which only a failing one waits)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.02)


def test_a_tenants_deletes_waiting_for_the_lease_never_stall_another_tenant(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Before: each DELETE waited (up to 10 minutes, one after another behind the process's
    maintenance lock) in a request thread; 45 of them took every thread and another tenant's read
    timed out."""
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, store_sync_ms=0)
    with server, svc.client("acme") as acme, svc.client("globex") as globex:
        give_comparisons(globex, "gus", "tea", n=2)
        svc.runtime.wait_for_background()
        answers: list[tuple[str, httpx.Response, float]] = []
        turns: list[str] = []  # the tenants whose DELETE began its steps (in the store's turn), in order
        begin = svc.runtime.delete_journal.begin
        svc.runtime.delete_journal.begin = lambda tenant, *args: (turns.append(tenant), begin(tenant, *args))[1]

        def send(tenant: str, user: str) -> None:
            with svc.client(tenant) as c:
                r = c.delete(f"/v1/users/{user}", timeout=120)
            answers.append((tenant, r, time.monotonic()))

        with Lease(svc.runtime.store.lease.table):  # another replica's long turn
            senders = [threading.Thread(target=send, args=("acme", f"u{i}"), daemon=True) for i in range(45)]
            for sender in senders:
                sender.start()
            deletes, kept = svc.runtime.deletes, svc.runtime.settings.tenant_deletes
            # every DELETE answered 429 or queued (one running, waiting for the lease): waited for, where 3 s
            # were slept, which a loaded 2-core machine may not answer 45 requests in
            until(lambda: len(answers) == 45 - kept and sum(deletes.stats()[k] for k in ("running", "waiting")) == kept)
            r = globex.get("/v1/users/gus/preferences", timeout=5)  # before: httpx.ReadTimeout
            assert r.status_code == 200 and r.json()["total"] == 2
            refused = [r for t, r, _ in answers if r.status_code == 429]
            assert len(refused) == 45 - svc.runtime.settings.tenant_deletes, [r.status_code for _, r, _ in answers]
            assert all(int(r.headers["retry-after"]) >= 1 and "deletes are busy" in r.text for r in refused)
            late = threading.Thread(target=send, args=("globex", "gus"), daemon=True)
            late.start()
            # started at once beside acme's running one (since session 50 a DELETE of each tenant runs at once, up to
            # `DELETE_WORKERS`; before, it was queued behind acme's), both waiting for the store's turn
            until(lambda: deletes.stats()["running"] == 2 and deletes.stats()["waiting"] == kept - 1)
        for sender in [*senders, late]:
            sender.join(60)
        done = sorted(answers, key=lambda a: a[2])
        assert [r.status_code for t, r, _ in done if t == "globex"] == [200]
        # tenants in turn: globex's DELETE, sent behind acme's 8, waited for the one running and at most one more of
        # acme's (told by their turns at the store: since session 50 globex's answer comes after the removal of the old
        # versions its purge left, outside its turn, while acme's next ones, of no one, take theirs)
        assert turns.index("globex") <= 2, turns
        assert {r.status_code for t, r, _ in done if t == "acme" and r.status_code != 429} == {404}  # none of them existed
        assert globex.get("/v1/users/gus/preferences").status_code == 404
        assert acme.delete("/v1/users/nobody").status_code == 404  # and DELETEs go through again


def test_a_delete_waiting_for_the_lease_holds_no_users_lock(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Before: the DELETE took the user's lock, then waited for the lease, so a PATCH of the user (and
    of anyone sharing the lock's stripe) waited as long. Now the PATCH answers at once and the DELETE,
    once the lease is free, removes what it wrote too."""
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, store_sync_ms=0)
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        svc.runtime.wait_for_background()
        answer = {}
        with Lease(svc.runtime.store.lease.table):
            deleting = threading.Thread(target=lambda: answer.update(r=acme.delete("/v1/users/ann", timeout=60)), daemon=True)
            deleting.start()
            until(lambda: svc.runtime.deletes.stats()["running"] == 1)  # begun (slept 1 s for before)
            assert "r" not in answer  # waiting for the lease
            with svc.client("acme") as other:
                r = other.patch("/v1/users/ann/stated-preferences", json={"preferences": {"length": "less"}}, timeout=5)
            assert r.status_code == 200, r.text
        deleting.join(60)
        assert answer["r"].status_code == 200, answer["r"].text
        assert answer["r"].json()["deleted"]["preferences"] == 2
        assert acme.get("/v1/users/ann").status_code == 404
        assert acme.get("/v1/users/ann/stated-preferences").json()["preferences"] == {}
