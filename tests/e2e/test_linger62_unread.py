"""linger62: connections whose clients never read what they were sent. The service closed such a connection
(`Connection: close` after its answer, uvicorn's keep-alive close, `make_room`, a lingering 400's end) with
`transport.close`, which writes what the transport still holds first: to a client that reads nothing, never. asyncio
kept the transport, its file descriptor and its unsent bytes until the client read or went, and uvicorn kept it among
the server's connections until then (`connection_lost`), so under PLURALIGN_MAX_CONNECTIONS a few such clients, each
asking for a large answer and reading none of it, held the limit's every slot for good: every later client was
answered 503. An answer pipelined behind one the client does not read waited (`flow.drain`) for good too, its
connection open. Now a connection whose client has read none of what it holds for UNREAD_ABORT_S is aborted; an
answer part way on an open connection is left to its route (exports bound their own wait).

The protocol is the one `pluralign serve` builds (`timed_http_protocol`), run by uvicorn on loopback in this process,
both parsers, with tests/e2e/test_reviewf42_pipelined_body.py's app (`/large`: LARGE_ANSWER bytes in one write). Both
ends' socket buffers are set small (as test_wire43_lingering.py's slot test), so the kernel holds little of it."""

from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from service.users import exports
from tests.e2e.test_reviewf42_pipelined_body import LARGE_ANSWER, HeldAnswers
from tests.serving import on_parser, timed_server
from training.commands import serve

LIMIT = 3  # PLURALIGN_MAX_CONNECTIONS for the test: each of its clients takes one


def _descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settled(read, done, timeout_s: float = 10.0):
    """`read()` once `done` holds of it, or its last value `timeout_s` on (read every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def _asked_and_unread(port: int, request: bytes) -> socket.socket:
    """A client with a small receive window that sends `request` and reads nothing, once its answer has begun."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers stays small
    client.settimeout(30)
    client.connect(("127.0.0.1", port))
    client.sendall(request)
    assert client.recv(1, socket.MSG_PEEK) == b"H"  # the answer began: the rest waits in the service's transport
    return client


def _served(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        answer = b""
        while data := client.recv(65536):
            answer += data
    return answer


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize(("request_", "answered"), [
    pytest.param(b"GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", LARGE_ANSWER, id="closed-after-its-answer"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 32768\r\n\r\n" + b"y" * 32768, 32768,
                 id="closed-its-writes-never-paused"),  # under asyncio's 64 KiB high-water mark: only the close is seen
    pytest.param(b"GET /large HTTP/1.1\r\nHost: x\r\n\r\nGET /large HTTP/1.1\r\nHost: x\r\n\r\n", LARGE_ANSWER,
                 id="answer-waiting-to-be-read"),
])
def test_clients_that_never_read_hold_no_connection_past_the_unread_bound(monkeypatch, http, request_, answered):
    """LIMIT clients each ask for an answer (`answered` bytes, more than the sockets hold) and read none of it (one
    closed after its answer; or a second answer pipelined behind it, its app waiting for the first to drain). They hold the limit's slots and a descriptor each,
    and another client is refused 503, until UNREAD_ABORT_S (made short) has passed with nothing read: then the
    service holds none of their descriptors, counts none of them open, and the next client is answered."""
    on_parser(monkeypatch, http)
    monkeypatch.setattr(serve, "UNREAD_ABORT_S", 0.5, raising=False)
    real = serve.TimedRequests.connection_made

    def send_buffer_locked_small(self, transport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        real(self, transport)

    monkeypatch.setattr(serve.TimedRequests, "connection_made", send_buffer_locked_small)
    counts = serve.ConnectionCounts(LIMIT)
    with timed_server(HeldAnswers(), 30, LIMIT, connections=counts) as port:
        before = _descriptors()
        clients = [_asked_and_unread(port, request_) for _ in range(LIMIT)]
        try:
            refused = _served(port)  # asked while the never-reading clients hold every slot (or once they were let go)
            assert refused.startswith(b"HTTP/1.1 503 ") or counts.open < LIMIT, refused[:200]
            held = _settled(lambda: (counts.open, _descriptors() - before), lambda n: n == (0, LIMIT))
            assert held == (0, LIMIT), held  # (connections the service counts, descriptors beyond the clients' own)
            answer = _served(port)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nhi"), answer[:200]
            for client in clients:  # what the kernels held of the answer, then the end: the rest was dropped, not sent
                read = 0
                while data := client.recv(65536):
                    read += len(data)
                assert read < answered, read
        finally:
            for client in clients:
                client.close()


async def _one_answer_in_two_writes(scope, receive, send) -> None:
    """An ASGI app: LARGE_ANSWER bytes, then the answer's end in a later write (which waits for the first to drain).
    `/export` is answered behind the export route's middleware (`exports.export_guard`: it bounds its own wait)."""
    if scope["path"] == "/export":
        scope["litestar_app"] = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(
            settings=SimpleNamespace(export_send_timeout_s=60.0))))
        await _exported(scope, receive, send)
        return
    await _two_writes(scope, receive, send)


async def _two_writes(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(LARGE_ANSWER + 3).encode())]})
    await send({"type": "http.response.body", "body": b"x" * LARGE_ANSWER, "more_body": True})
    await send({"type": "http.response.body", "body": b"end"})


