"""The tests' `LiveServer` stops as uvicorn stops (`tests/service/tiny.py` runs its own `uvicorn.Server`
subclass since speed41c): a request in flight when it is told to stop is answered whole, and only then
does the app's shutdown run (the generation queue closed, the ingest worker ended). Every test that
stops a service in-process relies on this; none asserted it, so dropping the app's shutdown from the
harness (or `stop_taking_work` / `_stop_ingest` from `create_app`'s `on_shutdown`) failed nothing."""

from __future__ import annotations

import threading

import httpx
import pytest

from pluralign.policy.generator import Candidate
from service.scheduler import Stopping
from service.stopping import STOPPING
from tests.service.tiny import start_service

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Tea or coffee?"}]}


def test_a_request_in_flight_when_told_to_stop_is_answered_then_the_app_s_shutdown_runs(tmp_path, tiny_generator_dir,
                                                                                           tiny_pal_dir, minilm):
    from pluralign.policy.generator import Generator

    began, release = threading.Event(), threading.Event()

    class Held(Generator):
        def generate(self, messages, n=1, sampling=None, adapter=None, cancel=None):
            began.set()
            release.wait(30)
            return [Candidate(text="Tea, then.", finish_reason="stop", tokens=3) for _ in range(n)], 5

    server, svc = start_service(tmp_path / "data", tiny_generator_dir, tiny_pal_dir, minilm, rerank=False, candidates=1)
    svc.runtime.generator.__class__ = Held
    answers: list[httpx.Response] = []
    server.__enter__()
    try:
        with svc.client("acme") as c:
            chat = threading.Thread(target=lambda: answers.append(c.post("/v1/chat/completions", json={**CHAT, "user": "ann"})))
            chat.start()
            assert began.wait(30)
            stopping = threading.Thread(target=server.__exit__, args=(None, None, None))
            stopping.start()
            stopping.join(0.3)
            assert stopping.is_alive(), "the server stopped with a request in flight"
            assert svc.runtime.ingest._thread.is_alive(), "the app's shutdown ran before its request was answered"
            release.set()
            chat.join(30)
            stopping.join(30)
    finally:
        release.set()
        server.__exit__(None, None, None)
    assert [(r.status_code, r.json()["choices"][0]["message"]["content"]) for r in answers] == [(200, "Tea, then.")]
    # the app's shutdown ran: chats are refused as the service stops, the ingest worker ended, its log closed
    with pytest.raises(Stopping, match=STOPPING):
        svc.runtime.scheduler.submit("acme", lambda: None)
    assert not svc.runtime.ingest._thread.is_alive()
