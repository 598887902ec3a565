"""Data session 36: a row's `received_at` is when the feedback log writes it (the instant it becomes
durable, less one write and fsync), not when the request built it. A DELETE's cut-off, on every replica,
is "received before the DELETE began": a row stamped earlier but acknowledged after the DELETE began (its
request waiting on the log meanwhile) was taken for one from before, and dropped."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.service.tiny import AskedFrom, start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("d36-received"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


ROW = {"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}


@pytest.mark.parametrize("how", ["import", "feedback"])
def test_rows_acknowledged_after_a_delete_began_are_received_after_it(svc, how):
    """The log's writer is held (as a segment rewrite of another user's DELETE holds it, seconds for a
    large log) while the request waits on it; a DELETE of the user begins meanwhile (on another replica:
    its record reaches this one later). Before: the rows carried the request's earlier instant, so the
    record's cut-off (`forget_user(before=began)`, what `service.deletions.apply_deletions` runs) dropped
    rows acknowledged after the DELETE began, and the user's later read found nothing."""
    rt = svc.runtime
    user = f"late-{how}"
    answers: list = []
    with svc.client("acme") as c:
        def send() -> None:
            if how == "import":
                answers.append(c.post(f"/v1/users/{user}/import", content=json.dumps(ROW)))
            else:
                answers.append(c.post("/v1/feedback", json={"type": "comparison", "user": user, **ROW}))

        io = rt.ingest.log._io = AskedFrom(rt.ingest.log._io, "feedback-log")  # its writer woken by a request's rows
        with io:  # the log cannot write: the request waits for its rows to be durable
            sender = threading.Thread(target=send)
            sender.start()
            # the request has built its rows and they wait on the log (a sleep of 0.5 s: maybe not yet, on a busy
            # machine, and then its rows, built after the DELETE began, were received after it whatever the code did)
            assert io.asked.wait(60), "the request's rows never came to the log's writer"
            began = time.time()  # a DELETE of the user begins (on another replica)
            time.sleep(0.05)
            assert not answers, "acknowledged before the log wrote the rows"
        sender.join(30)
        (answer,) = answers
        assert answer.status_code == 201, answer.text
        rt.ingest.forget_user("acme", user, before=began)  # the DELETE's record, applied here
        page = c.get(f"/v1/users/{user}/preferences")
        assert page.status_code == 200, page.text
        (row,) = page.json()["data"]
        assert row["received_at"] >= began, (row["received_at"], began)
