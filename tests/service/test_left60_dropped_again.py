"""left60: the pass over the unfinished DELETEs reads a dropped refits' file the start could not read once it reads
again (`service.users.services.refit_dropped_again`) and names its users in the waiting refits' file
(`refits-waiting.jsonl`) before queueing their refits. It named every user the file held: one whose DELETE was answered
meanwhile (here, between the pass's read of the file and its write) had their id on disk again after the DELETE, until
the queue drained (for good, were the process killed then). Now the pass names only the users still stored, looked at in
the store's turn, which a DELETE's rows and its removal from the waiting refits take too."""

from __future__ import annotations

import threading

from service.dropped_refits import DROPPED_REFITS_FILE
from service.users.services import refit_dropped_again
from service.waiting_refits import WAITING_REFITS_FILE
from tests.service.test_ops60_dropped_refits import ANN, BOB, READ, stop_with_refits_dropped
from tests.service.test_owed59_running import unreadable_until_cleared
from tests.service.tiny import start_service


def test_a_user_deleted_while_the_pass_reads_the_dropped_refits_file_again_is_not_named_in_the_waiting_file(
        tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    models = (tiny_generator_dir, tiny_pal_dir, minilm)
    data = tmp_path / "data"
    stop_with_refits_dropped(data, models, [ANN, BOB])  # the file names ann and bob, whose rows are stored
    path, waiting = data / DROPPED_REFITS_FILE, data / WAITING_REFITS_FILE
    unreadable = unreadable_until_cleared(monkeypatch, path)
    server, svc = start_service(data, *models, deletion_sweep_s=3600)  # its start cannot read the file
    rt, running = svc.runtime, threading.Event()
    with server, svc.client("acme") as acme:
        assert rt.dropped_file.unread
        rt.background.submit(running.wait)  # the refit thread busy: what the pass queues stays named on disk
        unreadable.clear()
        take, deleted = rt.dropped_file.take, []

        def take_then_delete():  # the pass has read the file (bob in it); bob's DELETE is answered before it goes on
            taken = take()
            deleted.append(acme.delete(f"/v1/users/{BOB}").status_code)
            return taken

        rt.dropped_file.take = take_then_delete
        try:
            queued = refit_dropped_again(rt)
            assert deleted == [200]
            named = READ(waiting)
            assert ANN.encode() in named  # a crash before ann's refit ran finds it again
            assert BOB.encode() not in named, "the pass wrote the id of a user whose DELETE was answered back to disk"
            assert queued == 1  # ann's refit, not bob's
            assert not path.exists()
        finally:
            running.set()
