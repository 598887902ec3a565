"""Requests to remote OpenAI-compatible servers bounded whole (session remote54): a prompt's count (vLLM's
`POST /tokenize`), a chat completion (plain and streamed) and an embeddings request, each through the real client
(`RemoteGenerator`, `RemoteEncoder`) on a real HTTP server in this process that sends its answer a byte at a time (its
status line and headers, a 5xx's body, or a 200's body), each byte well within any read timeout. Each must end at its
bound, and leave no thread behind: the client's (a count's) and the server's (its handler sees the connection closed at
its next byte) end within a small time of the deadline."""

from __future__ import annotations

import json
import threading
import time

import pytest

from pluralign.embed.remote import RemoteEncoder, RemoteEncoderError
from pluralign.policy.generator import PromptNotCounted, RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.stub_openai import JSONHandler, served

BOUND_S = 0.5  # RemotePolicy.timeout_s (its counts' bound too: never more than it) and RemoteEncoder's timeout
SLACK_S = 0.4  # the most a request may end past its bound here (one read's wait at most; 2 loaded cores)
EVERY_S = 0.02  # the server's pace: a byte every 20 ms
DRIBBLE_CAP_S = 3.0  # the server gives up dribbling after this long (so a client bounded per read only ends at last)
MESSAGES = [{"role": "user", "content": "Plan my weekend, please"}]


