"""A chat's client gone while a request pipelined behind the chat is queued (httptools parses ahead and keeps the chat's
follower as its newest cycle): the chat, the request running, reads its client gone (`TimedRequests.connection_lost`),
as it does with nothing behind it. docs/api.md, "half-closes"; the half-close after whole requests:
tests/unit/test_keys50_half_close_pipelined.py."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from tests.serving import on_parser, timed_server

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
GET = b"GET /v1/users/ann HTTP/1.1\r\nHost: x\r\n\r\n"
PART = b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"  # its body cut: 1 byte of 10


def _chat_read_after(http: str, monkeypatch, requests: bytes, end: str) -> str:
    """What the chat's app read after its body (an `http.disconnect`, or "nothing" within 2 s) when `requests` were sent
    at once to an app behind `timed_http_protocol` on uvicorn's `http` parser, and the client then ended the connection:
    `end` "reset" (SO_LINGER 0: an RST, no FIN) or "half-close" (`shutdown(SHUT_WR)`)."""
    on_parser(monkeypatch, http)
    read: dict[str, str] = {}
    began = threading.Event()

    async def app(scope, receive, send) -> None:
        await receive()  # the body, whole
        if scope["path"] == "/v1/chat/completions":  # a chat watches its client while it generates
            began.set()  # its body read: what was pipelined behind it is parsed too (it came in the same packet)
            try:
                read["chat"] = (await asyncio.wait_for(receive(), 2.0))["type"]
            except TimeoutError:
                read["chat"] = "nothing"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with timed_server(app, timeout_s=30) as port:
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            client.sendall(requests)
            assert began.wait(10)
            if end == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                client.shutdown(socket.SHUT_WR)
                client.settimeout(10)
                while client.recv(4096):  # to the server's close
                    pass
        finally:
            client.close()
        deadline = time.monotonic() + 5  # what the chat read: at once, or "nothing" after the 2 s it waits
        while "chat" not in read and time.monotonic() < deadline:
            time.sleep(0.01)
    return read.get("chat", "not begun")


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_chat_with_a_request_pipelined_behind_it_reads_its_client_gone_when_the_connection_is_reset(monkeypatch, http):
    """Before, httptools: "nothing": uvicorn's `connection_lost` told its newest cycle (the GET queued behind the chat)
    alone, so the chat generated to its end for a client that had gone (its generation slot held meanwhile)."""
    assert _chat_read_after(http, monkeypatch, CHAT + GET, "reset") == "http.disconnect"


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_chat_with_a_request_cut_behind_it_reads_its_client_gone_at_a_half_close(monkeypatch, http):
    """A half-close while the request behind the chat is still arriving closes the connection (nothing more of it will
    come). Before, httptools: the chat read "nothing" (`eof_received` left the close to uvicorn's `connection_lost`,
    which told the cut request alone)."""
    assert _chat_read_after(http, monkeypatch, CHAT + PART, "half-close") == "http.disconnect"
