"""review left60: the pass that reads again a dropped refits' file (`refit_dropped_again`) looks at which users are
still stored and writes their ids in the store's turn, so a DELETE cannot be answered between that look and the write
(left60's test covers a DELETE answered before the look; no test held the turn's part: the pass without it passed).
Here bob's DELETE is sent just after the look: it waits for the pass's turn, and once answered, bob's id is not on
disk. The interleaving forced with hooks: the look goes on once the DELETE has asked for the turn the pass holds, or
(the pass holding none) once the DELETE is answered."""

from __future__ import annotations

import contextlib
import threading

from service.dropped_refits import DROPPED_REFITS_FILE
from service.users.services import refit_dropped_again
from service.waiting_refits import WAITING_REFITS_FILE
from tests.service.test_generation_turns import wait_until
from tests.service.test_ops60_dropped_refits import ANN, BOB, READ, stop_with_refits_dropped
from tests.service.test_owed59_running import unreadable_until_cleared
from tests.service.tiny import start_service


def test_a_delete_sent_after_the_pass_looked_at_its_users_is_answered_after_the_pass_wrote_and_removes_the_id(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    models = (tiny_generator_dir, tiny_pal_dir, minilm)
    data = tmp_path / "data"
    stop_with_refits_dropped(data, models, [ANN, BOB])  # the file names ann and bob, whose rows are stored
    unreadable = unreadable_until_cleared(monkeypatch, data / DROPPED_REFITS_FILE)
    server, svc = start_service(data, *models, deletion_sweep_s=3600)  # its start cannot read the file
    rt, running = svc.runtime, threading.Event()
    with server, svc.client("acme") as acme:
        rt.background.submit(running.wait)  # the refit thread busy: what the pass queues stays named on disk
        unreadable.clear()
        maintenance, looked, pass_thread = rt.store.maintenance, rt.store.users_with_preferences, threading.get_ident()
        in_turn, asked, answers = [], [], []

        @contextlib.contextmanager
        def watched_turn():
            mine = threading.get_ident() == pass_thread
            if not mine:
                asked.append(True)
            with maintenance():
                in_turn.append(mine)
                try:
                    yield
                finally:
                    in_turn.remove(mine)

        def look_then_delete(keys):
            held = looked(keys)
            if threading.get_ident() == pass_thread and not answers:  # the pass's look: bob still stored
                deleting = threading.Thread(target=lambda: answers.append(acme.delete(f"/v1/users/{BOB}").status_code))
                deleting.start()
                wait_until(lambda: answers or (asked and True in in_turn), "bob's DELETE waiting for the turn or answered")
            return held

        monkeypatch.setattr(rt.store, "maintenance", watched_turn)
        monkeypatch.setattr(rt.store, "users_with_preferences", look_then_delete)
        try:
            assert refit_dropped_again(rt) == 2  # ann's and bob's: both stored at the look
            wait_until(lambda: answers, "bob's DELETE answered")
            assert answers == [200]
            named = READ(data / WAITING_REFITS_FILE)
            assert ANN.encode() in named
            assert BOB.encode() not in named, "a DELETE answered between the pass's look and its write left the id on disk"
        finally:
            running.set()
