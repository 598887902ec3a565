"""ops60: `refits-dropped.json` (the users whose refits a clean stop dropped) is read and written as the data folder's two
other sets of keys are (`service.key_sets`, through `service.dropped_refits`). Before, a file of its own format:

- one cut short (a full disk, a crash mid-copy) was logged and removed: the users it still named whole were not refitted
  at the start (their rows stayed as before their last feedback until they came back);
- one that could not be read at all (an I/O error, a permission) was removed likewise, unread, and /health said nothing.

Now a damaged file's whole users are refitted; an unreadable one is left as it is, listed by /health's `storage`, not
written over by the stop (the waiting refits' file keeps naming the users dropped then), and read again by the pass over
the unfinished DELETEs. The previous release's file (the list without the line's end) reads as it is."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec

from service.dropped_refits import DROPPED_REFITS_FILE, PROBLEM_NAME
from service.waiting_refits import WAITING_REFITS_FILE
from tests.service.test_owed59_running import READ, unreadable_until_cleared
from tests.service.tiny import start_service

ANN, BOB, CY = "ops60-ann", "ops60-bob", "ops60-cy"


def stop_with_refits_dropped(data: Path, models, users: list[str]) -> None:
    """A service on `data` stored a comparison of each of `users` while its refit thread was busy: the stop drops their
    refits (`keep_dropped_refits`)."""
    server, svc = start_service(data, *models)
    rt, running = svc.runtime, threading.Event()
    with server, svc.client("acme") as c:
        rt.background.submit(running.wait)  # the refit thread busy: the refits of what follows queue behind it
        for user in users:
            r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "p", "chosen": "a", "rejected": "b"})
            assert r.status_code == 201, r.text
            rt.ingest.flush()
        threading.Thread(target=lambda: (rt.refits_stopped.wait(60), running.set()), daemon=True).start()  # ends in the stop
    for segment in (data / "feedback-log").glob("*.log"):  # each record stored (flushed): as a log long rotated since,
        segment.unlink()  # the next start replays none of them, and only the dropped refits' file names their users


def fitted_after_start(data: Path, models, users: list[str]) -> dict[str, bool]:
    """Whether each of `users` has a row in the users table once a start's queued refits ran (nobody read them)."""
    server, svc = start_service(data, *models)
    with server:
        svc.runtime.wait_for_background()
        return {user: svc.runtime.store.get_user("acme", user) is not None for user in users}


def listed(health: dict) -> list[dict]:
    return [{k: p[k] for k in ("action", "problem")} for p in health["storage"] if p["what"] == PROBLEM_NAME]


def test_a_dropped_refits_file_cut_short_refits_the_users_it_still_names_and_the_old_form_reads(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    models = (tiny_generator_dir, tiny_pal_dir, minilm)
    data = tmp_path / "data"
    stop_with_refits_dropped(data, models, [ANN, BOB])
    path = data / DROPPED_REFITS_FILE
    written = path.read_bytes()
    assert written == msgspec.json.encode([["acme", ANN], ["acme", BOB]]) + b"\n"  # one line of `service.key_sets`
    path.write_bytes(written[: written.index(BOB.encode()) + 3])  # cut short in bob's id
    assert fitted_after_start(data, models, [ANN, BOB]) == {ANN: True, BOB: False}, "ann, named whole, was not refitted"
    assert not path.exists()

    path.write_bytes(msgspec.json.encode([["acme", BOB]]))  # as the previous release wrote it: no line's end
    assert fitted_after_start(data, models, [BOB]) == {BOB: True}
    assert not path.exists()


def test_a_dropped_refits_file_that_cannot_be_read_is_listed_never_written_over_and_read_again(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from service.users.services import UnfinishedDeletes

    models = (tiny_generator_dir, tiny_pal_dir, minilm)
    data = tmp_path / "data"
    stop_with_refits_dropped(data, models, [ANN])
    path = data / DROPPED_REFITS_FILE
    before = path.read_bytes()
    unreadable = unreadable_until_cleared(monkeypatch, path)
    stop_with_refits_dropped(data, models, [CY])  # its start cannot read the file; its stop drops cy's refit
    assert path.exists(), "the start removed the file it could not read: ann's refit lost"
    assert READ(path) == before, "the stop wrote over the file it could not read"
    assert CY.encode() in READ(data / WAITING_REFITS_FILE)  # cy stays named for the next start

    server, svc = start_service(data, *models)  # still unreadable
    with server, svc.client(None) as anyone:
        health = anyone.get("/health").json()
        assert health["status"] == "degraded" and listed(health) == [{"action": "read", "problem": "unreadable"}], health
        svc.runtime.wait_for_background()
        assert svc.runtime.store.get_user("acme", CY) is not None  # the waiting file's
        assert svc.runtime.store.get_user("acme", ANN) is None
        unreadable.clear()  # the operator fixed the disk: the next pass reads it
        UnfinishedDeletes(svc.runtime, 3600).run_once()
        svc.runtime.wait_for_background()
        assert svc.runtime.store.get_user("acme", ANN) is not None, "ann's refit, named by the file, did not run"
        assert not path.exists()
        health = anyone.get("/health").json()
        assert listed(health) == [] and health["status"] == "ok", health
