"""Headers every answer gets, whatever route (or none) produced it: caching and content sniffing.

An answer to a request that needs a key holds a tenant's data (a user's profile, preferences, export,
a chat completion, the admin pages): a shared cache (a CDN, a corporate proxy) must never store it
and serve it to someone else, and a browser must not keep it on disk. Such answers get
`Cache-Control: no-store` (unless the handler chose its own) and `Vary: Authorization` (the key picks
the tenant; the admin area adds `Cookie`, the dashboard's session), its errors included. The public
paths (`service.auth.public_paths`: /health, /metrics unless `metrics_admin_only`, /schema and its assets, the login form) keep
what their handlers send: they need no key (a probe sends none), and hold no tenant's data but what a key's own caller
reads: /health answers by the key sent, so its handler sends `Vary: Authorization` on every answer and `no-store` on one
carrying a figure (`service.system.controllers.health_headers`); /metrics, answered by key and caller address too,
sends `no-store` and `Vary: Accept, Authorization` on each answer (`METRICS_HEADERS` there); the others may be cached.

Every answer gets `X-Content-Type-Options: nosniff`: a browser never reads an export or an error
body holding user text as HTML or script whatever its bytes look like.

A request whose `Accept-Encoding` refuses gzip (`gzip;q=0`: RFC 9110, 12.5.3) reaches the app without
it: Litestar's compression looks for the word "gzip" in the header and would send gzip all the same. And
the header reaches it in lower case (codings are case-insensitive, RFC 9110 8.4.1): `GZIP` was sent identity.

With CORS on (`cors_origins`), every answer also says `Vary: Origin`: whether it carries
`Access-Control-Allow-Origin` depends on the request's `Origin`, so a cache must not hand one origin's
copy to another (Litestar adds it only to answers for an allowed origin, and there replaces the `Vary`
the answer had: `VaryKeepingCORS` keeps it, a gzipped answer's `Accept-Encoding`, /metrics' `Accept`). A preflight Litestar
refuses (its plain-text 400 "Disallowed CORS Origin") is answered in the API's error shape, naming
the header at fault: `Origin`, `Access-Control-Request-Method` or `Access-Control-Request-Headers`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from litestar.config.cors import CORSConfig
from litestar.middleware._internal.cors import CORSMiddleware  # the one Litestar wraps its router in (2.25 pinned)
from litestar.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = b"no-store"
_REFUSED = b"Disallowed CORS "  # the start of Litestar's refusal of a preflight (litestar/middleware/_internal/cors.py)
_FAILURES = {  # Litestar's words for what failed -> (the request header at fault, why)
    "Origin": ("Origin", "is not among the origins this service allows (setting cors_origins)"),
    "method": ("Access-Control-Request-Method", "asks for a method CORS does not allow here"),
    "headers": ("Access-Control-Request-Headers", "asks for a header CORS does not allow"),
}


def keyed_answers(app: ASGIApp, public_paths: Sequence[str], cors: bool = False) -> ASGIApp:
    """Wraps an ASGI app (outermost): `Cache-Control`/`Vary` on answers of keyed paths (any path not
    matching one of the `public_paths` regexes), `X-Content-Type-Options: nosniff` on all; with `cors`
    (the app has a CORS config), `Vary: Origin` on all and refused preflights in the API's error shape."""
    public = [re.compile(p) for p in public_paths]

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        scope = _without_refused_gzip(scope)
        path = scope.get("path", "")
        keyed = not any(p.search(path) for p in public)
        varies = b"Authorization, Cookie" if path.startswith("/admin") else b"Authorization"
        varies = b"Origin, " + varies if cors else varies
        preflight = cors and scope["method"] == "OPTIONS" and any(bytes(n).lower() == b"origin" for n, _ in scope.get("headers", []))
        held: list[Message] = []  # a preflight's 400, held until its body says whether Litestar's CORS refused it

        async def with_headers(message: Message) -> None:
            if preflight and (held or (message["type"] == "http.response.start" and message["status"] == 400)):
                held.append(message)
                if message["type"] != "http.response.body" or message.get("more_body", False):
                    return
                for message in _in_error_shape(held):
                    await with_headers_now(message)
                return
            await with_headers_now(message)

        async def with_headers_now(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _answer_headers(message.get("headers", []), keyed, varies, cors)}
            await send(message)

        await app(scope, receive, with_headers)

    return handler


