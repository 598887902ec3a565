"""Request ids, the access log and the log formats: how one slow or failed request is followed.

Every HTTP answer carries `X-Request-Id`: the client's own when it sent one (1-128 visible ASCII
characters, no spaces: `VALID`), else a fresh `req_<32 hex>`. A malformed one is answered 400 naming
the header (with a fresh id), not replaced: a client or gateway that sends ids expects to find its
own in our logs, and a silently swapped one would not be found. The id lives in a context variable
(`REQUEST_ID`) for the request's task; asyncio tasks, Litestar's worker threads (anyio copies the
context), the schedulers' tasks (`service.scheduler`) and the background refits
(`service.users.services.queue_refits`) carry it on, and feedback moved from the log by the ingest
worker is handed to the refits and jobs it triggers under the id of the request that sent it
(`remember`, `per_request`). `RequestIdFilter`
puts it on every log record as `request_id`; error bodies carry it as `error.request_id`.

The access log (`pluralign.access`, INFO; `access_log` setting) is one line per request: method, the
route template (never the raw path: user ids are in paths), status, duration in ms, tenant, request
id, and `cut` when an answer's body never ended (a stream stopped part way: its 200 was sent before the
failure or the client's hang-up). Never the key, a body or a query string.

`JsonFormatter` is a tiny stdlib `logging.Formatter` over msgspec (the house's one serialization
library): no JSON log formatter is among the dependencies, and python-json-logger or structlog would
add one for what fits in twenty lines. The app factory hands Litestar its logging configuration
(`app_logging`: Litestar configures the root logger in any case); `pluralign serve` formats the lines
written before the app is built the same way (`configure_logging`). The library never sets logging up.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from cachetools import LRUCache
from litestar.logging.config import LoggingConfig, default_handlers
from litestar.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pluralign_request_id", default=None)
HEADER = "X-Request-Id"
VALID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII, no spaces: one token in a text log line
access_log = logging.getLogger("pluralign.access")
_ENCODER = msgspec.json.Encoder()
_CAUSES: LRUCache = LRUCache(maxsize=100_000)  # feedback row id -> the request that sent it (in memory only)
_CAUSES_LOCK = threading.Lock()  # remember (the event loop) and per_request (the ingest worker, flushing requests' threads)


def new_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def current() -> str | None:
    """The id of the request this code runs for (or was started by); None outside any."""
    return REQUEST_ID.get()


def outgoing_headers() -> dict[str, str]:
    """Headers for a call this code makes to another server (the remote encoder and generator): the
    current request's `X-Request-Id`, so that server's log names the request it served; none outside one."""
    rid = REQUEST_ID.get()
    return {HEADER: rid} if rid is not None else {}


def in_context(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn`, to run on another thread in the caller's context (its request id with it)."""
    context = contextvars.copy_context()
    return lambda: context.run(fn)


def remember(row_ids: list[str]) -> None:
    """The current request sent these feedback rows: their move into the table (a worker thread, maybe
    a batch of several requests' rows) calls its hooks under this id (`per_request`)."""
    rid = REQUEST_ID.get()
    if rid is not None:
        with _CAUSES_LOCK:  # cachetools' caches are not thread-safe
            for row_id in row_ids:
                _CAUSES[row_id] = rid


@contextlib.contextmanager
def as_request(rid: str | None) -> Iterator[None]:
    """Code run inside is done for request `rid` (None: leaves the current id as it is)."""
    if rid is None:
        yield
        return
    token = REQUEST_ID.set(rid)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


def per_request(hooks: list[Callable[[list], None]], rows: list) -> None:
    """The ingest worker's `on_moved`: each hook gets the moved feedback rows of each request that sent
    them (`remember`) under that request's id, so a refit or job they trigger logs it; rows of no known
    request (replayed after a restart) are given together, under none. One request's rows: one call."""
    groups: dict[str | None, list] = {}
    with _CAUSES_LOCK:
        for row in rows:
            groups.setdefault(_CAUSES.pop(row.pref_id, None), []).append(row)
    for rid, group in groups.items():
        with as_request(rid):
            for hook in list(hooks):
                hook(group)


