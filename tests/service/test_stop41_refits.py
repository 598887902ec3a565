"""The service's stop ends its background refits: those queued behind the feedback never run and the one
running ends before the app's shutdown returns, so nothing reads or writes the tables of a stopped service.

Before: the refit queue (`Runtime.background`) was left to run after the shutdown. A throwaway test of many
tenants' feedback, stopped at once, removed its data folder under the refits still queued, which logged
"background refit of a user of tenant t11 failed: table `users` ... cannot be read: a file of it is damaged or
unreadable" for files that were only gone (51 of 60 refits still queued after a stop, reproduced)."""

from __future__ import annotations

import json
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
        assert rt.pending_refits  # moved while the log still had a backlog wait in `dropped_refits`: kept at the stop)
    stopped = _records(rt)  # the app's shutdown has returned
    rt.background.submit(lambda: None).result(timeout=60)  # whatever was still queued has run by now
    assert _records(rt) == stopped  # no refit wrote a user after the stop
    assert running.is_set()
    # and a refit that never returns (a store call hung) does not keep the process from exiting once the stop gave up
    # on it: before, the refit thread was a ThreadPoolExecutor's, which the interpreter joins at exit (a process
    # whose refit waited forever, reproduced: killed 60 s after "stopping without it", not exited)
    assert [t.name for t in threading.enumerate() if t.name.startswith("refit") and not t.daemon] == []


def test_refits_dropped_at_a_stop_run_at_the_next_start_before_anyone_reads(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """Dropped is not lost: the users whose refits a stop dropped are refitted once the service is back, without
    waiting for their next read. Before: nothing queued them again, so until each came back (many never do) the users
    table held no row for a new user, or the row fitted before their last feedback. What reads that table as it is,
    not through `user_weights`, saw it: the fairness audit's user attributes and `pal_prototype` groups, the
    population a new user is compared against, the pooled prior, the export's `user` line; and a tie (not a strict
    comparison, so the row did not look stale) left the attributes it carried out of GET /v1/users/{user} for good."""
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    running = threading.Event()
    with server, svc.client("acme") as c:
        seen = c.post("/v1/feedback", json={"type": "comparison", "user": USERS[0], "prompt": "p", "chosen": "a", "rejected": "b"})
        assert seen.status_code == 201, seen.text
        assert c.get(f"/v1/users/{USERS[0]}").status_code == 200  # a row, fitted on that comparison
        rt.background.submit(running.wait)  # the refit thread busy: what follows queues behind it
        bodies = [{"type": "comparison", "user": user, "prompt": "q", "chosen": "c", "rejected": "d"} for user in USERS[1:]]
        bodies.append({"type": "comparison", "user": USERS[0], "prompt": "q", "chosen": "e", "rejected": "f", "tie": True,
                       "attributes": {"segment": "north"}})  # not a strict comparison: their row does not look stale
        for body in bodies:
            r = c.post("/v1/feedback", json=body)
            assert r.status_code == 201, r.text
            rt.ingest.flush()  # moved with no backlog left: its refit is queued (`after_move`)
        assert len(rt.pending_refits) == len(USERS)
        gone = c.post("/v1/feedback", json={"type": "comparison", "user": "stop41-gone", "prompt": "q", "chosen": "c", "rejected": "d"})
        assert gone.status_code == 201, gone.text
        rt.ingest.flush()
        assert c.delete("/v1/users/stop41-gone").status_code == 200  # their refit still queued: never named after the stop
        threading.Thread(target=lambda: (rt.refits_stopped.wait(60), running.set()), daemon=True).start()  # ends in the stop
    assert rt.store.get_user("acme", USERS[1]) is None  # dropped, as the stop says
    kept = data / "refits-dropped.json"
    assert json.loads(kept.read_bytes()) == [["acme", user] for user in USERS]

    server, again = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        again.runtime.wait_for_background()
        stored = {user: again.runtime.store.get_user("acme", user) for user in USERS}
        assert {user: r and (r.n_preferences, r.pal_logits is not None) for user, r in stored.items()} == {
            user: (1, True) for user in USERS}
        assert stored[USERS[0]].attributes == {"segment": "north"}
        assert not kept.exists()
        assert again.runtime.store.get_user("acme", "stop41-gone") is None
        with again.client("acme") as c:
            assert c.get(f"/v1/users/{USERS[0]}").json()["attributes"] == {"segment": "north"}
