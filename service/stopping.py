"""The chats generating now, so that a service told to stop can end them in a way their clients can tell.

When the service is told to stop (SIGTERM), chats still waiting for a generation slot never begin
(the scheduler is closed: 503 at once, `service.app.stop_taking_work`). Those already generating are
let finish; `cut` stops the ones still generating shortly before the server's graceful timeout, which
would otherwise cancel their requests: a plain chat bare (uvicorn's 500), a stream mid-body (the
client sees a truncated body, not why). Each chat registers its cancel event while it generates;
`cut` marks it cut, then sets the event, so the chat stops at its next token and answers 503 (a plain
chat) or ends its stream with an error event and `[DONE]`.

    with rt.chats.generating(cancel) as chat:
        ...  # generate, checking `cancel` per token
        if not rt.chats.generated(cancel): raise Cancelled()  # cut already: store nothing
        ...  # store it, send it: `cut` no longer stops it
    if chat.cut: ...  # stopped because the service stops, not because the client left

A chat whose answer is generated and about to be stored has nothing left to stop: it is sent whole (a
stream to its end), never told "send it again" after its interaction was stored (the retry would
store it twice).

A chat generating from its user's own adapter, registered with that user (`generating(cancel, user=...)`), is stopped the same way by `cut_deleted` when another
replica's DELETE of that user reaches this one (its deletion sweep: `service.deletions`), `chat.deleted` then set: a
stream of a deleted user's adapter on one replica does not go on generating after their DELETE
answered on another."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from service.requestid import answer_began


def draining(app: ASGIApp, is_draining: Callable[[], bool], around: Callable[[ASGIApp], ASGIApp] | None = None) -> ASGIApp:
    """The app, answering every HTTP request 503 with Retry-After (and `Connection: close`) while
    `is_draining()`: the service is stopping and keeps listening a while (`stop_drain_s`) only so that
    what still arrives gets an answer to retry elsewhere. Inside `service.requestid.with_request_ids`:
    the answer carries X-Request-Id, its body `error.request_id`, and it has its access line. `around`
    wraps that answer (the app's CORS middleware: a page on another origin reads the 503, and its
    preflight is answered, rather than seeing a network error).

    A request the server cancels before its answer began (its graceful wait ran out as the service stops: an admin
    POST still moving a tenant's feedback, a job's snapshot) is answered 503, then the cancellation goes on (`pluralign
    serve` counts it as cut off): with Retry-After, telling to send it again, when that is safe (`retry_safe`: an
    idempotent method, RFC 9110 9.2.2, or one its handler marked with `RETRY_SAFE` in its scope, as an audit's POST,
    which queues nothing once the service stops); else without Retry-After, saying it may have been done (the work of a handler's thread or
    of the feedback log's writer goes on after the cancel: a feedback cut while made durable is on disk)."""
    from service.errors import error_body

    def refusal(message: str, again: bool = True) -> ASGIApp:
        tail = ("send the request again (to another replica, or once this one is back)" if again else
                "look before sending it again, or send it again with an Idempotency-Key")
        retry = [(b"retry-after", str(STOPPING_RETRY_AFTER).encode())] if again else []

        async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
            body = msgspec.json.encode(error_body(503, f"{message}: {tail}"))
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                *retry, (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})

        return around(refuse) if around is not None else refuse

    answer, cut = refusal(STOPPING), refusal(f"{STOPPING} and this request ran past its graceful wait")
    unknown = refusal(f"{STOPPING} and this request ran past its graceful wait, what it asked may have been done or not",
                      again=False)

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
        elif is_draining():
            await answer(scope, receive, send)
        else:
            await _answered_if_cancelled(app, lambda: cut if retry_safe(scope) else unknown, scope, receive, send)

    return handler


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})  # RFC 9110 9.2.2
RETRY_SAFE = "pluralign.retry_safe"  # a scope key: its handler does nothing once the service stops (`retry_safe`)


def retry_safe(scope: Scope) -> bool:
    """Whether the request of `scope`, cancelled by the server's graceful wait before its answer began, is safe to send
    again: an idempotent method (RFC 9110 9.2.2: GET, HEAD, OPTIONS, PUT, DELETE; sent twice, it does what it does once),
    or one whose handler set `scope[RETRY_SAFE]` (it queues or stores nothing once the service was told to stop: an
    audit's POST /admin/jobs, `service.admin.services.Admin.submit`)."""
    return scope.get("method") in IDEMPOTENT or bool(scope.get(RETRY_SAFE))


