"""A remote generator's streamed chats bounded as streams (session stream55): by the time without progress and by a
bound of their own for the whole, not by the per-request bound of a non-streamed call; and the lookup of a server's
name (`getaddrinfo`) bounded by the request's deadline. Each through the real client (`RemoteGenerator`) on a real HTTP
server in this process (`Pacing`: a streamed answer's events at a pace, or a stall mid-way)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from pluralign.policy.generator import GenerationTimedOut, RemoteGeneratorError
from pluralign.policy.remote import RemoteGenerator, RemotePolicy
from tests.stub_openai import JSONHandler, served

MESSAGES = [{"role": "user", "content": "Tell me a long story"}]
SLACK_S = 0.4  # the most a stream may end past its bound here (one read's wait; 2 loaded cores)


class Pacing(JSONHandler):
    """An OpenAI-compatible `/v1/chat/completions` whose streamed answer is `words` events `every_s` seconds apart, then
    the usage and [DONE]; with `stall_after` set, it sends nothing for `stall_s` after that many events (an engine
    stalled mid-way), then the rest. A non-streamed answer goes at once. `closed`: the streams whose client closed them
    before their end (the engine's side of a cut)."""

    words = 6
    every_s = 0.0
    stall_after: int | None = None
    stall_s = 0.0
    closed = 0
    headers_after_s = 0.0  # the wait before a stream's status line and headers (a proxy holding them, an engine's queue)
    keepalive_s: float | None = None  # while it stalls: an SSE comment (`: keep-alive`) this often, as proxies and servers send
    first_after_s = 0.0  # the wait before its first event (the engine's queue), kept alive the same way

    def wait(self, seconds: float) -> None:
        """`seconds` without an event, a keep-alive comment every `keepalive_s` meanwhile where set."""
        until = time.monotonic() + seconds
        while self.keepalive_s is not None and until - time.monotonic() > self.keepalive_s:
            time.sleep(self.keepalive_s)
            self.wfile.write(b": keep-alive\n\n")
            self.wfile.flush()
        time.sleep(max(0.0, until - time.monotonic()))

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.read_json()
        base = {"id": "chatcmpl-1", "created": 0, "model": body["model"]}
        usage = {"prompt_tokens": 5, "completion_tokens": self.words, "total_tokens": 5 + self.words}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "once"}, "finish_reason": "stop"}
            return self.answer(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        time.sleep(self.headers_after_s)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()  # no length: the stream ends with the connection
        events = [{**base, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]} for i in range(self.words)]
        events.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        try:
            for i, event in enumerate(events):
                if i == self.stall_after:
                    self.wait(self.stall_s)
                elif not i:
                    self.wait(self.first_after_s)
                else:
                    time.sleep(self.every_s)
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:  # the client closed it
            type(self).closed += 1
        self.close_connection = True


@pytest.fixture(scope="module")
def root():
    """The server's root URL, the client warmed up on it (a first chat's imports and models take tenths of a second on
    a loaded machine, which the tests' timings would count)."""
    with served(Pacing) as url:
        warm = RemoteGenerator(f"{url}/v1", "base", policy=RemotePolicy(max_retries=0))
        assert warm.generate(MESSAGES)[0][0].text == "once" and streamed(warm)[0]
        warm.close()
        yield url


@pytest.fixture
def pacing(root):
    """The server's root URL; its pace put back after the test."""
    Pacing.words, Pacing.every_s, Pacing.stall_after, Pacing.stall_s, Pacing.closed = 6, 0.0, None, 0.0, 0
    yield root
    Pacing.words, Pacing.every_s, Pacing.stall_after, Pacing.stall_s = 6, 0.0, None, 0.0
    Pacing.keepalive_s, Pacing.first_after_s, Pacing.headers_after_s = None, 0.0, 0.0


def streamed(remote: RemoteGenerator) -> tuple[str, float]:
    began = time.monotonic()
    text = "".join(p for p in remote.stream(MESSAGES) if isinstance(p, str))
    return text, time.monotonic() - began


def test_a_stream_longer_than_the_timeout_whose_engine_sends_steadily_is_served_whole(pacing):
    """A streamed chat was bounded whole by `timeout_s` (120 s by default), the bound of a non-streamed call: a long
    answer from a slow or busy engine, its tokens coming steadily, was cut there. Now a stream is bounded by the time
    without progress (`stream_idle_s`) and by its own bound for the whole (`stream_timeout_s`): an answer of 1.2 s at a
    `timeout_s` of 0.4 s is served whole."""
    Pacing.words, Pacing.every_s = 8, 0.1  # ~0.7 s in all, a piece every 0.1 s
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=RemotePolicy(timeout_s=0.4, max_retries=0))
    text, took = streamed(remote)  # before: GenerationTimedOut at 0.4 s
    assert text == " ".join(f"w{i}" for i in range(8)), text
    assert took > 0.6, took
    assert remote.generate(MESSAGES)[0][0].text == "once"  # a non-streamed call: as before


