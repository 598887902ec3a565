"""A client that shuts its sending side after a whole request (`shutdown(SHUT_WR)`, `nc -N`, some proxies) reads its
answer from `pluralign serve`'s protocol, and the connection closes after it (RFC 9112 9.6: a half-close says only that
nothing more will be sent). uvicorn's own `eof_received` returns None, so asyncio closed the connection and the answer
was dropped while the request still ran (session small47 pinned that and documented it as uvicorn's); the service's
`TimedRequests.eof_received` now keeps the connection open for the answer. A chat (`WATCHES_ITS_CLIENT`) is still
taken as its client gone: a half-close cannot be told from a close, and a chat's generation stops when its client goes."""

from __future__ import annotations

import asyncio

import pytest

from tests.serving import on_parser, sent_then_half_closed


def _half_closed_exchange(http: str, monkeypatch, request: bytes) -> tuple[bytes, list[str]]:
    """`request` sent to an app behind `timed_http_protocol` on uvicorn's `http` parser, the client's side shut at once;
    (what the client read until the connection closed, what the app's `receive` gave after the body)."""
    on_parser(monkeypatch, http)
    seen: list[str] = []

    async def app(scope, receive, send) -> None:
        await receive()  # the (empty) body
        try:  # what the server makes of the client's EOF: a disconnect, or nothing until the answer
            seen.append((await asyncio.wait_for(receive(), 0.3))["type"])
        except TimeoutError:
            seen.append("nothing")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return sent_then_half_closed(app, request, client_timeout_s=20), seen


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_request_whose_client_half_closed_is_answered_then_closed(monkeypatch, http):
    """Before: (b'', ['http.disconnect']) with both parsers."""
    answer, seen = _half_closed_exchange(http, monkeypatch, b"GET /v1/users/ann HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nok"), answer
    assert seen == ["nothing"], seen


@pytest.mark.parametrize(("http", "path"), [("h11", "/v1/chat/completions"), ("httptools", "/v1/chat/completions"),
                                           ("httptools", "/v1/chat/completions/"), ("h11", "//v1//chat/completions")])
def test_a_chat_whose_client_half_closed_is_taken_as_its_client_gone(monkeypatch, http, path):
    """Litestar routes `/v1/chat/completions/` and `//v1//chat/completions` to the chat too (its `normalize_path`); until
    the review of session older49 their client's end of input was not taken as its going (the path was matched as
    sent): a chat whose client had closed its connection kept generating, holding its slot, to its last token."""
    body = b"{}"
    answer, seen = _half_closed_exchange(http, monkeypatch, b"POST %s HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(body), body))
    assert (answer, seen) == (b"", ["http.disconnect"]), (answer, seen)


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_a_request_pipelined_in_part_before_a_half_close_ends_the_connection(monkeypatch, http):
    """A whole GET, then a POST whose body stops short, then the client's half-close: nothing more of the POST can come,
    so the connection ends (an app waiting for that body reads a disconnect). h11 parses the POST only once the GET was
    answered; until the review of session older49 `on_response_complete` then kept the half-closed connection open for
    it with no read deadline (it returned before arming one): the connection, and the app waiting for a body that
    could not come, stayed for good (still open 8 s on, with a 2 s deadline)."""
    on_parser(monkeypatch, http)

    async def app(scope, receive, send) -> None:
        while (message := await receive())["type"] == "http.request" and message.get("more_body"):
            pass
        await asyncio.sleep(0.3)  # the GET answered after the client's half-close came
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    answer = sent_then_half_closed(  # a TimeoutError: still open after 5 s
        app, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        client_timeout_s=5)
    assert answer.count(b"HTTP/1.1 ") <= 1, answer  # the GET's answer (h11), never one for the POST