class Dribbling(JSONHandler):
    """An OpenAI-compatible server (`/tokenize` beside `/v1`, `/v1/chat/completions`, `/v1/embeddings`) whose answers
    go at once while `how` is None, else a byte every EVERY_S seconds (for DRIBBLE_CAP_S at most): `how` "head" sends
    the whole answer so (its status line and headers first), "body" its headers at once and its body so, "error" a 500
    whose body goes so. `handling`: the requests it holds now."""

    how: str | None = None
    handling = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.read_json()
        with self.lock:
            type(self).handling += 1
        try:
            status, kind, payload = self.answer_of(body)
            if self.how == "error":
                status, payload = 500, json.dumps({"object": "error", "message": "failed", "code": 500}).encode()
            head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Internal Server Error'}\r\ncontent-type: {kind}\r\n"
                    f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n").encode()
            if self.how is None:
                self.wfile.write(head + payload)
            elif self.how == "head":
                self.dribble(head + payload)
            else:
                self.wfile.write(head)
                self.wfile.flush()
                self.dribble(payload)
        except OSError:  # the client closed the connection (it gave up): this handler ends
            pass
        finally:
            with self.lock:
                type(self).handling -= 1
        self.close_connection = True

    def answer_of(self, body: dict) -> tuple[int, str, bytes]:
        if self.path == "/tokenize":
            return 200, "application/json", json.dumps({"count": 5, "max_model_len": 512}).encode()
        if self.path == "/v1/embeddings":
            data = [{"object": "embedding", "index": i, "embedding": [1.0, 0.0, 0.0]} for i in range(len(body["input"]))]
            return 200, "application/json", json.dumps({"object": "list", "data": data, "model": body["model"],
                                                        "usage": {"prompt_tokens": 1, "total_tokens": 1}}).encode()
        base = {"id": "chatcmpl-1", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "a plan"}, "finish_reason": "stop"}
            return 200, "application/json", json.dumps({**base, "object": "chat.completion", "choices": [choice], "usage": usage}).encode()
        events = [{**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                  for word in ("a", " plan")]
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return 200, "text/event-stream", b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"

    def dribble(self, payload: bytes) -> None:
        began = time.monotonic()
        for i in range(len(payload)):
            if time.monotonic() - began > DRIBBLE_CAP_S:
                return
            time.sleep(EVERY_S)
            self.wfile.write(payload[i : i + 1])
            self.wfile.flush()


@pytest.fixture(scope="module")
def root():
    with served(Dribbling) as url:
        yield url


@pytest.fixture
def server(root):
    """The server's root URL, it answering at once until the test says how to dribble; its requests ended after."""
    Dribbling.how = None
    yield root
    Dribbling.how = None
    until = time.monotonic() + DRIBBLE_CAP_S + 1
    while Dribbling.handling and time.monotonic() < until:
        time.sleep(0.02)


def left_behind(before: set[threading.Thread], within_s: float) -> list[str]:
    """The names of the threads started since `before` (this process's then) still alive after `within_s` seconds, or
    none as soon as none is."""
    until = time.monotonic() + within_s
    while True:
        alive = [t.name for t in threading.enumerate() if t not in before]
        if not alive or time.monotonic() >= until:
            return alive
        time.sleep(0.01)


def ends_in_time(call, error: type[Exception]) -> tuple[Exception, float]:
    """(the error `call()` raised, how long it took), every thread started meanwhile (the client's, the server's for the
    request) ended within SLACK_S of the bound."""
    before = set(threading.enumerate())
    began = time.monotonic()
    with pytest.raises(error) as raised:
        call()
    took = time.monotonic() - began
    alive = left_behind(before, max(0.0, BOUND_S + SLACK_S - took))
    assert not alive, f"threads left behind at {time.monotonic() - began:.2f} s: {alive}"
    return raised.value, took


@pytest.mark.parametrize("how", ["head", "error"])
def test_a_count_the_server_dribbles_ends_with_its_thread_and_connection_at_the_deadline(server, how):
    """Session counts53 bounded a chat's counts by a deadline, but a count given up on lived on: its thread and
    connection held as long as the server sent its status line and headers (or a 5xx's body, which the `openai` client
    reads whole) a byte at a time, each read well within httpx's timeouts (here ~3 s). Now every step of the count's
    request is bounded by the deadline (`pluralign.bounded_http`): it ends there, and so do its thread and (seeing the
    connection closed) the server's."""
    remote = RemoteGenerator(f"{server}/v1", "base", policy=RemotePolicy(timeout_s=BOUND_S, max_retries=0))
    assert remote.policy.tokenize_timeout_s == BOUND_S
    assert remote.prompt_tokens(MESSAGES) == 5
    Dribbling.how = how
    error, took = ends_in_time(lambda: remote.prompt_tokens(MESSAGES), PromptNotCounted)
    assert took < BOUND_S + SLACK_S, took
    assert error.why == f"no answer within {BOUND_S:g} s", error.why  # before ("error"): "answered 500" after ~3 s


@pytest.mark.parametrize("how", ["head", "body"])
def test_a_chat_the_server_dribbles_is_given_up_whole_at_its_timeout(server, how):
    """A chat completion was bounded per read only (120 s by default): a server sending its answer a byte at a time held
    the chat (and its tenant's place in the service) until its last byte. Now `RemotePolicy.timeout_s` bounds each try
    whole: GenerationTimedOut (a RemoteGeneratorError), naming the bound, at the bound."""
    remote = RemoteGenerator(f"{server}/v1", "base", policy=RemotePolicy(timeout_s=BOUND_S, max_retries=0))
    assert remote.generate(MESSAGES)[0][0].text == "a plan"
    Dribbling.how = how
    error, took = ends_in_time(lambda: remote.generate(MESSAGES), RemoteGeneratorError)
    assert took < BOUND_S + SLACK_S, took  # before: ~3 s (the server's cap), a broken answer then
    assert f"did not answer within {BOUND_S:g} s" in str(error), error


def test_a_streamed_chat_the_server_dribbles_is_given_up_whole_at_its_timeout(server):
    """A streamed chat's answer was bounded per read only: each byte of its events well within the read timeout held the
    stream (and the tenant's place) as long as the server liked. Now the whole answer is bounded, from the request's
    sending to its last byte: by `timeout_s` until session stream55, by a stream's own `stream_timeout_s` since (each
    byte is progress, so `stream_idle_s` does not end it: `tests/unit/test_stream55_remote_bounds.py`)."""
    policy = RemotePolicy(timeout_s=5, stream_timeout_s=BOUND_S, max_retries=0)
    remote = RemoteGenerator(f"{server}/v1", "base", policy=policy)
    assert "".join(p for p in remote.stream(MESSAGES) if isinstance(p, str)) == "a plan"
    Dribbling.how = "body"  # its headers at once, its events a byte at a time
    error, took = ends_in_time(lambda: list(remote.stream(MESSAGES)), RemoteGeneratorError)
    assert took < BOUND_S + SLACK_S, took  # before: ~3 s (the server's cap)
    assert f"did not send its whole streamed answer within {BOUND_S:g} s" in str(error), error


def test_an_embeddings_request_the_server_dribbles_is_given_up_whole_at_its_timeout(server):
    """An embeddings request was bounded per read only (60 s by default): a server dribbling its answer held the
    request's thread (a chat's, a feedback batch's) until its last byte. Now `RemoteEncoder`'s `timeout` bounds each
    try whole."""
    encoder = RemoteEncoder(f"{server}/v1", "minilm", timeout=BOUND_S, max_retries=0)
    assert encoder.encode(["hello"]).shape == (1, 3)
    Dribbling.how = "body"  # (its status line and headers so: the same bound, `test_a_chat_...`)
    error, took = ends_in_time(lambda: encoder.encode(["hello"]), RemoteEncoderError)
    assert took < BOUND_S + SLACK_S, took  # before: ~3 s (the server's cap)
    assert f"did not answer within {BOUND_S:g} s" in str(error), error