_exported = exports.export_guard(_two_writes)


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_an_answer_part_way_to_a_client_not_reading_is_left_to_its_route(monkeypatch, http):
    """The abort is for bytes of whole answers, of a stream, or of a closed connection: an export part way on an open
    connection (whose route bounds its own wait: `export_send_timeout_s`) is looked at and left, however often;
    its client, reading at last, reads it whole."""
    on_parser(monkeypatch, http)
    monkeypatch.setattr(serve, "UNREAD_ABORT_S", 0.05, raising=False)
    real_connection_made, real_look = serve.TimedRequests.connection_made, serve.TimedRequests.unread_looked_at
    looks = []

    def send_buffer_locked_small(self, transport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        real_connection_made(self, transport)

    def counted_look(self) -> None:
        looks.append(self)
        real_look(self)

    monkeypatch.setattr(serve.TimedRequests, "connection_made", send_buffer_locked_small)
    monkeypatch.setattr(serve.TimedRequests, "unread_looked_at", counted_look)
    counts = serve.ConnectionCounts(LIMIT)
    with timed_server(_one_answer_in_two_writes, 30, LIMIT, connections=counts) as port:
        client = _asked_and_unread(port, b"GET /export HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with client:
            assert _settled(lambda: len(looks), lambda n: n >= 3) >= 3  # looked at three times with nothing read
            assert counts.open == 1
            monkeypatch.setattr(serve, "UNREAD_ABORT_S", 30.0)  # the looks from now on: none while the client reads
            answer = b""
            while data := client.recv(65536):
                answer += data
    assert answer.endswith(b"\r\n\r\n" + b"x" * LARGE_ANSWER + b"end"), (answer[:100], len(answer))


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_client_reading_slowly_is_not_cut(monkeypatch, http):
    """review linger62: a client reading a large answer a little at a time (a phone on a bad network) is not cut while
    it reads some within each look. The kernel takes bytes from the transport only once a third of its send buffer is
    free, so what it took said nothing of a slow reader's progress: the watch read none taken and aborted one reading
    all along. What the client's kernel acknowledged is counted. Each look waits until the client has read a little
    since the last (4 KiB, its ACK sent at once: TCP_QUICKACK), so nothing here depends on timing."""
    import select
    import threading

    on_parser(monkeypatch, http)
    monkeypatch.setattr(serve, "UNREAD_ABORT_S", 0.05)
    real_connection_made, real_look = serve.TimedRequests.connection_made, serve.TimedRequests.unread_looked_at
    looking, read_a_little, rounds = threading.Event(), threading.Event(), 3

    def send_buffer_locked(self, transport) -> None:  # a third of it (~170 KiB) is more than the client reads per look
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
        real_connection_made(self, transport)

    def look_once_read(self) -> None:
        if not rounds_left:  # the rounds done: looks go on as they come
            return real_look(self)
        looking.set()
        read_a_little.wait(10)
        read_a_little.clear()
        rounds_left.pop()
        real_look(self)

    rounds_left = [None] * rounds
    monkeypatch.setattr(serve.TimedRequests, "connection_made", send_buffer_locked)
    monkeypatch.setattr(serve.TimedRequests, "unread_looked_at", look_once_read)
    with timed_server(HeldAnswers(), 30, LIMIT) as port:
        client = _asked_and_unread(port, b"GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with client:
            answer = b""
            for _ in range(rounds):
                assert looking.wait(10), f"no look came: cut once {len(answer)} bytes were read"  # a look waits for a read
                looking.clear()
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                answer += client.recv(4096)
                assert select.select([client], [], [], 10)[0]  # what that let through came, and was acknowledged
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                read_a_little.set()
            monkeypatch.setattr(serve, "UNREAD_ABORT_S", 30.0)  # the looks from now on: none while the client reads
            while data := client.recv(65536):
                answer += data
    assert answer.endswith(b"\r\n\r\n" + b"x" * LARGE_ANSWER), (answer[:100], len(answer))


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_stream_part_way_to_a_client_not_reading_is_aborted(monkeypatch, http):
    """review linger62: an answer part way whose route does not bound its wait (a chat stream: uvicorn's drain waits
    without a bound, and the chat route has no send timeout) held its connection, one of the limit and its descriptor
    for as long as its client read nothing. It is aborted as a whole answer is: the service then counts it not, holds
    no descriptor of it, and the client reads less than the answer, then the end."""
    on_parser(monkeypatch, http)
    monkeypatch.setattr(serve, "UNREAD_ABORT_S", 0.05)
    real_connection_made = serve.TimedRequests.connection_made

    def send_buffer_locked_small(self, transport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        real_connection_made(self, transport)

    monkeypatch.setattr(serve.TimedRequests, "connection_made", send_buffer_locked_small)
    counts = serve.ConnectionCounts(LIMIT)
    with timed_server(_one_answer_in_two_writes, 30, LIMIT, connections=counts) as port:
        before = _descriptors()
        client = _asked_and_unread(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        with client:
            held = _settled(lambda: (counts.open, _descriptors() - before), lambda n: n == (0, 1))
            assert held == (0, 1), held  # (connections the service counts, descriptors beyond the client's own)
            read = 0
            while data := client.recv(65536):
                read += len(data)
    assert read < LARGE_ANSWER, read
