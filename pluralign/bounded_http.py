"""HTTP requests bounded whole: an `httpx2` transport (the HTTP library the `openai` client runs on) under which each
request ends by its deadline, whatever the server does meanwhile (`BoundedTransport`).

httpx's timeouts bound each step (connecting, each write, each read of a socket, waiting for a pooled connection), never
a whole request (encode/httpx's own docs: "timeouts ... are not total"): a server that sends its status line, its
headers or its body a byte at a time, each well within the read timeout, holds the request and its thread as long as it
likes. Here each of those steps is given the least of its own timeout and the time left to the request's deadline, and
one begun past the deadline raises httpx's timeout for it (ReadTimeout, WriteTimeout, ConnectTimeout, PoolTimeout: a
`httpx2.TimeoutException`, which the `openai` client takes as its APITimeoutError, tried again as it says); httpcore
then closes the connection. So a request, its thread and its connection end at most one step's wait past the deadline
(a step begun just before it waits no longer than the time left): no thread is left behind.

Writes are bounded a call at a time as httpcore makes them (a request's body, small here, goes in one); a server
reading it a byte at a time could hold a write of a large one past the deadline (not the answers this is for).
Nor are two waits of connecting (review of session remote54): the resolution of the server's name (`getaddrinfo`,
bounded by the system resolver's own timeouts only), and a name resolving to several addresses, each of which
`socket.create_connection` gives the whole wait the connect was given (the time left when it began, at most): addresses
that drop the attempt silently (an IPv6 route that goes nowhere) hold a request up to that many times as long.

A client made by `bounded_client` sends its requests through the proxy the environment names for their URL
(`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, or in lower case: as httpx reads them), each bounded whole the
same way: httpx reads none for a client given a transport of its own, so from session remote54 until its review
requests went straight to the server, and one reached through an egress proxy was unreachable after the upgrade.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator

import httpcore2
import httpx2

# `httpx2.Request.extensions` key: the `time.monotonic()` by which the whole request is to end (else the transport's
# `bound_s` from when it is sent)
DEADLINE = "pluralign.deadline"
# the most seconds a request may be bounded by (`BoundedTransport`'s `bound_s`, `RemotePolicy`'s timeouts): a day. A socket
# takes no timeout past ~9.2e9 s, nor inf or nan: each request failed in it (OverflowError, ValueError: the service's
# chats each a 500 `internal error`, until the review of session remote54)
MAX_BOUND_S = 86400.0
# the openai client's own (its `DEFAULT_CONNECTION_LIMITS`): a chat's prompt counts, 4 at once each, of many chats at once
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

# the deadline of the request whose socket steps this thread makes now: set around each call into httpcore
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("pluralign_http_deadline", default=None)


def _within(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` (seconds, None: none), or the time left to the deadline of the request under way when that is less;
    raises `error` (httpcore's) when the deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed (it is bounded whole)")
    return left if timeout is None else min(timeout, left)


class _BoundedStream(httpcore2.NetworkStream):
    """A connection whose every read and write is bounded by the deadline of the request under way."""

    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None) -> httpcore2.NetworkStream:
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, _within(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore2.NetworkBackend):
    """httpcore's own (`SyncBackend`), its connections `_BoundedStream`s, each connect bounded by the deadline too."""

    def __init__(self) -> None:
        self._backend = httpcore2.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None) -> httpcore2.NetworkStream:
        timeout = _within(timeout, httpcore2.ConnectTimeout)
        return _BoundedStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None) -> httpcore2.NetworkStream:
        return _BoundedStream(self._backend.connect_unix_socket(path, _within(timeout, httpcore2.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


_HTTPCORE_ERRORS = (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.ProxyError,
                    httpcore2.UnsupportedProtocol)


@contextlib.contextmanager
def _bounded(deadline: float | None) -> Iterator[None]:
    """Within: this thread's socket steps bounded by `deadline`; httpcore's errors raised as httpx's (as httpx's own
    transport does: the same names, the most specific first)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    except _HTTPCORE_ERRORS as exc:
        raise _as_httpx(exc) from exc
    finally:
        _DEADLINE.reset(token)


def _as_httpx(exc: Exception) -> Exception:
    """httpx's exception of the name of `exc`'s class (httpcore's), or of the nearest of its bases httpx has."""
    for kind in type(exc).__mro__:
        ours = getattr(httpx2, kind.__name__, None)
        if isinstance(ours, type) and issubclass(ours, httpx2.TransportError):
            return ours(str(exc))
    return httpx2.TransportError(str(exc))


class _BoundedBody(httpx2.SyncByteStream):
    """An answer's body, each piece read by the request's deadline (the reader may be another thread than the sender's:
    a stream's)."""

    def __init__(self, pieces: Iterable[bytes], deadline: float | None) -> None:
        self._pieces, self._deadline = pieces, deadline

    def __iter__(self) -> Iterator[bytes]:
        pieces = iter(self._pieces)
        while True:
            with _bounded(self._deadline):
                piece = next(pieces, None)
            if piece is None:
                return
            yield piece

    def close(self) -> None:
        with _bounded(None):
            close = getattr(self._pieces, "close", None)
            if close is not None:
                close()


class BoundedTransport(httpx2.BaseTransport):
    """An `httpx2` transport (`httpx2.Client(transport=...)`, the `openai` client's `http_client`) under which each
    request, from its wait for a pooled connection to the last byte of its answer's body, ends by its deadline: the
    request's `DEADLINE` extension (a `time.monotonic()`) where it has one, else `bound_s` seconds (None: no bound
    but the request's own timeouts) after it is sent (each try of the `openai` client's is a request of its own). Past
    it, the step under way raises httpx's timeout for that step (`httpx2.TimeoutException`) and the connection is
    closed. ValueError for a `bound_s` not above 0 and at most MAX_BOUND_S (a day). `proxy`: the URL of a proxy every
    request goes through (http, https, socks5, socks5h), or None: straight to the server (`bounded_client` picks it by
    the environment, as httpx does). HTTP/1.1, connections pooled as `limits` says; TLS verified by the system's certificates
    (`httpx2.create_ssl_context()`, httpx's default)."""

    def __init__(self, bound_s: float | None = None, limits: httpx2.Limits = LIMITS,
                 proxy: str | httpx2.URL | httpx2.Proxy | None = None) -> None:
        if bound_s is not None and not 0 < bound_s <= MAX_BOUND_S:  # nan too
            raise ValueError(f"`bound_s` must be above 0 and at most {MAX_BOUND_S:g} seconds, or None, got {bound_s}")
        self.bound_s = bound_s
        pool = dict(ssl_context=httpx2.create_ssl_context(), max_connections=limits.max_connections,
                    max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
                    network_backend=_BoundedBackend())
        if proxy is None:
            self._pool = httpcore2.ConnectionPool(**pool)
            return
        # as httpx's own transport (`httpx2.HTTPTransport(proxy=...)`) makes its pool for a proxy, on the bounded backend
        # its credentials out of the URL; ValueError for a scheme it has no pool for
        via = proxy if isinstance(proxy, httpx2.Proxy) else httpx2.Proxy(proxy)
        url = httpcore2.URL(scheme=via.url.raw_scheme, host=via.url.raw_host, port=via.url.port, target=via.url.raw_path)
        if via.url.scheme in ("http", "https"):
            self._pool = httpcore2.HTTPProxy(proxy_url=url, proxy_auth=via.raw_auth, proxy_headers=via.headers.raw, **pool)
        else:  # socks5, socks5h: `socksio` needed, as for httpx's
            self._pool = httpcore2.SOCKSProxy(proxy_url=url, proxy_auth=via.raw_auth, **pool)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline = request.extensions.get(DEADLINE)
        if deadline is None and self.bound_s is not None:
            deadline = time.monotonic() + self.bound_s
        extensions = {key: value for key, value in request.extensions.items() if key != DEADLINE}
        with _bounded(deadline):  # the wait for a pooled connection too (httpcore's "pool" timeout)
            timeouts = dict(request.extensions.get("timeout", {}))
            timeouts["pool"] = _within(timeouts.get("pool"), httpcore2.PoolTimeout)
            sent = httpcore2.Request(
                method=request.method,
                url=httpcore2.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                                  target=request.url.raw_path),
                headers=request.headers.raw, content=request.stream, extensions={**extensions, "timeout": timeouts})
            answer = self._pool.handle_request(sent)
        return httpx2.Response(status_code=answer.status, headers=answer.headers, stream=_BoundedBody(answer.stream, deadline),
                               extensions=answer.extensions)

    def close(self) -> None:
        self._pool.close()


def bounded_client(client: type[httpx2.Client] = httpx2.Client, bound_s: float | None = None, **options) -> httpx2.Client:
    """A `client` (`httpx2.Client` or a subclass: the `openai` client's `DefaultHttpxClient`; `options` its other
    arguments) whose every request is bounded whole (`BoundedTransport(bound_s)`), sent through the proxy the
    environment names for its URL, as httpx's own client does (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, or
    in lower case; none with `trust_env=False`, nor with a `proxy` given, which every request goes through, bounded
    too), each through such a proxy bounded the same way. ValueError naming the
    variable (the proxy's password hidden) for a proxy it cannot use: a scheme not http, https, socks5 or socks5h, or
    a SOCKS one without the `socksio` package (until review late54b httpcore's RuntimeError, a traceback at start)."""
    from httpx2._utils import get_environment_proxies  # httpx's own reading of them (pinned: requirements.txt)

    proxy = options.pop("proxy", None)
    if proxy is not None:  # every request through it, the environment's read for none (as httpx's client does), bounded:
        # passed on, httpx made its own transport for it, unbounded (until review late54b)
        mounts = {"all://": BoundedTransport(bound_s, proxy=proxy)}
    else:
        proxies = get_environment_proxies() if options.get("trust_env", True) else {}
        mounts = {pattern: None if url is None else _proxy_transport(bound_s, pattern, url)  # None: `transport`, no proxy
                  for pattern, url in proxies.items()}
    return client(transport=BoundedTransport(bound_s), mounts={**mounts, **options.pop("mounts", {})}, **options)


def _proxy_transport(bound_s: float | None, pattern: str, url: str) -> BoundedTransport:
    """`BoundedTransport(bound_s, proxy=url)` for the environment's proxy of `pattern` (`https://`, `all://`); ValueError
    naming its variable when it cannot be used."""
    import importlib.util
    import os

    from pluralign.urls import redacted

    scheme = pattern.removesuffix("://")
    variable = next((name for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY") if os.environ.get(name)),
                    f"{scheme.upper()}_PROXY")
    said = f"{variable} names a proxy ({redacted(url)}) for the servers' requests"
    if url.lower().startswith(("socks5://", "socks5h://")) and importlib.util.find_spec("socksio") is None:
        raise ValueError(f"{said}: a SOCKS proxy, which needs the `socksio` package, not installed (pip install socksio); "
                         "or name the servers in NO_PROXY")
    try:
        return BoundedTransport(bound_s, proxy=url)
    except ValueError as exc:  # a scheme httpx has no proxy for (its message hides the password)
        raise ValueError(f"{said}: {redacted(str(exc))}") from None
