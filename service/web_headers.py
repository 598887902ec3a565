"""Headers every answer gets, whatever route (or none) produced it: caching and content sniffing.

An answer to a request that needs a key holds a tenant's data (a user's profile, preferences, export,
a chat completion, the admin pages): a shared cache (a CDN, a corporate proxy) must never store it
and serve it to someone else, and a browser must not keep it on disk. Such answers get
`Cache-Control: no-store` (unless the handler chose its own) and `Vary: Authorization` (the key picks
the tenant; the admin area adds `Cookie`, the dashboard's session), its errors included. The public
paths (`service.auth.PUBLIC_PATHS`: /health, /metrics, /schema and its assets, the login form) keep
what their handlers send: they hold no tenant's data and may be cached.

Every answer gets `X-Content-Type-Options: nosniff`: a browser never reads an export or an error
body holding user text as HTML or script whatever its bytes look like.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from litestar.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = b"no-store"


def keyed_answers(app: ASGIApp, public_paths: Sequence[str]) -> ASGIApp:
    """Wraps an ASGI app (outermost): `Cache-Control`/`Vary` on answers of keyed paths (any path not
    matching one of the `public_paths` regexes), `X-Content-Type-Options: nosniff` on all."""
    public = [re.compile(p) for p in public_paths]

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        keyed = not any(p.search(path) for p in public)
        varies = b"Authorization, Cookie" if path.startswith("/admin") else b"Authorization"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {bytes(name).lower() for name, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if keyed:
                    if b"cache-control" not in names:
                        headers.append((b"cache-control", NO_STORE))
                    headers = _add_vary(headers, varies)
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, with_headers)

    return handler


def _add_vary(headers: list[tuple[bytes, bytes]], names: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with `names` ("Authorization, Cookie") in one `Vary`, merged with any already there."""
    present = [v for n, v in headers if bytes(n).lower() == b"vary"]
    listed = [v.strip() for value in present for v in bytes(value).split(b",") if v.strip()]
    known = {v.lower() for v in listed}
    listed += [n.strip() for n in names.split(b",") if n.strip().lower() not in known]
    return [(n, v) for n, v in headers if bytes(n).lower() != b"vary"] + [(b"vary", b", ".join(listed))]
