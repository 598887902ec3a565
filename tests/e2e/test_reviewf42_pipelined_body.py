"""Review of flaky42 (`pluralign serve`'s read deadline, training/commands/serve.py `TimedRequests`): a request
pipelined behind one whose answer is still going out, its body sent at once but in a later packet than its head.

httptools parses ahead: it queues the second request (its app not started) and stops reading the connection until
the first answer is out, so the second's body waits unread in the socket, not on the client. Before: the deadline
ran on it all the same; at PLURALIGN_REQUEST_READ_TIMEOUT_S a 408 (`param: "body"`, "send it in smaller
requests") was written into the middle of the first answer, the connection ended, and the first app's next write
raised (`Cannot call write() after write_eof()`: "Exception in ASGI application" logged). Now the deadline waits
for the answer before it, as it does for a pipelined request still in its headers.

The protocol is the one `pluralign serve` builds (`timed_http_protocol`), run by uvicorn on loopback in this
process; the app is a few lines of ASGI whose first answer waits until the test lets it go, which no route of
the service does on demand (a chat or an export would have to outlast the deadline)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.e2e.test_break36_slow_clients import send_the_rest_unreset
from tests.serving import timed_server

TIMEOUT_S = 0.2  # the read deadline; the test waits out three of them
LARGE_ANSWER = 1 << 20  # many times what the sockets hold where the test locks their buffers small (test_wire43_lingering.py)


class HeldAnswers:
    """An ASGI app: `GET /held` answers its first half at once and the rest once `release` is called; `/early` is
    answered 401 without its body being read; `/large` is answered LARGE_ANSWER bytes in one write; any other request
    is answered with its own body. `failures` collects what the app's writes raised."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.go: asyncio.Event | None = None
        self.failures: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        self.loop = asyncio.get_running_loop()
        if scope["path"] == "/early":  # answered before its body is read, as the service's 401 for a wrong key is
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": b"nope"})
            return
        if scope["path"] == "/large":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(LARGE_ANSWER).encode())]})
            await send({"type": "http.response.body", "body": b"x" * LARGE_ANSWER})
            return
        if scope["path"] == "/held":
            self.go = asyncio.Event()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"01234", "more_body": True})
            await self.go.wait()
            try:
                await send({"type": "http.response.body", "body": b"56789"})
            except Exception as exc:
                self.failures.append(repr(exc))
                raise
            return
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.go.set)


@pytest.fixture(params=["httptools", "h11"])
def served(request, monkeypatch):
    if request.param == "h11":  # as tests/e2e/test_break36_slow_clients.py's WITH_H11: uvicorn's choice where httptools is missing
        import uvicorn.protocols.http.auto as auto
        from uvicorn.protocols.http.h11_impl import H11Protocol

        monkeypatch.setattr(auto, "AutoHTTPProtocol", H11Protocol)
    app = HeldAnswers()
    with timed_server(app, TIMEOUT_S) as port:
        yield app, port


def test_a_body_pipelined_behind_an_answer_still_going_out_is_not_answered_408_into_it(served):
    app, port = served
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        answer = sock.recv(65536)
        assert answer.endswith(b"\r\n\r\n01234"), answer  # the first answer's first half: the second request was parsed by now
        sock.sendall(b"abcdefghij")  # the body, at once: it waits in the socket while the first answer goes out
        sock.settimeout(3 * TIMEOUT_S)
        try:  # the deadlines the second request's first byte started pass
            answer += sock.recv(65536)
        except TimeoutError:
            pass
        app.release()
        sock.settimeout(10)
        while answer.count(b"HTTP/1.1 ") < 2 or not answer.endswith(b"abcdefghij"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    first, _, second = answer.partition(b"HTTP/1.1 ")[2].partition(b"HTTP/1.1 ")
    assert first.endswith(b"\r\n\r\n0123456789") and second.startswith(b"200 ") and second.endswith(b"\r\n\r\nabcdefghij"), answer
    assert app.failures == []


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the connection's state from Linux's TCP_INFO")
def test_a_client_still_sending_a_body_already_answered_at_the_deadline_is_not_reset(served):
    """A request answered before its body was read (the service's 401 for a wrong key does so), the client still
    sending that body past the deadline (a client that writes a whole body before it reads, on a slow link). Before:
    the deadline closed the connection at once, as for an answer still going out, though this one was whole: the
    bytes the client sent on met a closed socket, which answered with a reset (its write said EPIPE), as flaky42 fixed
    for the 408. Now it is half closed (`linger`), as after the 408: the client reads its answer and an end."""
    _, port = served
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        answer = b""
        while data := sock.recv(65536):  # the 401 at once, then, at the deadline, the service's end of the connection
            answer += data
        assert answer.startswith(b"HTTP/1.1 401 ") and answer.endswith(b"nope"), answer
        send_the_rest_unreset(sock, b"b" * 990)
