"""The users table is brought up to date with what was moved during a backlog, and an export's `user` line is.

Before: `after_move` skipped the background refits of the rows a batch moved while the feedback log still had a
backlog, and recorded those users nowhere, so their row in the users table stayed the one of before that feedback
(or none) until their own next read, for good for a user who never came back; and the export's `user` line read
that row as it was. What reads the table as it is (the fairness audit's groups, the population a new user is compared
with, the pooled prior, an export) saw old weights, counts and attributes.

The backlog: the worker paused (`Ingestor.paused`) or another user's rows held in the log (`Ingestor.held`) while
the feedback is sent, then a read that moves the user's own rows (the preferences page, which refits nothing; the
export) while the other rows still wait, as a read does under load."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path_factory.mktemp("refit42") / "data", tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield svc


def _send(client, user: str, prompt: str, **extra) -> None:
    r = client.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": prompt, "chosen": "a", "rejected": "b", **extra})
    assert r.status_code == 201, r.text


def _stored(rt, user: str) -> tuple[int, dict] | None:
    record = rt.store.get_user("acme", user)
    return record and (record.n_preferences, record.attributes)


def test_refits_skipped_during_a_backlog_run_once_it_clears_never_for_a_user_deleted_meanwhile(service):
    rt = service.runtime
    with service.client() as c:
        for user in ("r42-quiet", "r42-gone"):
            _send(c, user, "first")
            assert c.get(f"/v1/users/{user}").status_code == 200  # a row fitted on that comparison
        with rt.ingest.paused():  # the worker moves nothing: the records wait in the log
            _send(c, "r42-quiet", "second", attributes={"segment": "north"})
            _send(c, "r42-gone", "second")
            _send(c, "r42-busy", "third")
            for user in ("r42-quiet", "r42-gone"):  # their own rows moved by a read that refits nothing, the others waiting
                assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 2
            assert _stored(rt, "r42-gone") == (1, {})
            waiting = rt.settings.data_path / "refits-waiting.jsonl"  # a crash now finds their refits owed
            assert "r42-gone" in waiting.read_text() and "r42-quiet" in waiting.read_text()
            assert c.delete("/v1/users/r42-gone").status_code == 200
            # nothing of theirs left behind (reviewrp43; before, their id stayed on disk until the backlog cleared and
            # the refit queue drained, for good while it never did), and nothing owed lost for the others
            assert "r42-gone" not in waiting.read_text() and "r42-quiet" in waiting.read_text()
        rt.wait_for_background()  # the worker moves r42-busy's record: the log is empty
        assert _stored(rt, "r42-busy") == (1, {})
        assert _stored(rt, "r42-quiet") == (2, {"segment": "north"})  # before: (1, {}) until they came back
        assert _stored(rt, "r42-gone") is None  # not refitted back into existence
        assert c.get("/v1/users/r42-gone").status_code == 404
        assert not rt.dropped_refits


def test_an_export_user_line_reflects_the_feedback_just_sent(service):
    rt = service.runtime
    with service.client() as c:
        _send(c, "r42-exporter", "first")
        assert c.get("/v1/users/r42-exporter").status_code == 200
        with rt.ingest.paused():  # a backlog: the background refit of the export's user is not run before it reads
            _send(c, "r42-exporter", "second", attributes={"plan": "pro"})
            _send(c, "r42-other", "third")
            lines = [json.loads(line) for line in c.get("/v1/users/r42-exporter/export").text.splitlines()]
        rt.wait_for_background()
    user = next(line for line in lines if line["type"] == "user")
    assert (user["n_preferences"], user["attributes"]) == (2, {"plan": "pro"})  # before: 1 and {}
    assert sum(line["type"] == "preference" for line in lines) == 2


def test_users_still_waiting_for_the_backlog_at_a_stop_are_refitted_at_the_next_start(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A clean stop during a backlog keeps the waiting users in refits-dropped.json (refit42); a crash then (kill -9:
    the data folder as it is at that moment, copied while the service runs) keeps them too (replicas43: before, the
    crashed copy's next start refitted the user whose record the log replayed, and never the one whose rows were
    moved already: their row stayed None)."""
    data = tmp_path / "data"
    server, svc = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    rt = svc.runtime
    with rt.ingest.held("acme", "r42-pending"):  # its record stays in the log: a backlog until the stop (replayed at the next start)
        with server, svc.client("acme") as c:
            _send(c, "r42-pending", "first")
            for user in ("r42-waiting", "r42-deleted"):
                _send(c, user, "first")
                assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 1  # moved (by the read, or the worker before it)
            assert c.delete("/v1/users/r42-deleted").status_code == 200
            shutil.copytree(data, tmp_path / "crashed")  # what a kill -9 now would leave
        assert rt.store.get_user("acme", "r42-waiting") is None  # stopped during the backlog: not refitted yet
    assert json.loads((data / "refits-dropped.json").read_bytes()) == [["acme", "r42-waiting"]]  # before: no file

    # the worker moves the replayed record before the app around the runtime is built (a start loads its population
    # model meanwhile: a second or more), when no hook refits anything yet
    server, again = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, built=lambda runtime: runtime.ingest.flush())
    with server:
        again.runtime.wait_for_background()
        assert _stored(again.runtime, "r42-waiting") == (1, {})
        assert _stored(again.runtime, "r42-pending") == (1, {})  # before: None, for good unless they came back
        assert again.runtime.store.get_user("acme", "r42-deleted") is None
        assert not (data / "refits-dropped.json").exists()
        assert not (data / "refits-waiting.jsonl").exists()  # the queue drained: nothing owed

    server, crashed = start_service(tmp_path / "crashed", tiny_generator_dir, tiny_pal_dir, minilm,
                                    built=lambda runtime: runtime.ingest.flush())
    with server:
        crashed.runtime.wait_for_background()
        assert _stored(crashed.runtime, "r42-waiting") == (1, {})  # before: None
        assert _stored(crashed.runtime, "r42-pending") == (1, {})
        assert crashed.runtime.store.get_user("acme", "r42-deleted") is None
        assert not (tmp_path / "crashed" / "refits-waiting.jsonl").exists()


