"""HEAD wherever GET is (RFC 9110, 9.3.2: a general-purpose server supports both): `curl -I`, uptime
monitors and link checkers ask with HEAD, and Litestar routes only the methods a handler declares,
so every GET route answered HEAD with a 405.

The request is routed as the GET it stands for and the body is dropped, so it answers the GET's
status and headers (`Content-Length` and `ETag` included). Most GETs are cheap reads and are simply
run. Two are not, and decide for themselves (`is_head`):
- a GET that starts work (the fairness audit runs a job) refuses HEAD: 405, its `Allow` without HEAD
  (its handler's `opt` is `NO_HEAD`);
- a GET whose body is costly but whose status is cheap to know (a user's export) answers its status
  and headers without building the body.
A path without GET answers HEAD with its 405 and `Allow`.
"""

from __future__ import annotations

from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

HEAD_KEY = "pluralign.head"  # in the scope of a HEAD routed as GET
NO_HEAD = {"head": False}  # a GET handler's `opt` when its GET starts work that a HEAD must not


def is_head(request: Any) -> bool:
    """Whether this GET request is a HEAD (its body is dropped: a handler may skip building it)."""
    return bool(request.scope.get(HEAD_KEY, False))


def takes_head(handler: Any) -> bool:
    """Whether a GET handler answers HEAD (every one but those marked `NO_HEAD`)."""
    return getattr(handler, "opt", {}).get("head", True) is not False


def get_handler(app: Any, path: str) -> Any | None:
    """The GET handler of `path` in a Litestar app, or None (no such path, or no GET on it)."""
    try:
        return app.asgi_router.handle_routing(path=path, method="GET")[1]
    except Exception:  # Litestar's 404 or 405: no GET here
        return None


def with_head(methods: str, head: bool = True) -> str:
    """An `Allow` value ("OPTIONS, GET") with HEAD added where GET is (unless `head` is False), sorted:
    "GET, HEAD, OPTIONS"."""
    names = {m.strip() for m in methods.split(",") if m.strip()}
    if "GET" in names and head:
        names.add("HEAD")
    return ", ".join(sorted(names))


def allow_for(app: Any, path: str, methods: str) -> str:
    """`with_head` for a path: HEAD left out where its GET refuses it."""
    handler = get_handler(app, path) if "GET" in methods else None
    return with_head(methods, handler is None or takes_head(handler))


def answer_head(app: ASGIApp) -> ASGIApp:
    """Wraps the app's ASGI handler (outside its routing): a HEAD request is routed as GET, marked
    `HEAD_KEY`, and its answer's body is left out."""

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
        await app({**scope, "method": "GET", HEAD_KEY: True}, receive, headers_only)  # type: ignore[arg-type]

    return handler
