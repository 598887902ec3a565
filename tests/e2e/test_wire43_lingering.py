"""wire43: the connections left half closed after a last answer (`TimedRequests.linger`: a 400, a 408, a 503 over
PLURALIGN_MAX_CONNECTIONS) are REFUSED_LINGERING at most; one more was closed at once, so a client still sending
met a closed socket and read a reset, not its answer. One client could take every such slot, and so have other
clients' answers reset: by opening connections that sent nothing (each lingered once its deadline passed, with no
answer to keep), or by sending bytes the parser refuses (each 400 lingered while its client held it open).

The protocol is the one `pluralign serve` builds (`timed_http_protocol`), run by uvicorn on loopback in this process
(tests/e2e/test_reviewf42_pipelined_body.py's fixture, both parsers); the other client connects from 127.0.0.2, a
peer of its own. REFUSED_LINGER_S is raised for the test, so the slots taken stay taken while it runs."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.test_break36_slow_clients import send_the_rest_unreset
from tests.e2e.test_reviewf42_pipelined_body import served  # noqa: F401 (the fixture)
from training.commands import serve

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the connection's state from Linux's TCP_INFO")


def _ended(sock: socket.socket) -> bytes:
    """What the service sent on `sock` until its end of the connection (its half close, or its close)."""
    sock.settimeout(30)
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


def _a_body_trickled_past_the_deadline_reads_its_408(port: int, source: str) -> None:
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        answer = _ended(sock)  # the 408 at the deadline, then the service's end of the connection
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        send_the_rest_unreset(sock, b"b" * 90)


def test_connections_that_sent_nothing_take_no_slot_of_the_answers_kept_for_their_clients(served, monkeypatch):  # noqa: F811
    """Before: each of REFUSED_LINGERING connections that sent nothing lingered once its deadline passed (an end
    read, no answer), holding a slot REFUSED_LINGER_S; the next client's 408 was closed at once, and its late bytes
    reset the connection. A connection with nothing sent has nothing unread and no answer to lose: closed at once."""
    monkeypatch.setattr(serve, "REFUSED_LINGER_S", 60.0)
    _, port = served
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(serve.REFUSED_LINGERING)]
    try:
        for sock in idle:
            assert _ended(sock) == b""  # the deadline passed: the service's end, no answer
        _a_body_trickled_past_the_deadline_reads_its_408(port, "127.0.0.1")
    finally:
        for sock in idle:
            sock.close()


def test_one_peer_refused_many_times_does_not_have_another_peers_answer_reset(served, monkeypatch):  # noqa: F811
    """Before: one peer's REFUSED_LINGERING connections answered 400 (bytes that are not HTTP), held open, took every
    slot; another peer's 408 was then closed at once and reset. Now a connection to linger with every slot taken takes
    the oldest slot of the peer holding the most (that peer's client had the longest to read its answer)."""
    monkeypatch.setattr(serve, "REFUSED_LINGER_S", 60.0)
    _, port = served
    refused = [socket.create_connection(("127.0.0.1", port)) for _ in range(serve.REFUSED_LINGERING)]
    try:
        for sock in refused:
            sock.sendall(b"\x00\x01 not http\r\n\r\n")
            assert _ended(sock).startswith(b"HTTP/1.1 400 ")  # its 400, then the service's half close: a slot taken
        _a_body_trickled_past_the_deadline_reads_its_408(port, "127.0.0.2")
    finally:
        for sock in refused:
            sock.close()