def test_a_reader_slow_to_take_a_streams_pieces_is_not_taken_for_a_stalled_engine(pacing):
    """The idle bound is the time the engine sends nothing while its next piece is waited for: a reader that takes longer
    than `stream_idle_s` over each piece (a loaded machine's thread, a library user's loop) finds the pieces the engine
    sent meanwhile, and the stream is served whole (a first version measured from the piece before: cut at the second
    piece, though every piece waited in the socket)."""
    Pacing.words, Pacing.every_s = 2, 0.05  # each event a piece of its own, all sent while the reader sleeps on the first
    policy = RemotePolicy(timeout_s=5, stream_idle_s=0.15, stream_timeout_s=60, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    pieces = []
    for piece in remote.stream(MESSAGES):
        pieces.append(piece)
        time.sleep(0.25)
    assert "".join(p for p in pieces if isinstance(p, str)) == "w0 w1", pieces


def test_a_stream_the_engine_stalls_mid_way_is_cut_at_the_idle_bound(pacing):
    """An engine that sends a few tokens and then nothing (hung, its connection open) holds the stream no longer than
    `stream_idle_s` past its last piece: GenerationTimedOut naming that bound, the connection closed (the engine sees
    its client gone), though the whole-stream bound is far off."""
    Pacing.stall_after, Pacing.stall_s = 3, 1.0
    policy = RemotePolicy(timeout_s=5, stream_idle_s=0.5, stream_timeout_s=60, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    pieces: list[str] = []
    last_at = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:
        for piece in remote.stream(MESSAGES):
            pieces.append(piece)
            last_at = time.monotonic()
    took = time.monotonic() - last_at
    assert "".join(pieces) == "w0 w1 w2", pieces  # what came before the stall was handed over
    assert 0.5 <= took < 0.5 + SLACK_S, took  # from the last piece to the cut
    assert (cut.value.bound, cut.value.bound_s, cut.value.tries) == ("stream_idle_s", 0.5, 1), vars(cut.value)
    assert "sent nothing more of its streamed answer for 0.5 s" in str(cut.value), cut.value
    until = time.monotonic() + 30  # the engine's thread wakes from its stall and writes: late on a loaded machine
    while not Pacing.closed and time.monotonic() < until:
        time.sleep(0.02)
    assert Pacing.closed == 1  # the engine's write after its stall failed: the client had closed the connection


def test_a_stream_the_engine_stalls_while_keep_alive_comments_come_is_cut_at_the_idle_bound(pacing):
    """Session left56: an SSE comment (`: keep-alive`, which servers and proxies send while they have nothing) counted
    as a piece of the stream, so a stall kept alive every 0.1 s was never cut at `stream_idle_s` (0.5 s): the stream
    waited out the stall (1.5 s here; up to `stream_timeout_s`, 600 s by default). Comments are no progress now."""
    Pacing.stall_after, Pacing.stall_s, Pacing.keepalive_s = 3, 1.5, 0.1
    policy = RemotePolicy(timeout_s=5, stream_idle_s=0.5, stream_timeout_s=60, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    pieces: list[str] = []
    last_at = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:  # before: served whole, after the 1.5 s stall
        for piece in remote.stream(MESSAGES):
            pieces.append(piece)
            last_at = time.monotonic()
    took = time.monotonic() - last_at
    assert "".join(pieces) == "w0 w1 w2", pieces
    assert 0.5 <= took < 0.5 + SLACK_S, took
    assert (cut.value.bound, cut.value.bound_s) == ("stream_idle_s", 0.5), vars(cut.value)


def test_a_stream_kept_alive_but_not_begun_within_the_timeout_is_cut_there(pacing):
    """Session left56: keep-alive comments sent while the engine's queue held the chat counted as its first piece, so
    `timeout_s` (the queue and prefill's bound, 0.5 s here) was met by the first comment, and the stream waited 1.5 s
    (up to `stream_timeout_s`) for its first word. Now it is cut at `timeout_s`, naming it; a stream whose first event
    comes in time after comments is served whole."""
    Pacing.first_after_s, Pacing.keepalive_s = 1.5, 0.1
    policy = RemotePolicy(timeout_s=0.5, stream_idle_s=60, stream_timeout_s=60, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    began = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:  # before: served whole after 1.5 s
        streamed(remote)
    assert time.monotonic() - began < 0.5 + SLACK_S
    assert cut.value.bound == "timeout_s" and "did not begin its streamed answer within 0.5 s" in str(cut.value), vars(cut.value)
    Pacing.first_after_s = 0.3
    assert streamed(remote)[0] == " ".join(f"w{i}" for i in range(6))


def test_a_stream_whose_headers_do_not_come_is_cut_at_its_whole_bound_when_that_is_the_lower(pacing):
    """Session left56: with `stream_timeout_s` (0.5 s) below `timeout_s` (5 s), a stream whose server held back its
    headers was waited for up to `timeout_s` (here until they came, 1.5 s), past the stream's whole bound, though its
    first piece was bounded by it. Now its headers are too: cut at 0.5 s naming `stream_timeout_s`. A non-streamed chat
    keeps `timeout_s`."""
    Pacing.headers_after_s = 1.5
    policy = RemotePolicy(timeout_s=5, stream_idle_s=60, stream_timeout_s=0.5, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    began = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:
        streamed(remote)
    assert time.monotonic() - began < 0.5 + SLACK_S  # before: 1.5 s, the headers' wait
    assert (cut.value.bound, cut.value.bound_s) == ("stream_timeout_s", 0.5), vars(cut.value)
    assert "did not send its whole streamed answer within 0.5 s" in str(cut.value), cut.value
    assert remote.generate(MESSAGES)[0][0].text == "once"  # no headers' wait on a non-streamed answer here
    remote.close()


def test_a_stream_past_its_own_whole_bound_is_cut_there(pacing):
    """A stream whose pieces come steadily, each well within `stream_idle_s`, ends by `stream_timeout_s` from its send
    (a server sending a byte at a time is given up there too: `tests/unit/test_remote54_whole_bound.py`)."""
    Pacing.words, Pacing.every_s = 30, 0.1
    policy = RemotePolicy(timeout_s=5, stream_idle_s=1, stream_timeout_s=0.8, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    began = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:
        list(remote.stream(MESSAGES))
    took = time.monotonic() - began
    assert 0.8 <= took < 0.8 + SLACK_S, took
    assert (cut.value.bound, cut.value.bound_s) == ("stream_timeout_s", 0.8), vars(cut.value)
    assert "did not send its whole streamed answer within 0.8 s" in str(cut.value), cut.value


def test_a_stream_whose_engine_never_begins_is_cut_at_the_timeout(pacing):
    """Until its first piece a stream waits no longer than a non-streamed call's whole (`timeout_s`: the engine's queue
    and prefill), whatever `stream_idle_s` says."""
    Pacing.stall_after, Pacing.stall_s = 0, 1.5
    policy = RemotePolicy(timeout_s=0.5, stream_idle_s=2, stream_timeout_s=60, max_retries=0)
    remote = RemoteGenerator(f"{pacing}/v1", "base", policy=policy)
    began = time.monotonic()
    with pytest.raises(GenerationTimedOut) as cut:
        list(remote.stream(MESSAGES))
    took = time.monotonic() - began
    assert 0.5 <= took < 0.5 + SLACK_S, took
    assert (cut.value.bound, cut.value.bound_s) == ("timeout_s", 0.5), vars(cut.value)
    assert "did not begin its streamed answer within 0.5 s" in str(cut.value), cut.value


@pytest.mark.parametrize("field", ["stream_idle_s", "stream_timeout_s"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, 86401.0])
def test_a_stream_bound_no_socket_takes_is_refused_when_made(field, value):
    with pytest.raises(ValueError, match=field):
        RemotePolicy(**{field: value})


HUNG = "generation-server.hangs.test"  # a name whose lookup hangs


@pytest.fixture
def hung_lookup(monkeypatch):
    """`socket.getaddrinfo` (the system resolver, which `socket.create_connection` asks) hanging for HUNG until the test
    ends (3 s at most), as a resolver whose DNS server never answers does; every other name as it is. Yields the
    event that ends the hang; the lookups that hung are counted in `hung`."""
    release, hung = threading.Event(), []
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == HUNG:
            hung.append(threading.current_thread().name)
            release.wait(3.0)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield hung
    release.set()


def test_a_server_whose_name_lookup_hangs_holds_a_chat_no_longer_than_its_bound(root, hung_lookup):  # root: a warm client
    """The lookup of the generation server's name (`getaddrinfo`) was bounded by nothing but the system resolver's own
    timeouts: a DNS server that never answers held the chat, and its thread, past every bound (here until the lookup
    gave up, 3 s). Now the lookup is waited for within the connect's bound and the request's deadline: the chat ends
    there, its thread free, and a second chat meanwhile shares the lookup under way rather than starting another."""
    remote = RemoteGenerator(f"http://{HUNG}:9/v1", "base", policy=RemotePolicy(timeout_s=0.5, max_retries=0))
    said = {"generate": "did not answer within 0.5 s", "stream": "did not begin its streamed answer within 0.5 s"}
    for name, call in (("generate", lambda: remote.generate(MESSAGES)), ("stream", lambda: list(remote.stream(MESSAGES)))):
        began = time.monotonic()
        with pytest.raises(RemoteGeneratorError) as err:
            call()
        took = time.monotonic() - began
        assert took < 0.5 + SLACK_S, took  # before: 3 s, the hang's end
        assert isinstance(err.value, GenerationTimedOut) and said[name] in str(err.value), err.value
    assert len(hung_lookup) == 1, hung_lookup  # the second chat waited on the first's lookup, still hung
