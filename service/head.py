"""HEAD wherever GET is (RFC 9110, 9.3.2: a general-purpose server supports both): `curl -I`, uptime
monitors and link checkers ask with HEAD, and Litestar routes only the methods a handler declares,
so every GET route answered HEAD with a 405.

The request is served as the GET it stands for (the same status and headers, `Content-Length` and
`ETag` included) and the body is dropped; a path without GET answers HEAD with its 405 and `Allow`.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send


def with_head(methods: str) -> str:
    """An `Allow` value ("OPTIONS, GET") with HEAD added where GET is, sorted: "GET, HEAD, OPTIONS"."""
    names = {m.strip() for m in methods.split(",") if m.strip()}
    if "GET" in names:
        names.add("HEAD")
    return ", ".join(sorted(names))


def answer_head(app: ASGIApp) -> ASGIApp:
    """Wraps the app's ASGI handler (outside its routing): a HEAD request is routed as GET and its
    answer's body is left out."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a streamed body's parts: none is sent
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # a copy: the server's own scope stays HEAD, so it sends no body and expects none
        await app({**scope, "method": "GET"}, receive, headers_only)  # type: ignore[arg-type]

    return handler
