"""The service's stop ends its background refits: those queued behind the feedback never run and the one
running ends before the app's shutdown returns, so nothing reads or writes the tables of a stopped service.

Before: the refit queue (`Runtime.background`) was left to run after the shutdown. A throwaway test of many
tenants' feedback, stopped at once, removed its data folder under the refits still queued, which logged
"background refit of a user of tenant t11 failed: table `users` ... cannot be read: a file of it is damaged or
unreadable" for files that were only gone (51 of 60 refits still queued after a stop, reproduced)."""

from __future__ import annotations

import threading
import time

from tests.service.tiny import start_service

USERS = [f"stop41-{i}" for i in range(5)]


def _records(rt) -> dict:
    return {user: (r.updated_at, r.n_preferences) if (r := rt.store.get_user("acme", user)) else None for user in USERS}


def test_refits_queued_when_the_service_stops_never_run_after_it(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    running = threading.Event()  # a refit that is running when the stop begins, ended by the stop (or after it)

    def end_when_stopping() -> None:
        while server.thread.is_alive() and not getattr(rt, "refits_stopped", running).is_set():
            time.sleep(0.005)
        running.set()

    with server:
        rt.background.submit(running.wait)
        threading.Thread(target=end_when_stopping, daemon=True).start()
        with svc.client("acme") as c:
            for user in USERS:
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "p", "chosen": "a", "rejected": "b"})
                assert r.status_code == 201, r.text
        rt.ingest.flush()  # in the table: the users' refits are queued behind the running one (those of a batch
        assert rt.pending_refits  # moved while the log still had a backlog were skipped: a read refits them)
    stopped = _records(rt)  # the app's shutdown has returned
    rt.background.submit(lambda: None).result(timeout=60)  # whatever was still queued has run by now
    assert _records(rt) == stopped  # no refit wrote a user after the stop
    assert running.is_set()