def _answer_headers(headers, keyed: bool, varies: bytes, cors: bool) -> list[tuple[bytes, bytes]]:
    """An answer's `headers` with `nosniff`, and, for a `keyed` path, `Cache-Control: no-store` (unless set)
    and `Vary: <varies>`; a public path's with `Vary: Origin` when `cors`."""
    headers = list(headers)
    names = {bytes(name).lower() for name, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append((b"x-content-type-options", b"nosniff"))
    if keyed:
        if b"cache-control" not in names:
            headers.append((b"cache-control", NO_STORE))
        return _add_vary(headers, varies)
    return _add_vary(headers, b"Origin") if cors else headers


def _add_vary(headers: list[tuple[bytes, bytes]], names: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with `names` ("Authorization, Cookie") in one `Vary`, merged with any already there."""
    present = [v for n, v in headers if bytes(n).lower() == b"vary"]
    listed = [v.strip() for value in present for v in bytes(value).split(b",") if v.strip()]
    known = {v.lower() for v in listed}
    listed += [n.strip() for n in names.split(b",") if n.strip().lower() not in known]
    return [(n, v) for n, v in headers if bytes(n).lower() != b"vary"] + [(b"vary", b", ".join(listed))]


def _in_error_shape(held: list[Message]) -> list[Message]:
    """A preflight's 400 (its start and body messages): Litestar's plain-text CORS refusal rewritten in
    the API's error shape (`param` the header at fault); any other 400 as it was."""
    body = b"".join(m.get("body", b"") for m in held[1:])
    if not body.startswith(_REFUSED):
        return held
    failed = [part.strip() for part in body[len(_REFUSED):].decode("latin-1").split(",")]
    faults = [_FAILURES[f] for f in failed if f in _FAILURES] or [("Origin", "is not allowed")]
    start = held[0]
    request_id = next((bytes(v).decode("latin-1") for n, v in start.get("headers", []) if bytes(n).lower() == b"x-request-id"), None)
    message = "CORS preflight refused: " + "; ".join(f"`{header}` {why}" for header, why in faults)
    error = {"error": {"message": message, "type": "invalid_request_error", "param": faults[0][0], "code": "cors_not_allowed",
                       "request_id": request_id}}
    encoded = msgspec.json.encode(error)
    headers = [(n, v) for n, v in start.get("headers", []) if bytes(n).lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode())]
    return [{**start, "headers": headers}, {"type": "http.response.body", "body": encoded, "more_body": False}]


def _without_refused_gzip(scope: Scope) -> Scope:
    """`scope` with `gzip;q=0` (or `x-gzip;q=0`) taken out of its `Accept-Encoding` (the header dropped when
    nothing is left) and the rest in lower case when it names gzip in any case (`GZIP`); the same scope when
    it names no gzip."""
    headers = scope.get("headers", [])
    if not any(bytes(n).lower() == b"accept-encoding" and b"gzip" in bytes(v).lower() for n, v in headers):
        return scope
    kept = []
    for name, value in headers:
        if bytes(name).lower() == b"accept-encoding":
            entries = [e for e in bytes(value).split(b",") if not _refused_gzip(e)]
            if not any(e.strip() for e in entries):
                continue
            value = b",".join(entries).lower()  # codings are case-insensitive; Litestar looks for "gzip" as written
        kept.append((name, value))
    return {**scope, "headers": kept}


def _refused_gzip(entry: bytes) -> bool:
    """Whether one `Accept-Encoding` entry is gzip with a zero weight (`gzip;q=0`, `gzip; q=0.000`)."""
    coding, *params = [p.strip().lower() for p in entry.split(b";")]
    if coding not in (b"gzip", b"x-gzip"):
        return False
    for param in params:
        key, _, weight = param.partition(b"=")
        if key.strip() == b"q":
            try:
                return float(weight.strip()) == 0
            except ValueError:
                return False
    return False


class VaryKeepingCORS(CORSMiddleware):
    """Litestar's CORS middleware, but an answer to an allowed origin keeps its own `Vary` beside the `Origin`
    Litestar sets there (it replaces the header: a gzipped answer lost `Accept-Encoding`, /metrics its `Accept`)."""

    def send_wrapper(self, send: Send, origin: str, has_cookie: bool) -> Send:
        own: list[bytes] = []

        async def with_own_vary(message: Message) -> None:
            if message["type"] == "http.response.start" and own:
                message["headers"] = _add_vary(list(message["headers"]), b", ".join(own))
            await send(message)

        cors_send = super().send_wrapper(with_own_vary, origin, has_cookie)

        async def remembering_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                own.extend(bytes(v) for n, v in message.get("headers", []) if bytes(n).lower() == b"vary")
            await cors_send(message)

        return remembering_vary


def cors_answer_headers(config: CORSConfig, origin: str | None) -> list[tuple[bytes, bytes]]:
    """The headers CORS gives an answer to a request from `origin` (None: none sent) that the server writes itself,
    outside the app (`pluralign serve`'s 408, 431, parser's 400, 503 over PLURALIGN_MAX_CONNECTIONS): exactly those the
    app's CORS middleware (`VaryKeepingCORS`) gives its own answers for an allowed origin (Allow-Origin, Vary,
    Expose-Headers, ...), so a page on a listed origin reads the status, its error body and `Retry-After` rather than an
    opaque network error; for another origin, or none, only `Vary: Origin` (as `keyed_answers` adds to every answer)."""
    if origin is None or not config.is_origin_allowed(origin):
        return [(b"vary", b"Origin")]
    got: list[Message] = []

    async def keep(message: Message) -> None:
        got.append(message)

    step = VaryKeepingCORS(app=_no_app, config=config).send_wrapper(keep, origin, has_cookie=False)(
        {"type": "http.response.start", "status": 503, "headers": []})
    try:  # the middleware's wrapper awaits nothing but `keep`: it runs to its end at once, no event loop needed
        step.send(None)
    except StopIteration:
        pass
    else:
        step.close()
        raise RuntimeError("Litestar's CORS middleware awaited something while writing an answer's headers")
    return _add_vary([(bytes(name), bytes(value)) for name, value in got[0]["headers"]], b"Origin")


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:  # the middleware's app: never called here
    raise RuntimeError("not an app")
