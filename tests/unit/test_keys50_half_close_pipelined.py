"""A client's half-close after requests pipelined whole (`TimedRequests.eof_received`): the answers of those before a chat
go out, and a chat is taken as its client gone wherever it stands in the pipeline (docs/api.md, "half-closes")."""

from __future__ import annotations

import asyncio

import pytest

from tests.serving import on_parser, sent_then_half_closed

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
GET = b"GET /v1/users/ann HTTP/1.1\r\nHost: x\r\n\r\n"


def _pipelined_then_half_closed(http: str, monkeypatch, requests: bytes) -> tuple[bytes, dict[str, str]]:
    """`requests` sent at once to an app behind `timed_http_protocol` on uvicorn's `http` parser, then the client's side
    shut; (what the client read until the server closed, what each request's app read after its body: a disconnect, or
    "nothing" within 1 s)."""
    on_parser(monkeypatch, http)
    seen: dict[str, str] = {}

    async def app(scope, receive, send) -> None:
        await receive()  # the body, whole
        if scope["method"] == "POST":  # a chat watches its client while it generates
            try:
                seen["chat"] = (await asyncio.wait_for(receive(), 1.0))["type"]
            except TimeoutError:
                seen["chat"] = "nothing"
        else:
            await asyncio.sleep(0.05)  # the GET still running when the half-close comes
            seen["get"] = "answered"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return sent_then_half_closed(app, requests, client_timeout_s=10), seen


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_get_pipelined_before_a_chat_is_answered_after_a_half_close(monkeypatch, http):
    """Before, httptools: no answer (b''): the chat queued behind the GET was taken for the request running, so the
    connection was closed at the half-close and the GET's answer, written after, was lost. h11: two answers: the chat
    began once the GET was answered and never read its client gone ("nothing"): it generated to its end."""
    answer, seen = _pipelined_then_half_closed(http, monkeypatch, GET + CHAT)
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer
    assert seen == {"get": "answered", "chat": "http.disconnect"}, seen


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_chat_running_with_a_get_pipelined_behind_it_reads_its_client_gone(monkeypatch, http):
    """Before, httptools: the chat's answer, having read "nothing": uvicorn's `connection_lost` told its newest cycle (the queued GET) alone, and
    `eof_received` looked at that one, so the chat kept generating for a client taken as gone."""
    answer, seen = _pipelined_then_half_closed(http, monkeypatch, CHAT + GET)
    assert answer == b"" and seen == {"chat": "http.disconnect"}, (answer, seen)
