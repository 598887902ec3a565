"""docs/api.md's note on half-closed connections: a client that shuts its sending side after a whole request gets no
answer from `pluralign serve`'s protocol (uvicorn's `eof_received` lets asyncio close the connection; the service's own
`TimedRequests` adds nothing). RFC 9112 would let a server answer; if uvicorn starts to, this fails: the note must change."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.serving import timed_server


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_request_whose_client_half_closed_is_taken_as_its_client_gone(monkeypatch, http):
    from uvicorn.protocols.http import auto, h11_impl, httptools_impl

    parser = {"h11": h11_impl.H11Protocol, "httptools": httptools_impl.HttpToolsProtocol}[http]
    monkeypatch.setattr(auto, "AutoHTTPProtocol", parser)  # the one `timed_http_protocol` builds on
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        await receive()  # the (empty) body
        try:
            seen.append((await asyncio.wait_for(receive(), 10))["type"])  # what the server makes of the client's EOF
        except TimeoutError:
            seen.append("nothing")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with timed_server(app, timeout_s=30) as port, socket.create_connection(("127.0.0.1", port), timeout=20) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
    assert (answer, seen) == (b"", ["http.disconnect"]), (answer, seen)
