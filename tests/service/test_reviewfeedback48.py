"""Review of session 48's dead letters (`pluralign.store.dead_letter`, `Ingestor._failed`): what the first version
left. Real feedback logs and a real LanceDB folder; the worker and the admin's calls in threads of their own."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from pluralign.store import Store, dead_letter
from pluralign.store import ingest as ingest_module
from pluralign.store.dead_letter import DeadLetters
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from tests.service.test_feedback48_dead_letter import damaged_log
from tests.service.test_feedback_log import DIM, HashEncoder, feedback
from tests.stores import wait_for


def test_a_tenants_feedback_behind_a_whole_batch_of_refused_records_moves(tmp_path, monkeypatch):
    """One tenant whose oldest records (a whole batch of them) the store refuses, each on its own: its good record
    behind them is stored, and the refused ones are set aside once the store has stored others three times. Until
    review 48 every try failed each record of the batch alike, which `_move_checked` reads as not theirs (a schema,
    a bug): none was counted, the worker took the same batch for ever, and the tenant's feedback behind it (of a
    deployment with one tenant: every feedback) was never stored."""
    monkeypatch.setattr(ingest_module, "RETRY_S", 0.01)
    log = FeedbackLog(tmp_path / "log")
    for i in range(2):  # batch=2: the worker's whole first batch
        log.append([msgspec.structs.replace(r, user_id="") for r in feedback("ann", i, tenant="t1")])
    log.append(feedback("ann", 9, tenant="t1"))
    log.close()
    store = Store(str(tmp_path / "db"), "hash", DIM)
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder(), batch=2)
    try:
        wait_for(lambda: store.count_preferences("t1", "ann") == 1, timeout=30.0)
        for i in (10, 11):  # each stored while the refused records wait: their failure is theirs
            ingest.submit(feedback("ann", i, tenant="t1"))
            wait_for(lambda i=i: store.count_preferences("t1", "ann") == i - 8, timeout=30.0)
        wait_for(lambda: ingest.set_aside == 2, timeout=30.0)
        assert ingest.log.backlog() == (0, 0) and len(ingest.dead_letters.names()) == 2
    finally:
        ingest.close()


def test_a_requeue_during_the_users_delete_does_not_bring_their_rows_back(tmp_path):
    """An admin requeues a letter of ann's while ann's DELETE forgets her rows (`forget_user`): the rows are not in
    the log afterwards. Until review 48 the requeue read the letter, the DELETE then forgot the log's rows and the
    letter, and the requeue appended the rows after it: a deleted user's feedback stored by the worker."""
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), HashEncoder())
    try:
        name = ingest.dead_letters.put(feedback("ann", 0, tenant="t1", n=2), "ValueError: then", 3, 0.0)
        append, reached, go = ingest.log.append, threading.Event(), threading.Event()

        def append_later(*args, **kwargs):  # the requeue between its read of the letter and its append
            reached.set()
            go.wait(5.0)
            return append(*args, **kwargs)

        ingest.log.append = append_later
        with ingest.paused():  # nothing moved meanwhile: what the log holds afterwards is what the worker would store
            requeue = threading.Thread(target=ingest.requeue, args=(name,))
            requeue.start()
            assert reached.wait(5.0)
            forget = threading.Thread(target=ingest.forget_user, args=("t1", "ann"))
            forget.start()
            forget.join(0.3)  # done at once before the fix; waits for the requeue after it
            go.set()
            requeue.join(5.0)
            forget.join(5.0)
            assert ingest.log.pending_for("t1", "ann") == [] and ingest.dead_letters.names() == []
    finally:
        ingest.close()


@pytest.mark.slow  # a service of its own on a damaged log (3-10 s on 2 shared cores): make test-tenant-removal
def test_a_tenants_removal_leaves_none_of_its_dead_letters(serve, tmp_path, monkeypatch):
    """A tenant whose refused record (a blank owner: no user a DELETE names) was set aside is removed: none of its
    letters is left, another tenant's letter stays. Until review 48 the removal looked for users in the store, the
    log, the adapters and the DELETE journal only, and the letter (the tenant's rows, their text) stayed for good."""
    from service.admin.controllers import ADMIN_HANDLERS
    from tests.service.test_tenant48_removal import wait_removed

    monkeypatch.setattr(ingest_module, "RETRY_S", 0.01)
    damaged_log(tmp_path / "data" / "feedback-log")  # t1's refused record first, then good rows of t1 and t2
    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    dead = svc.runtime.ingest.dead_letters
    dead.put([msgspec.structs.replace(r, user_id="") for r in feedback("cy", 0, tenant="t2")], "StoreError", 3, 0.0)
    with server, svc.client("admin") as admin:
        wait_for(lambda: svc.runtime.ingest.set_aside == 2)
        assert admin.post("/admin/tenants/t1/removal").status_code == 202
        removal = wait_removed(admin, "t1")
        assert removal["error"] is None and removal["counts"]["preferences"] == 3, removal  # ann's row, the letter's 2
        assert [r.tenant for name in dead.names() for r in dead.read(name).rows] == ["t2"]
        assert admin.get("/admin/feedback/dead-letter").json()["rows"] == 1


