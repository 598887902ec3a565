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

An answer that is an event stream (`Content-Type: text/event-stream`: a streamed chat's) is bounded as a stream
where the transport is given a `StreamBound`: its headers and its body's first piece by the request's deadline (the
engine's queue and prefill, as a non-streamed answer whole), then each further piece within `idle_s` of its reader's
asking for it (progress: any piece of the body, an event or part of one; a reader slow to ask, the time it took its own,
is not taken for the server's silence), the whole within `total_s` of its sending; past either it
raises `StreamTimedOut` (an `httpx2.ReadTimeout`) naming the bound. A stream is not bounded whole by the request's
deadline, the bound of a non-streamed call (120 s for a chat): a long answer from a slow or busy engine, its tokens
coming steadily, would be cut mid-way. A server dribbling a byte at a time makes progress: `total_s` ends it.

The lookup of a server's name (`getaddrinfo`, the system resolver: /etc/hosts, DNS as resolv.conf says) is bounded
too, by the connect's timeout and the request's deadline (`_Lookups`), not by the system resolver's own timeouts
only, which would let a DNS server that never answers hold a chat and its thread past every bound. Neither library
bounds it: httpcore's connect is `socket.create_connection`, which looks the name up unbounded, and anyio's
`getaddrinfo` runs it on its event loop's executor, whose `anyio.run` waits for that thread as it ends (measured: a
`fail_after(0.5)` around a lookup hung 3 s returned after 3.0-3.2 s); no resolver library is installed (dnspython would read
neither /etc/hosts nor nsswitch). So the lookup runs on a daemon thread of its own, one per name looked up at once
(requests for a name under way wait on that one), and a request waits for it no longer than its bound; a lookup that
hangs ends on its thread when the system resolver gives up (glibc: `timeout` x `attempts` per nameserver, 5 s x 2 by
default). Measured (`benchmarks/name_lookups.py`, BENCHMARKS.md): 242 us a lookup of `localhost` so,
30 us straight, 854 us through `anyio.run`; once per new connection (connections are pooled); an address given as
digits is not looked up.

Writes are bounded a call at a time as httpcore makes them (a request's body, small here, goes in one); a server
reading it a byte at a time could hold a write of a large one past the deadline (not the answers this is for).
A name resolving to several addresses is tried an address at a time, each given the connect's timeout or the time
left to the deadline, the less (as `socket.create_connection` gives each the connect's whole wait): addresses that
drop the attempt silently (an IPv6 route that goes nowhere) hold a request up to that many connect timeouts, within
its deadline.

A client made by `bounded_client` sends its requests through the proxy the environment names for their URL
(`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, or in lower case: as httpx reads them), each bounded whole the
same way: httpx reads none for a client given a transport of its own, so without this requests would go straight
to the server, and one reached through an egress proxy would be unreachable.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httpcore2
import httpx2

# `httpx2.Request.extensions` key: the `time.monotonic()` by which the whole request is to end (else the transport's
# `bound_s` from when it is sent)
DEADLINE = "pluralign.deadline"
# the most seconds a request may be bounded by (`BoundedTransport`'s `bound_s`, `RemotePolicy`'s timeouts): a day. A socket
# takes no timeout past ~9.2e9 s, nor inf or nan: each request would fail in it (OverflowError, ValueError: the service's
# chats each a 500 `internal error`)
MAX_BOUND_S = 86400.0
# the openai client's own (its `DEFAULT_CONNECTION_LIMITS`): a chat's prompt counts, 4 at once each, of many chats at once
LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)

# the deadline of the request whose socket steps this thread makes now: set around each call into httpcore
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("pluralign_http_deadline", default=None)
# set while an event stream's body is read under a `StreamBound`: its reads wait for its deadline alone, not httpx's read
# timeout (a stream's `idle_s` may be longer than the read timeout its client was given for a whole non-streamed answer)
_DEADLINE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("pluralign_http_deadline_only", default=False)


def _within(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout` (seconds, None: none), or the time left to the deadline of the request under way when that is less;
    raises `error` (httpcore's) when the deadline has passed."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed (it is bounded whole)")
    return left if timeout is None or _DEADLINE_ONLY.get() else min(timeout, left)


@dataclass(frozen=True)
class StreamBound:
    """How an answer that is an event stream (`text/event-stream`) is bounded past its first piece, which comes by the
    request's deadline (`BoundedTransport`'s `stream`): each further piece of its body within `idle_s` seconds of its
    reader's asking for it (the time the server sends nothing while it is waited for: progress), the whole within
    `total_s` seconds of the request's sending. ValueError for
    either not above 0 and at most MAX_BOUND_S (a day). The bounds users of streaming engines set: a stall is given up
    after the idle bound however long the answer, and a long answer sent steadily is not cut by a non-streamed call's."""

    idle_s: float
    total_s: float

    def __post_init__(self) -> None:
        for name in ("idle_s", "total_s"):
            if not 0 < getattr(self, name) <= MAX_BOUND_S:  # nan too
                raise ValueError(f"`{name}` must be above 0 and at most {MAX_BOUND_S:g} seconds, got {getattr(self, name)}")


class StreamTimedOut(httpx2.ReadTimeout):
    """An event stream's answer given up by a bound of its own (`StreamBound`): `bound` "first" (its first piece did not
    come by the request's deadline), "idle" (no piece for `StreamBound.idle_s`) or "total" (not ended within
    `StreamBound.total_s` of its sending); `bound_s`: that bound, in seconds. An `httpx2.ReadTimeout`, so a client taking
    httpx's timeouts takes it (the `openai` client's stream raises it as it is)."""

    def __init__(self, message: str, bound: str, bound_s: float) -> None:
        super().__init__(message)
        self.bound, self.bound_s = bound, bound_s


class _StreamClock:
    """The deadlines of one event stream's pieces under `bound`, from its request's sending (`sent_at`) and deadline
    (`first`, None: none): the first piece by `first`, each later one within `idle_s` of its reader's asking for it (not
    of the piece before: a reader that took its time over a piece, the service's thread on a loaded machine, a library
    user's loop, would find the server's next piece late though it waited in the socket), every one by `total_s` from
    the sending."""

    def __init__(self, bound: StreamBound, sent_at: float, first: float | None) -> None:
        self.bound, self.sent_at, self.first = bound, sent_at, first
        self.end = sent_at + bound.total_s
        self.begun = False  # a piece of an event came
        self._idle_until: float | None = None  # the deadline of the piece of an event asked for since the last one came
        self._comment: bool | None = None  # whether the line being read is a comment (None: no byte of it read yet)

    def next_deadline(self) -> tuple[float, str]:
        """(the `time.monotonic()` by which the piece asked for now must come, the bound it is: "first", "idle" or
        "total")."""
        if not self.begun:
            return (self.first, "first") if self.first is not None and self.first < self.end else (self.end, "total")
        if self._idle_until is None:
            self._idle_until = time.monotonic() + self.bound.idle_s
        return (self._idle_until, "idle") if self._idle_until < self.end else (self.end, "total")

    def came(self, piece: bytes) -> None:
        """`piece` of the body came. Progress (the stream begun, the idle wait begun again at the reader's next asking)
        where it holds a byte of an event's field (`data:`, `event:`, `id:`, `retry:`, a line cut short between pieces
        included); not where it holds only comment lines (`: keep-alive`) and blank lines, which a server or a proxy sends
        while it has nothing to say (the SSE spec's keep-alive): taken for progress, a server sending those every 15 s
        would hold a stalled stream, and one still queued, until `total_s`."""
        lines = piece.replace(b"\r", b"\n").split(b"\n")  # CR, LF and CRLF each end a line (a blank one between is none)
        progress = False
        for i, line in enumerate(lines):
            if i:
                self._comment = None
            if line:
                if self._comment is None:
                    self._comment = line.startswith(b":")
                progress = progress or not self._comment
        if progress:
            self.begun, self._idle_until = True, None

    def timed_out(self, bound: str) -> StreamTimedOut:
        if bound == "first":
            seconds = self.first - self.sent_at
            return StreamTimedOut(f"the event stream's first piece did not come within {seconds:.3g} s of its request", bound, seconds)
        if bound == "idle":
            return StreamTimedOut(f"no piece of the event stream came for {self.bound.idle_s:g} s", bound, self.bound.idle_s)
        return StreamTimedOut(f"the event stream did not end within {self.bound.total_s:g} s", bound, self.bound.total_s)


class _Lookups:
    """Server names looked up (`socket.getaddrinfo`: the system resolver, /etc/hosts and DNS as the system says), each
    waited for no longer than the caller's bound: a lookup runs on a daemon thread of its own, one per (name, port) at
    once (callers asking for one under way wait on it), and goes on there when its callers stop waiting, until the
    resolver gives up (module docstring: neither httpcore nor anyio bounds it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._under_way: dict[tuple[str, int], concurrent.futures.Future] = {}

    def addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses of `host` (in the resolver's order, each once) within `timeout` seconds (None: as long as the
        resolver takes). Raises httpcore's ConnectTimeout past it, its ConnectError when the resolver fails (no such
        name, no answer, a name it cannot encode; a thread for the lookup refused by the system)."""
        key = (host, port)
        with self._lock:
            lookup = self._under_way.get(key)
            if lookup is None:
                lookup = concurrent.futures.Future()
                try:  # marked as under way once its thread runs (which unmarks it, under this lock): a start the system
                    # refuses (a pids limit) must not leave the name marked with no thread to end it, every later request
                    # for it then timing out waiting
                    threading.Thread(target=self._look_up, args=(key, lookup), name="name-lookup", daemon=True).start()
                except RuntimeError as exc:  # "can't start new thread"
                    raise httpcore2.ConnectError(f"the lookup of the name {host!r} could not begin: {exc}") from exc
                self._under_way[key] = lookup
        try:
            found = lookup.result(timeout)
        except concurrent.futures.TimeoutError:
            raise httpcore2.ConnectTimeout(f"the lookup of the name {host!r} took longer than {timeout:.3g} s") from None
        except (OSError, UnicodeError) as exc:  # socket.gaierror; a name the resolver's encoding refuses (an empty label,
            # one past 63 characters: not raised as it is)
            raise httpcore2.ConnectError(str(exc)) from exc
        return list(dict.fromkeys(_scoped(info[4]) for info in found))

    def _look_up(self, key: tuple[str, int], lookup: concurrent.futures.Future) -> None:
        try:
            found, failure = socket.getaddrinfo(key[0], key[1], 0, socket.SOCK_STREAM), None
        except Exception as exc:  # noqa: BLE001 (handed to the callers, raised there)
            found, failure = None, exc
        with self._lock:  # a lookup asked from now on is a new one
            del self._under_way[key]
        if failure is None:
            lookup.set_result(found)
        else:
            lookup.set_exception(failure)


_LOOKUPS = _Lookups()


def _scoped(address: tuple) -> str:
    """The host of a socket address `getaddrinfo` gave, as a connect takes it again: an IPv6 address with a scope (a
    link-local one, `fe80::1` on interface 4) with its zone written in (`fe80::1%4`), which the text alone leaves out:
    a name that resolves to a link-local address (mDNS's `vllm.local`, a hosts file's `fe80::1%eth0`) connected to
    without its interface is refused by the system (EINVAL)."""
    host = str(address[0])
    if len(address) == 4 and address[3] and "%" not in host:  # (host, port, flowinfo, scope_id)
        return f"{host}%{address[3]}"
    return host


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    """httpcore's own (`SyncBackend`), its connections `_BoundedStream`s, each connect bounded by the deadline too, the
    lookup of the server's name included (`_Lookups`)."""

    def __init__(self) -> None:
        self._backend = httpcore2.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None) -> httpcore2.NetworkStream:
        """A connection to `host`'s first address that takes one, tried in the resolver's order (as
        `socket.create_connection` does), the lookup and each try given `timeout` or the time left to the deadline, the
        less; the last try's error when none does."""
        name = host.decode("ascii") if isinstance(host, bytes) else host
        addresses = [name] if _is_address(name) else _LOOKUPS.addresses(name, port, _within(timeout, httpcore2.ConnectTimeout))
        failure: Exception = httpcore2.ConnectError(f"the name {name!r} has no address")
        for address in addresses:
            wait = _within(timeout, httpcore2.ConnectTimeout)  # raises past the deadline
            try:
                return _BoundedStream(self._backend.connect_tcp(address, port, wait, local_address, socket_options))
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(self, path, timeout=None, socket_options=None) -> httpcore2.NetworkStream:
        return _BoundedStream(self._backend.connect_unix_socket(path, _within(timeout, httpcore2.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


_HTTPCORE_ERRORS = (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, httpcore2.ProxyError,
                    httpcore2.UnsupportedProtocol)


@contextlib.contextmanager
def _bounded(deadline: float | None, deadline_only: bool = False) -> Iterator[None]:
    """Within: this thread's socket steps bounded by `deadline` (`deadline_only`: by it alone, not by httpx's own
    timeouts too); httpcore's errors raised as httpx's (as httpx's own transport does: the same names, the most specific
    first)."""
    token, only = _DEADLINE.set(deadline), _DEADLINE_ONLY.set(deadline_only)
    try:
        yield
    except _HTTPCORE_ERRORS as exc:
        raise _as_httpx(exc) from exc
    finally:
        _DEADLINE_ONLY.reset(only)
        _DEADLINE.reset(token)


def _as_httpx(exc: Exception) -> Exception:
    """httpx's exception of the name of `exc`'s class (httpcore's), or of the nearest of its bases httpx has."""
    for kind in type(exc).__mro__:
        ours = getattr(httpx2, kind.__name__, None)
        if isinstance(ours, type) and issubclass(ours, httpx2.TransportError):
            return ours(str(exc))
    return httpx2.TransportError(str(exc))


class _BoundedBody(httpx2.SyncByteStream):
    """An answer's body, each piece read by the request's deadline, or as an event stream's `clock` says (the reader
    may be another thread than the sender's: a stream's)."""

    def __init__(self, pieces: Iterable[bytes], deadline: float | None, clock: _StreamClock | None = None) -> None:
        self._pieces, self._deadline, self._clock = pieces, deadline, clock

    def __iter__(self) -> Iterator[bytes]:
        pieces = iter(self._pieces)
        while True:
            deadline, bound = (self._deadline, None) if self._clock is None else self._clock.next_deadline()
            try:
                with _bounded(deadline, deadline_only=bound is not None):
                    piece = next(pieces, None)
            except httpx2.TimeoutException as exc:
                if self._clock is None or bound is None:
                    raise
                raise self._clock.timed_out(bound) from exc
            if piece is None:
                return
            if self._clock is not None:
                self._clock.came(piece)
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
    closed. ValueError for a `bound_s` not above 0 and at most MAX_BOUND_S (a day). `stream`: how an answer that is an
    event stream (`text/event-stream`) is bounded past its first piece (`StreamBound`; None: whole, as any). `proxy`: the URL of a proxy every
    request goes through (http, https, socks5, socks5h), or None: straight to the server (`bounded_client` picks it by
    the environment, as httpx does). HTTP/1.1, connections pooled as `limits` says; TLS verified by the system's certificates
    (`httpx2.create_ssl_context()`, httpx's default)."""

    def __init__(self, bound_s: float | None = None, limits: httpx2.Limits = LIMITS,
                 proxy: str | httpx2.URL | httpx2.Proxy | None = None, stream: StreamBound | None = None) -> None:
        if bound_s is not None and not 0 < bound_s <= MAX_BOUND_S:  # nan too
            raise ValueError(f"`bound_s` must be above 0 and at most {MAX_BOUND_S:g} seconds, or None, got {bound_s}")
        self.bound_s, self.stream = bound_s, stream
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
        sent_at = time.monotonic()
        deadline = request.extensions.get(DEADLINE)
        if deadline is None and self.bound_s is not None:
            deadline = sent_at + self.bound_s
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
        clock = None
        if self.stream is not None and _is_event_stream(answer.headers):
            clock = _StreamClock(self.stream, sent_at, deadline)
        return httpx2.Response(status_code=answer.status, headers=answer.headers, stream=_BoundedBody(answer.stream, deadline, clock),
                               extensions=answer.extensions)

    def close(self) -> None:
        self._pool.close()


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"content-type" and value.lower().lstrip().startswith(b"text/event-stream") for name, value in headers)


def connecting(exc: BaseException | None) -> str:
    """" (connecting: <httpx's words>)" when `exc` (a client's timeout: the `openai` client's, httpx's) was the connect's,
    found along its causes: the lookup of the server's name (`_Lookups`) or the connection not made within the connect's
    timeout or the time left; "" for any other. For an operator's log, which would otherwise say "did not answer within <the whole
    bound>" whatever timed out (a DNS server not answering read as a slow server)."""
    from pluralign.urls import redacted

    for _ in range(4):  # the `openai` client's error, httpx's, httpcore's
        if exc is None or isinstance(exc, httpx2.ConnectTimeout):
            break
        exc = exc.__cause__
    return f" (connecting: {redacted(str(exc))})" if isinstance(exc, httpx2.ConnectTimeout) else ""


def bounded_client(client: type[httpx2.Client] = httpx2.Client, bound_s: float | None = None, stream: StreamBound | None = None,
                   **options) -> httpx2.Client:
    """A `client` (`httpx2.Client` or a subclass: the `openai` client's `DefaultHttpxClient`; `options` its other
    arguments) whose every request is bounded whole (`BoundedTransport(bound_s)`), an event stream's answer past its first
    piece as `stream` says (`StreamBound`; None: whole, as any), sent through the proxy the
    environment names for its URL, as httpx's own client does (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, or
    in lower case; none with `trust_env=False`, nor with a `proxy` given, which every request goes through, bounded
    too), each through such a proxy bounded the same way. ValueError naming the
    variable (the proxy's password hidden) for a proxy it cannot use: a scheme not http, https, socks5 or socks5h, or
    a SOCKS one without the `socksio` package (not httpcore's RuntimeError, a traceback at start)."""
    from httpx2._utils import get_environment_proxies  # httpx's own reading of them (pinned: requirements.txt)

    proxy = options.pop("proxy", None)
    if proxy is not None:  # every request through it, the environment's read for none (as httpx's client does), bounded:
        # passed on, httpx would make its own transport for it, unbounded
        mounts = {"all://": BoundedTransport(bound_s, proxy=proxy, stream=stream)}
    else:
        proxies = get_environment_proxies() if options.get("trust_env", True) else {}
        mounts = {pattern: None if url is None else _proxy_transport(bound_s, pattern, url, stream)  # None: `transport`, no proxy
                  for pattern, url in proxies.items()}
    return client(transport=BoundedTransport(bound_s, stream=stream), mounts={**mounts, **options.pop("mounts", {})}, **options)


def _proxy_transport(bound_s: float | None, pattern: str, url: str, stream: StreamBound | None = None) -> BoundedTransport:
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
        return BoundedTransport(bound_s, proxy=url, stream=stream)
    except ValueError as exc:  # a scheme httpx has no proxy for (its message hides the password)
        raise ValueError(f"{said}: {redacted(str(exc))}") from None
