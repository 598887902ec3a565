"""The service told to stop (SIGTERM: `pluralign serve` calls `stop_taking_work` as uvicorn's shutdown
begins, and `cut_running` shortly before its graceful timeout runs out):

- chats waiting in the generation queue never begin: their clients get 503 with `Retry-After` and the
  usual JSON error body saying the service is stopping, at once (streamed or not), as does every chat
  received from then on; the chat already generating finishes;
- a chat still generating when the grace is over is stopped: a plain one is answered 503 (nothing was
  stored: safe to send again), a stream already under way ends with an error event, then `[DONE]` (the
  `openai` client raises APIError) instead of being cut mid-body by uvicorn;
- feedback sent while the service stops is acknowledged only once durable, and is in the log after it stopped.

The exit status of a real `pluralign serve` is tests/e2e/test_serve_exit.py (slow)."""

from __future__ import annotations

import threading

import httpx
import pytest

from pluralign.policy.generator import Cancelled, Generator
from pluralign.store.feedback_log import FeedbackLog
from service.app import cut_running, stop_taking_work
from tests.service.test_generation_fairness import CHAT, serve


class HeldGenerator(Generator):
    """The tiny model, held: `generate` waits for `release` (or its cancel event, checked per
    "token"), and `stream` yields a piece per "token" until closed; `running` is set meanwhile."""

    def __init__(self, base: Generator):
        super().__init__(base.model, base.tokenizer, base.model_id)
        self.running, self.release = threading.Event(), threading.Event()

    def generate(self, messages, n=1, sampling=None, adapter=None, cancel=None):
        self.running.set()
        while not self.release.wait(0.01):  # a token's time
            if cancel is not None and cancel.is_set():
                raise Cancelled()
        return super().generate(messages, n=n, sampling=sampling, adapter=adapter, cancel=cancel)

    def generate_styled(self, messages, styles, sampling=None, adapter=None, cancel=None):  # n > 1: candidates in styles
        self.running.set()
        while not self.release.wait(0.01):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
        return super().generate_styled(messages, styles, sampling=sampling, adapter=adapter, cancel=cancel)

    def stream(self, messages, sampling=None, adapter=None, cancel=None):
        for _ in range(100_000):  # until the stream is closed
            threading.Event().wait(0.01)  # a token's time
            yield " more"
            self.running.set()  # (once a piece was sent)


