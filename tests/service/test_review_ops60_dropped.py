"""review ops60: a dropped refits' file the start could not read, readable again by the stop, is written with the stop's
users (`service.dropped_refits.DroppedRefits.keep`): the users it named were written back without the check the stop's
own users get, that something of them is still stored (`keep_dropped_refits`, docs/operations.md: "a user deleted
meanwhile is not"). A user named there and deleted while the service ran had their id written to disk again by the
stop, after their DELETE, for the next start (whose refit of them writes nothing)."""

from __future__ import annotations

import threading

from service.dropped_refits import DROPPED_REFITS_FILE
from tests.service.test_ops60_dropped_refits import ANN, BOB, READ, stop_with_refits_dropped
from tests.service.test_owed59_running import unreadable_until_cleared
from tests.service.tiny import start_service


def test_a_user_deleted_while_the_dropped_refits_file_could_not_be_read_is_not_written_back_by_the_stop(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    models = (tiny_generator_dir, tiny_pal_dir, minilm)
    data = tmp_path / "data"
    stop_with_refits_dropped(data, models, [BOB])  # the file names bob, whose rows are stored
    path = data / DROPPED_REFITS_FILE
    unreadable = unreadable_until_cleared(monkeypatch, path)
    server, svc = start_service(data, *models, deletion_sweep_s=3600)  # its start cannot read the file
    rt, running = svc.runtime, threading.Event()
    with server, svc.client("acme") as acme:
        assert path.exists() and rt.dropped_file.unread
        assert acme.delete(f"/v1/users/{BOB}").status_code == 200
        unreadable.clear()  # readable again before any pass over the unfinished DELETEs reads it
        rt.background.submit(running.wait)  # the refit thread busy: ann's refit is dropped by the stop
        r = acme.post("/v1/feedback", json={"type": "comparison", "user": ANN, "prompt": "p", "chosen": "a", "rejected": "b"})
        assert r.status_code == 201, r.text
        rt.ingest.flush()
        threading.Thread(target=lambda: (rt.refits_stopped.wait(60), running.set()), daemon=True).start()
    kept = READ(path)
    assert ANN.encode() in kept  # the stop's own dropped refit
    assert BOB.encode() not in kept, "the stop wrote the id of a user deleted meanwhile back to disk"