def header_problem(values: list[bytes]) -> str | None:
    """Why the request's `X-Request-Id` values cannot be its id; None when there is one valid one."""
    if len(values) > 1:
        return "given more than once"
    if VALID.fullmatch(values[0].decode("latin-1")):
        return None
    return f"must be 1-128 visible ASCII characters without spaces, got {_what_it_holds(values[0])}"


def _what_it_holds(raw: bytes) -> str:
    """What a header value holds, as a person reads it: its characters as UTF-8 text (what a client's library sends for
    a str; counted as latin-1, "café" was 5 characters) and which of them break `VALID` (`_named`: "'ü' U+00FC"; the
    value itself may be anything: never echoed), or that its bytes are no UTF-8 text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"{len(raw)} byte(s) that are not UTF-8 text"
    held = f"{len(text)} character(s)"
    foreign = sum(ord(c) > 0x7F for c in text)
    if foreign:
        held += f", {foreign} of them not ASCII ({_named({c for c in text if ord(c) > 0x7F})})"
    blank = sum(ord(c) < 0x21 or ord(c) == 0x7F for c in text)
    if blank:
        what = "a space or control character" if blank == 1 else "spaces or control characters"
        held += f", {blank} of them {what} ({_named({c for c in text if ord(c) < 0x21 or ord(c) == 0x7F})})"
    return held


def _named(characters: set[str]) -> str:
    """The first 3 of `characters` by code point, each as it reads and by code point ("'ü' U+00FC": a tenant's name in a
    client's ids reads as its letters, and a lookalike, Cyrillic 'а' for 'a', is told by its number). One that does not
    print alone (a control or format character, a bidi override that would reorder the message, a combining mark that
    would join the quote) is shown as its escape ('\\u202e'), so the message says what it holds and nothing else."""
    kinds = sorted(characters)
    shown = [f"{_quoted(c)} U+{ord(c):04X}" for c in kinds[:3]]
    return ", ".join(shown) + (", ..." if len(kinds) > 3 else "")


def _quoted(character: str) -> str:
    if character.isprintable() and not unicodedata.category(character).startswith("M"):
        return repr(character)
    return "'" + character.encode("unicode_escape").decode("ascii") + "'"


CLIENT_CLOSED = 499  # nginx's "client closed request": the status counted and logged for a client gone before its answer began


class Hangup:
    """Watches a request's ASGI `receive` (pass `receive` on in its place) for the client's going away.
    `status(sent)` is the status to count for the request once the app has returned without raising: `sent`
    (the answer's own, None when none began) or, when none began and the client went away, CLIENT_CLOSED. A
    cancelled stream sends nothing (Litestar's compression holds an answer's start until its first piece), and
    the 500 counted for an answer that never began is the server's failure, not a client's hang-up."""

    def __init__(self, receive: Receive):
        self._receive = receive
        self.gone = False  # `http.disconnect` was read
        self.began = False  # the answer's `http.response.start` went out (kept by `with_request_ids`: `answer_began`)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        return message

    def status(self, sent: int | None) -> int:
        return sent if sent is not None else CLIENT_CLOSED if self.gone else 500


HANGUP_KEY = "pluralign.hangup"  # in a request's scope: its Hangup (`with_request_ids`)


def client_gone(scope: Scope) -> bool:
    """Whether the request's `http.disconnect` has been read: its client went away (or, under `pluralign serve`, its
    body missed PLURALIGN_REQUEST_READ_TIMEOUT_S and was cut). False outside `with_request_ids`."""
    hangup = scope.get(HANGUP_KEY)
    return hangup is not None and hangup.gone


def answer_began(scope: Scope) -> bool:
    """Whether the request's answer began (its `http.response.start` was sent through `with_request_ids`). False outside
    `with_request_ids`."""
    hangup = scope.get(HANGUP_KEY)
    return hangup is not None and hangup.began


def with_request_ids(app: ASGIApp, *, log_access: bool, tenant_of: Callable[[Scope], str | None],
                     route_of: Callable[[Scope], str], method_of: Callable[[Scope], str],
                     refuse: Callable[[str], tuple[int, bytes]],
                     around_refusal: Callable[[ASGIApp], ASGIApp] = lambda refusal: refusal) -> ASGIApp:
    """Wraps the app's ASGI handler (outside its routing, so 404s and 401s are answered with it too):
    sets `REQUEST_ID` for the request, adds `X-Request-Id` to its answer, writes its access-log line.
    `refuse(problem)` -> (status, JSON body) answers a malformed header (under a fresh id), served by
    `around_refusal(refusal)`: the app's CORS middleware, so a browser can read why (as any other 400)."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == b"x-request-id"]
        problem = header_problem(given) if given else None
        rid = given[0].decode("latin-1") if given and problem is None else new_id()
        token = REQUEST_ID.set(rid)
        start = time.perf_counter()
        status = 500  # an exception before the answer began: the server answers 500
        ended = False  # the answer's body's last piece was sent (`hangup.began`: its start)
        hangup = scope[HANGUP_KEY] = Hangup(receive)  # type: ignore[literal-required]

        async def send_with_id(message: Message) -> None:
            nonlocal status, ended
            if message["type"] == "http.response.start":
                status, hangup.began = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", rid.encode("latin-1"))]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True

        async def refusal(scope: Scope, receive: Receive, send: Send) -> None:
            code, body = refuse(problem)
            await send({"type": "http.response.start", "status": code,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        try:
            await (app if problem is None else around_refusal(refusal))(scope, hangup.receive, send_with_id)
            status = hangup.status(status if hangup.began else None)  # no answer and the client gone: its hang-up, not a 500
        finally:
            if log_access:
                line = {"method": method_of(scope), "route": route_of(scope), "status": status,
                        "duration_ms": round((time.perf_counter() - start) * 1000, 1), "tenant": tenant_of(scope)}
                cut = hangup.began and not ended  # a stream stopped part way (a failure, a hang-up): its status was sent first
                if cut:
                    line["cut"] = True
                access_log.info("%(method)s %(route)s %(status)d %(duration_ms).1f ms tenant=%(tenant)s" + (" cut" if cut else ""),
                                {**line, "tenant": line["tenant"] or "-"}, extra={"access": line})
            REQUEST_ID.reset(token)

    return handler


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record it sees as `record.request_id` (None outside a
    request), unless the record already has one. On a handler: every record it writes, any logger's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The CLI's text lines, with ` request_id=<id>` at the end of those a request caused."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        return f"{text} request_id={rid}" if rid else text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `ts` (ISO 8601, UTC), `level`, `logger`, `message`, `request_id` (when a
    request caused it), an access line's `method`, `route`, `status`, `duration_ms`, `tenant`, and
    `exc` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            line["request_id"] = rid
        line.update(getattr(record, "access", None) or {})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return _ENCODER.encode(line).decode()


CLI_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # training.common.setup_logging's, before the app is built
APP_FORMAT = "%(levelname)s - %(asctime)s - %(name)s - %(module)s - %(message)s"  # Litestar's default, once it is


def app_logging(log_format: str) -> LoggingConfig:
    """Litestar's own logging configuration (the root logger's non-blocking queue handler, as its default
    is) with `log_format`'s formatter and the request-id filter: what every log line of the process looks
    like once the app is built, however it is served."""
    formatter = {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter, "fmt": APP_FORMAT}
    handlers = {name: {**handler, "filters": ["request_id"]} for name, handler in default_handlers.items()}
    return LoggingConfig(formatters={"standard": formatter}, filters={"request_id": {"()": RequestIdFilter}}, handlers=handlers)


def configure_logging(log_format: str) -> None:
    """For `pluralign serve`, until the app is built (the models' loading): the root logger's handlers
    (`training.common.setup_logging`'s) write `log_format` lines too."""
    formatter = JsonFormatter() if log_format == "json" else TextFormatter(CLI_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