@pytest.fixture
def held(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    generator = HeldGenerator(Generator.from_folder(tiny_generator_dir))
    server, svc = serve(tmp_path / "data", generator, tiny_pal_dir, minilm, rerank=False, candidates=1, generation_workers=1)
    svc.generator, svc.data_dir = generator, tmp_path / "data"
    with server:
        yield svc


def wait_until(condition) -> None:
    ticks = threading.Event()
    for _ in range(3000):
        if condition():
            return
        ticks.wait(0.01)
    raise AssertionError("never happened")


def stopped_chats(svc) -> dict[str, float]:
    """/metrics' `pluralign_chat_stopped_total` by `when` (waiting, generating)."""
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(httpx.get(svc.url + "/metrics").text)
    return {s.labels["when"]: s.value for f in families if f.name == "pluralign_chat_stopped" for s in f.samples
            if s.name.endswith("_total")}


def assert_stopping(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["Retry-After"] == "5" and r.headers["content-type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["type"] == "service_unavailable_error" and "the service is stopping" in error["message"], error


def test_chats_waiting_when_the_service_stops_get_503_at_once_and_the_running_one_finishes(held):
    rt, app = held.runtime, held.server.server.config.app
    answers: dict[str, httpx.Response] = {}

    def send(name: str, body: dict) -> None:
        with held.client("acme") as c:
            answers[name] = c.post("/v1/chat/completions", json=body)

    running = threading.Thread(target=send, args=("running", {**CHAT, "user": "ann"}))
    running.start()
    assert held.generator.running.wait(30)
    waiting = [threading.Thread(target=send, args=(name, {**CHAT, "user": "bob", "stream": name == "stream"}))
               for name in ("plain", "stream")]
    for t in waiting:
        t.start()
    wait_until(lambda: rt.scheduler.stats()["waiting"] == 2)
    stop_taking_work(app)
    for t in waiting:
        t.join(10)
    assert_stopping(answers["plain"])
    assert_stopping(answers["stream"])  # refused before its headers: a plain 503, not an event stream
    with held.client("acme") as c:  # and every chat received from now on
        assert_stopping(c.post("/v1/chat/completions", json=CHAT))
        assert_stopping(c.post("/v1/chat/completions", json={**CHAT, "stream": True}))
        # feedback while it stops: acknowledged once durable (it outlives the stop, below)
        fb = c.post("/v1/feedback", json={"type": "comparison", "user": "cat", "prompt": "Tea or coffee?",
                                          "chosen": "Tea.", "rejected": "Coffee."})
    assert fb.status_code == 201, fb.text
    held.generator.release.set()
    running.join(30)
    assert answers["running"].status_code == 200, answers["running"].text  # the chat under way finished
    # the four chats answered 503 before they began show in /metrics (they were counted nowhere)
    assert stopped_chats(held) == {"waiting": 4, "generating": 0}, stopped_chats(held)
    held.server.__exit__(None, None, None)  # the app's shutdown: the ingest worker and the log close
    log = FeedbackLog(held.data_dir / "feedback-log")
    try:
        moved = rt.store.history("acme", "cat").meta.column("pref_id").to_pylist()
        pending = [r.pref_id for e in log.pending_for("acme", "cat") for r in e.rows]
        assert set(pending) | set(moved) == set(fb.json()["stored"]), (pending, moved)  # replayed at the next start if pending
    finally:
        log.close()


def test_chats_still_generating_when_the_grace_is_over_end_in_a_way_the_client_can_tell(held):
    import openai

    rt, app = held.runtime, held.server.server.config.app
    # what the openai client makes of a stream stopped as the service stops: an APIError saying why
    client = openai.OpenAI(base_url=held.url + "/v1", api_key=held.keys["acme"], max_retries=0)
    stream = client.chat.completions.create(model="pluralign", messages=CHAT["messages"], user="ann", stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content == " more"  # generating
    assert cut_running(app) == 1
    with pytest.raises(openai.APIError) as cut:
        for _ in chunks:
            pass
    assert "the service is stopping" in cut.value.message and cut.value.body["code"] == "unavailable", cut.value.body
    stream.response.close()
    wait_until(lambda: rt.scheduler.stats()["running"] == 0)

    # a chat that begins generating after the cut (it was planning then) is stopped at once:
    with held.client("acme") as c:
        streamed = c.post("/v1/chat/completions", json={**CHAT, "stream": True})
        plain = c.post("/v1/chat/completions", json=CHAT)
    # a stream stopped before its first event: a plain 503 (it was a stream opening with the error event)
    assert_stopping(streamed)
    assert_stopping(plain)  # a plain chat: 503, nothing stored, safe to send again
    assert rt.scheduler.stats() == {"running": 0, "waiting": 0, "tenants": 0}
    assert rt.chats.cut_off == 3
    assert stopped_chats(held) == {"waiting": 0, "generating": 3}, stopped_chats(held)  # counted nowhere before


def test_a_stream_stopped_before_its_first_event_is_a_plain_503_the_client_retries(held):
    """n > 1 generates every candidate before its first event, so the stop can cut it before any: its
    stream opened with the error event (no role chunk; the openai client raised APIError and did not
    send it again). Nothing was sent, the headers neither: it is answered as a chat refused before it
    began, a plain 503 with Retry-After, which the openai client sends again."""
    import openai

    rt, app = held.runtime, held.server.server.config.app
    client = openai.OpenAI(base_url=held.url + "/v1", api_key=held.keys["acme"], max_retries=0)
    answer: dict = {}

    def send() -> None:
        try:
            stream = client.chat.completions.create(model="pluralign", messages=CHAT["messages"], user="ann", stream=True, n=2)
            answer["chunks"] = list(stream)
        except openai.APIError as exc:
            answer["error"] = exc

    sending = threading.Thread(target=send)
    sending.start()
    assert held.generator.running.wait(30)  # generating its candidates: no event yet
    assert cut_running(app) == 1
    sending.join(30)
    error = answer.get("error")
    assert isinstance(error, openai.APIStatusError), repr(error)  # an HTTP status, not an event in a 200 stream
    assert error.status_code == 503 and error.response.headers["Retry-After"] == "5", (error.status_code, error.response.headers)
    assert "the service is stopping" in error.message and error.body["code"] == "unavailable", error.body
    assert stopped_chats(held) == {"waiting": 0, "generating": 1}, stopped_chats(held)
    wait_until(lambda: rt.scheduler.stats()["running"] == 0)
