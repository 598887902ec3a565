"""An answer cut part way (an export whose client stopped reading, `export_send_timeout_s`) with a request pipelined
behind it: its connection is closed at once, its unwritten bytes dropped (`CutAnswersAbort`), as with nothing behind it.
Under `pluralign serve`, one request alone: tests/e2e/test_exportcap38_serve.py."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.serving import on_parser, timed_server

EXPORT = b"GET /v1/export HTTP/1.1\r\nHost: x\r\n\r\n"
GET = b"GET /v1/users/ann HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("behind", [b"", GET], ids=["alone", "a GET pipelined behind it"])
def test_an_answer_cut_part_way_closes_its_connection_at_once_whatever_is_pipelined_behind_it(monkeypatch, http, behind):
    """Before, httptools with a GET behind: the connection stayed open (its file descriptor, one of
    PLURALIGN_MAX_CONNECTIONS, held) for as long as the client did: `CutAnswersAbort.close` looked at httptools' newest
    cycle, the GET queued, not begun, so the cut answer's close waited to write 10s of MB the client never took."""
    from training.commands.serve import ConnectionCounts

    on_parser(monkeypatch, http)
    cut = asyncio.Event()

    async def app(scope, receive, send) -> None:
        if scope["path"] != "/v1/export":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(64):  # 64 MB, more than the sockets hold: the client reads none of it
            try:
                await asyncio.wait_for(send({"type": "http.response.body", "body": b"x" * (1 << 20), "more_body": True}), 0.1)
            except TimeoutError:  # the export's send timeout: the answer is cut
                cut.set()
                return

    counts = ConnectionCounts(None)
    with timed_server(app, timeout_s=30, connections=counts) as port, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(EXPORT + behind)
        deadline = time.monotonic() + 5
        while not (cut.is_set() and counts.open == 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cut.is_set() and counts.open == 0, (cut.is_set(), counts.open)
