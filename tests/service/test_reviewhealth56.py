"""Review of health56 (the refactor of `Ingestor.flush`'s stop check, `stop_here`): a real feedback log and a real
LanceDB folder in a temp dir."""

from __future__ import annotations

import threading
import time

import msgspec
import pytest

from pluralign.store import Store
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor, StillMoving
from tests.service.test_feedback48_worker import HeldInTheWorker
from tests.service.test_feedback_log import DIM, feedback


def test_a_flush_past_its_deadline_begins_no_further_batch_after_one_whose_records_all_failed(tmp_path):
    """`Ingestor.flush(deadline=...)` begins its first batch whatever the deadline, and no further one once the deadline
    has passed (StillMoving, rows still pending): the call overruns it by one batch at most. A log whose oldest records
    the store refuses on their own (a blank owner: a damaged or hand-edited log; likewise texts a remote encoder refuses)
    fails batch after batch, each moving nothing. Before the fix the check before a further batch counted the deadline
    only once some row had moved, so such a flush went on through every failing batch past its deadline (an audit's
    POST with a `wait` held its request thread and the feedback worker's lock for as long): here all four batches,
    the good record of the last one moved, and no StillMoving."""
    log = FeedbackLog(tmp_path / "log")
    for i in range(6):  # three batches of two records the store refuses, then one good record
        log.append([msgspec.structs.replace(r, user_id="") for r in feedback("ann", i, tenant="t1")])
    log.append(feedback("bob", 0, tenant="t2"))
    log.close()  # as after a crash: only the files remain
    store = Store(str(tmp_path / "db"), "hash", DIM)
    encoder = HeldInTheWorker(threading.get_ident())  # the worker held in its first embedding: the flush alone moves
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, encoder, batch=2, tries=10)
    tried: list[int] = []
    move_checked = ingest._move_checked

    def counted(entries, *args, **kwargs):
        if threading.get_ident() == encoder.test_thread:
            tried.append(len(entries))
        return move_checked(entries, *args, **kwargs)

    ingest._move_checked = counted
    try:
        assert encoder.embedding.wait(30)
        with pytest.raises(StillMoving) as still:
            ingest.flush(deadline=time.monotonic())
        assert tried == [2], tried  # the first batch only
        assert still.value.rows == 7  # every row still waiting in the log
        assert store.count_preferences("t2", "bob") == 0
    finally:
        encoder.go_on.set()
        ingest.close()


def test_a_request_cut_by_the_graceful_wait_after_its_answer_began_is_not_answered_again():
    """health56 made `draining` read whether an answer began from `with_request_ids` (`answer_began`, the request's
    Hangup) instead of a `send` wrapper of its own. The two composed as `service.app.create_app` composes them: a
    request whose answer began (a stream's head and first piece sent) and that the server's graceful wait then cancels
    gets no second answer (no 503 start after its 200), and its access line says 200, cut; one cancelled before its
    answer began is answered 503, as before. A guard, passing before and after health56's change: with `answer_began`
    always False (the wiring broken) the first case sends a 503 start after the 200 and logs 503."""
    import asyncio
    import logging

    from service.errors import refuse_request_id
    from service.metrics import access_route_of, method_of
    from service.requestid import with_request_ids
    from service.stopping import draining

    async def served(begin: bool) -> tuple[list[dict], list[dict]]:
        sent, lines = [], []
        started = asyncio.Event()

        async def app(scope, receive, send):
            if begin:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            started.set()
            await asyncio.Event().wait()  # generating, until the server's graceful wait cancels it

        async def send(message):
            sent.append(message)

        async def receive():
            await asyncio.Event().wait()

        class Lines(logging.Handler):
            def emit(self, record):
                lines.append(record.access)

        handler = with_request_ids(draining(app, lambda: False), log_access=True, tenant_of=lambda scope: "acme",
                                   route_of=access_route_of, method_of=method_of, refuse=refuse_request_id)
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
        access = logging.getLogger("pluralign.access")
        lines_handler, level, disabled = Lines(), access.level, access.disabled  # an app's logging config may disable it
        access.addHandler(lines_handler)
        access.setLevel(logging.INFO)
        access.disabled = False
        try:
            task = asyncio.ensure_future(handler(scope, receive, send))
            await started.wait()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        finally:
            access.removeHandler(lines_handler)
            access.setLevel(level)
            access.disabled = disabled
        return sent, lines

    sent, lines = asyncio.run(served(begin=True))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200], sent
    assert [(line["status"], line.get("cut")) for line in lines] == [(200, True)], lines
    sent, lines = asyncio.run(served(begin=False))
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [503], sent
    assert [line["status"] for line in lines] == [503], lines