def test_at_most_max_waiting_refits_users_wait_for_the_backlog_and_the_bound_queues_them_all(service, monkeypatch):
    """The waiting set had no bound (a backlog of millions of users held them all in memory). Now the move that
    brings it to MAX_WAITING_REFITS (2 here) queues every waiting refit at once, beside the backlog still held, with
    a warning saying how many: none is forgotten."""
    import service.feedback.services as feedback

    rt = service.runtime
    monkeypatch.setattr(feedback, "MAX_WAITING_REFITS", 2)
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    monkeypatch.setattr(logging.getLogger("pluralign.service"), "handlers", [handler])
    with service.client() as c:
        for user in ("r43-first", "r43-second"):
            _send(c, user, "first")
            assert c.get(f"/v1/users/{user}").status_code == 200
        with rt.ingest.paused():  # a backlog: r43-busy's record waits in the log throughout
            _send(c, "r43-busy", "busy")
            for user in ("r43-first", "r43-second"):
                _send(c, user, "second")
                assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 2  # moved: their refits wait
            rt.background.submit(lambda: None).result()  # the refits queued so far ran; the log still holds r43-busy
            assert rt.ingest.log.has_pending() and not rt.dropped_refits
            assert [_stored(rt, user) for user in ("r43-first", "r43-second")] == [(2, {})] * 2  # before: (1, {}) each
            assert [m for m in said if "queued now, beside the backlog" in m and m.startswith("2 users")], said
        rt.wait_for_background()