def test_a_count_and_a_delete_read_a_letter_only_when_they_need_to(tmp_path, monkeypatch):
    """/metrics' count of the rows set aside (`rows`) reads a letter once while its file is unchanged, and a user's
    DELETE (`forget_user`, under the lock the worker's commits and users' reads wait for) only the letters holding the
    user's rows. Until review 48 each of them read every letter every time (1.5 s for 20 letters of an 8,000-row
    import each at load ~20: every scrape, and every DELETE with the move lock held)."""
    dead = DeadLetters(tmp_path / "dead-letter")
    for i in range(5):
        dead.put(feedback(f"u{i}", 0, tenant="t", n=3), "ValueError: then", 3, 0.0)
    assert dead.rows() == 15
    reads, decode = [], dead_letter._decode
    monkeypatch.setattr(dead_letter, "_decode", lambda data: reads.append(len(data)) or decode(data))
    assert dead.rows() == 15 and dead.forget_user("t", "zed") == 0 and dead.forget_tenant("other") == 0
    assert reads == []
    assert dead.forget_user("t", "u1") == 3 and len(reads) == 1  # u1's letter only
    assert dead.rows() == 12 and len(reads) == 1 and len(dead.names()) == 4


@pytest.mark.slow  # a service of its own (3-10 s on 2 shared cores): make test-tenant-removal
def test_another_replicas_deletion_record_removes_the_users_dead_letters(serve):
    """A user's record set aside on this replica (its letter: their texts) and their DELETE through another replica,
    whose deletion record this one applies (`service.deletions.apply_deletions`): the letter goes, another user's
    stays. Until review 48 the pass forgot the rows of the users it found in the feedback log (and moved lately) only,
    and the deleted user's letter stayed on every replica but the one the DELETE was sent to."""
    from pluralign.store.deletions import new_deletion
    from service.deletions import apply_deletions

    _, server, svc = serve()
    dead = svc.runtime.ingest.dead_letters
    with server:
        dead.put(feedback("zoe", 0, tenant="acme", n=2), "StoreError: then", 3, 0.0)
        dead.put(feedback("yan", 0, tenant="acme"), "StoreError: then", 3, 0.0)
        apply_deletions(svc.runtime, [new_deletion("acme", "zoe", time.time() + 5, replica=1)])
        assert [r.user_id for name in dead.names() for r in dead.read(name).rows] == ["yan"]


def test_a_stop_ends_the_workers_embedding_after_the_chunk_under_way(tmp_path, monkeypatch):
    """A stop (the service's SIGTERM) while the worker embeds a batch of many chunks: the worker embeds no further
    chunk (the batch is not committed once stopped: it stays in the log for the next start), so the close returns
    without waiting for the rest at nice 19, which a container without CAP_SYS_NICE cannot raise. Until review 48 it
    embedded every chunk of the batch first; a close that gave up after 30 s left the process to exit with the
    embedding thread inside ONNX Runtime (trial48b: exit 134)."""
    from tests.service.test_feedback48_worker import HeldInTheWorker

    monkeypatch.setattr(ingest_module, "ENCODE_CHUNK", 2)
    encoder = HeldInTheWorker(threading.get_ident())
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), Store(str(tmp_path / "db"), "hash", DIM), encoder)
    ingest.submit(feedback("ann", 0, tenant="t1", n=10))  # 21 texts: 11 chunks
    assert encoder.embedding.wait(30)  # in the first chunk
    ingest.stop()
    encoder.go_on.set()
    ingest.close()
    assert len(encoder.calls) == 1, encoder.calls  # 11 before
    reopened = FeedbackLog(tmp_path / "log")
    assert reopened.backlog() == (1, 10)  # the batch is in the log, for the next start
    reopened.close()