async def _answered_if_cancelled(app: ASGIApp, cut: Callable[[], ASGIApp], scope: Scope, receive: Receive,
                                 send: Send) -> None:
    """`app` serving the request; cancelled (the server's graceful wait ran out) before its answer began, `cut()`
    answers it, and the CancelledError is raised again. Whether the answer began is what `with_request_ids`, around
    `draining`, saw of it (`service.requestid.answer_began`): its `send` is the one passing every message already."""
    try:
        await app(scope, receive, send)
    except asyncio.CancelledError:
        if not answer_began(scope):
            with contextlib.suppress(Exception):  # the connection gone too: nothing to answer
                await cut()(scope, receive, send)
        raise


STOPPING_RETRY_AFTER = 5  # seconds: `Retry-After` of work refused or stopped as the service stops (another replica, or this one restarted)
STOPPING = "the service is stopping"


@dataclass(eq=False)
class Chat:
    """One chat's registration: generating while the `with` block runs."""

    cancel: threading.Event
    chats: GeneratingChats
    user: tuple[str, str] | None = None  # (tenant, user id) of a chat generating from that user's own adapter
    began: float = field(default_factory=time.time)  # unix seconds, as deletion records are stamped
    cut: bool = False  # stopped by `GeneratingChats.cut`
    deleted: bool = False  # stopped by `GeneratingChats.cut_deleted`: its user's DELETE through another replica

    def __enter__(self) -> Chat:
        self.chats._add(self)
        self.chats._check_deleted(self)
        return self

    def __exit__(self, *exc) -> None:
        self.chats._remove(self)


@dataclass
class GeneratingChats:
    cut_off: int = 0  # chats stopped by `cut` so far
    # whether deletion records applied lately (another replica's DELETE) delete a chat's user: (tenant, user id, began)
    # -> bool, set by the deletion sweep (`service.deletions.DeletionSweep.deletes_chat`); asked as a chat registers
    deleted_lately: Callable[[str, str, float], bool] | None = None
    _chats: set[Chat] = field(default_factory=set)
    _cutting: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def generating(self, cancel: threading.Event, user: tuple[str, str] | None = None, began: float | None = None) -> Chat:
        """A chat whose generation `cancel` stops, registered while in its `with` block; one that
        begins after `cut` is cut at once. `user`: (tenant, user id) of a chat generating from that user's own adapter
        (`cut_deleted`); `began`: when its plan began, before it took the adapter (unix seconds; default now). One
        registering after the deletion sweep applied a record of its user's DELETE that it began before is stopped at
        once, as `cut_deleted` stops it (`deleted_lately`: else a chat planned before the
        record and registered after the sweep's pass would generate to its end)."""
        return Chat(cancel, self, user, time.time() if began is None else began)

    def cut_deleted(self, deleted: Callable[[str, str, float], bool]) -> int:
        """Stop every chat generating now whose user `deleted(tenant, user_id, began)` says was deleted (`began`: when
        the chat was registered, unix seconds), marked `deleted`: returns how many. A chat about to store its answer
        (`generated`) is no longer stopped, and one cut already is left as it is."""
        with self._lock:
            chats = [c for c in self._chats if c.user is not None and not (c.cut or c.deleted) and deleted(*c.user, c.began)]
            for chat in chats:
                chat.deleted = True
        for chat in chats:
            chat.cancel.set()
        return len(chats)

    def cut(self) -> int:
        """Stop every chat generating now (and any that begins later): returns how many."""
        with self._lock:
            self._cutting = True
            chats = list(self._chats)
            self._mark(chats)
        for chat in chats:
            chat.cancel.set()
        return len(chats)

    def generated(self, cancel: threading.Event | None) -> bool:
        """The chat `cancel` stops has its answer whole and is about to store it: False when it was cut
        already (store nothing; it tells its client to send it again), else True, and `cut` no longer
        stops it (decided under the lock `cut` marks chats under: never both stored and cut)."""
        with self._lock:
            for chat in self._chats:
                if chat.cancel is cancel:
                    if chat.cut or chat.deleted:
                        return False
                    self._chats.discard(chat)
                    return True
        return True

    def _check_deleted(self, chat: Chat) -> None:
        """Once `chat` is registered (a sweep's `cut_deleted` from now on sees it): stopped, as `cut_deleted` stops it,
        when records the sweep applied before delete its user (`deleted_lately`)."""
        deleted_lately = self.deleted_lately
        if chat.user is None or deleted_lately is None or not deleted_lately(*chat.user, chat.began):
            return
        with self._lock:
            if chat.cut or chat.deleted or chat not in self._chats:
                return
            chat.deleted = True
        chat.cancel.set()

    def _add(self, chat: Chat) -> None:
        with self._lock:
            self._chats.add(chat)
            late = self._cutting
            if late:
                self._mark([chat])
        if late:
            chat.cancel.set()

    def _remove(self, chat: Chat) -> None:
        with self._lock:
            self._chats.discard(chat)

    def _mark(self, chats: list[Chat]) -> None:  # (under the lock)
        for chat in chats:
            chat.cut = True
        self.cut_off += len(chats)