def test_an_import_whose_rows_carry_other_attributes_keeps_the_latest_ones_as_any_refit(service):
    """A refit gathers the attributes of the user's rows, the latest (by `created_at`) winning. The background refit
    of a moved batch was also handed its first row's attributes, which overrode them: an import of a user's history
    (rows of other times and labels) stored the file's first row's labels when the log was empty, the latest when
    it had a backlog (the refit waited: `after_move`) or when a read refitted them."""
    rt = service.runtime
    rows = [{"prompt": "then", "chosen": "a", "rejected": "b", "created_at": 1600000000.0, "attributes": {"segment": "north"}},
            {"prompt": "now", "chosen": "a", "rejected": "b", "created_at": 1700000000.0, "attributes": {"segment": "south"}}]
    with service.client() as c:
        r = c.post("/v1/users/r42-imported/import", content="\n".join(map(json.dumps, rows)), headers={"Content-Type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        rt.wait_for_background()  # moved with the log empty: refitted behind it
        assert _stored(rt, "r42-imported") == (2, {"segment": "south"})  # before: north, the file's first row's
        assert c.get("/v1/users/r42-imported").json()["attributes"] == {"segment": "south"}


def test_background_refits_take_the_tenants_in_turn(service):
    """One refit thread serves every tenant: the refits a cleared backlog queues at once (every user moved during
    it) are taken a tenant at a time, so one tenant's thousands never hold another's few behind them. Before, they
    ran in the order queued, the waiting ones sorted by tenant: globex's user after every one of acme's."""
    rt = service.runtime
    acme = [f"r42-turn-{i}" for i in range(4)]
    with service.client() as c, service.client("globex") as g:
        with rt.ingest.paused():
            for user in acme:
                _send(c, user, "p")
            _send(g, "r42-turn-globex", "p")
            for client, user in [(c, acme[0]), (c, acme[1]), (c, acme[2]), (g, "r42-turn-globex"), (c, acme[3])]:
                assert client.get(f"/v1/users/{user}/preferences").json()["total"] == 1  # the last read empties the log
        rt.wait_for_background()
    fitted = {user: rt.store.get_user(tenant, user).updated_at for tenant, user in [*(("acme", u) for u in acme), ("globex", "r42-turn-globex")]}
    order = sorted(fitted, key=fitted.get)
    assert order.index("r42-turn-globex") == 1, order  # acme's first (its read emptied the log), then globex's turn


def test_the_waiting_file_is_written_whole_again_once_it_has_more_lines_than_the_bound_over_64(service, monkeypatch):
    """Review of replicas43: no test held the file's bound (the rewrite mutated away, every test passed). A backlog that
    never clears appends a line per moved batch; past MAX_WAITING_REFITS / 64 lines (2 here) the file is written whole
    again with the users still owed, each once."""
    import service.feedback.services as feedback

    rt = service.runtime
    monkeypatch.setattr(feedback, "MAX_WAITING_REFITS", 2 * 64)
    waiting = rt.settings.data_path / "refits-waiting.jsonl"
    users = [f"r43-line{i}" for i in range(4)]
    with service.client() as c, rt.ingest.paused():  # a backlog: r43-lines-busy's record waits in the log throughout
        _send(c, "r43-lines-busy", "busy")
        for user in users:
            _send(c, user, "first")
            assert c.get(f"/v1/users/{user}/preferences").json()["total"] == 1  # moved by the read: a line appended
        lines = waiting.read_bytes().splitlines()
        assert len(lines) <= 2, lines  # before the bound's rewrite: 4 lines
        assert {tuple(k) for line in lines for k in json.loads(line)} >= {("acme", user) for user in users}
    rt.wait_for_background()


def _until(done, what: str) -> None:
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < 30.0, what
        time.sleep(0.01)


def _begun(rt, key: tuple[str, str]) -> bool:
    """Whether the user's refit was queued (the file names them: appended with the queueing) and taken off the queue."""
    with rt.refit_lock:
        return key in rt.waiting_refits.names(rt.waiting_refits.text()) and key not in rt.pending_refits and not rt.refit_turns


def test_a_refit_running_when_the_waiting_file_is_written_whole_or_a_stop_stops_waiting_stays_named(service, monkeypatch):
    """Review of replicas43. The refit thread takes a user out of the queued set when their refit begins. The waiting
    file written whole again at its bound (a backlog appending a line per moved batch) named the waiting and the queued
    users only, and a stop that stopped waiting for the running refit (REFIT_STOP_S: a store call that has not
    returned) wrote the dropped ones to refits-dropped.json and removed the waiting file: either way the running
    refit's user was named nowhere, and a kill before it ended (the process's exit, after the stop) lost their refit.
    Now the running refit's user is owed until it ended. The refit is held running by the user's lock, as a refit
    waits on a slow store call."""
    import service.feedback.services as feedback
    from service.users.services import keep_dropped_refits, refit_dropped
    from service.waiting_refits import WaitingRefits

    rt = service.runtime
    monkeypatch.setattr(feedback, "MAX_WAITING_REFITS", 64)  # written whole again past 1 line
    running = ("acme", "r44-running")
    with service.client() as c:
        with rt.ingest.paused():
            _send(c, "r44-running", "first")
            held = rt.user_lock(*running)  # kept while held: the locks are weakly referenced
            held.acquire()  # its refit, once begun, waits here
        try:
            rt.ingest.flush()  # moved with the log empty: its refit queued and begun
            _until(lambda: _begun(rt, running), "the refit never began")
            with rt.ingest.paused():  # a backlog: r44-busy's record waits; r44-other's move appends a line, then the rewrite
                _send(c, "r44-busy", "busy")
                _send(c, "r44-other", "first")
                assert c.get("/v1/users/r44-other/preferences").json()["total"] == 1
                assert running in WaitingRefits(rt.waiting_refits.path).read()  # before: only acme/r44-other
                rt.stop_refits(timeout=0.05)  # the stop stops waiting for it
                assert keep_dropped_refits(rt) >= 1
                kept = json.loads((rt.settings.data_path / "refits-dropped.json").read_bytes())
                assert list(running) in kept, kept  # before: only acme/r44-other; the waiting file removed
                assert refit_dropped(rt) >= 2  # the next start's step (this module's service serves on)
        finally:
            held.release()
        rt.wait_for_background()
    assert _stored(rt, "r44-running") == (1, {})
