"""Bounds on what streamed exports (GET /v1/users/{id}/export) may hold: slots per tenant and in total, and a
deadline on each piece the client is sent.

An export holds a LanceDB read (its batch of rows, its reader's threads and files) while its body is sent, so
a tenant's clients that open exports and stop reading held 5-15 MB each, without bound (session exportcap38; BENCHMARKS.md).
`ExportSlots.take` answers whether one more may start; `export_guard` (the route's middleware) gives the slot
back when the answer ends, is cut or the client hangs up, and ends an answer whose client has not taken a
piece for `export_send_timeout_s` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable

from litestar.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("pluralign.service")

EXPORT_RETRY_AFTER = 5  # seconds: `Retry-After` of an export refused as too many are being sent
_RELEASE = "pluralign.export.release"  # scope key: the handler's slot, given back by `export_guard`
_LINES = "pluralign.export.lines"  # scope key: the export's line iterator, closed by `export_guard`
# scope key: the route bounds its own wait for its client to take each piece (`export_guard`), so the server's check of
# connections whose client reads none of what they hold (`training.commands.serve.UNREAD_ABORT_S`) leaves its answer to it
SENDS_BOUNDED = "pluralign.sends_bounded"


class TooManyExports(Exception):
    """One more export would pass the tenant's (or everyone's) bound; the message says which."""


class ExportSlots:
    """Exports being sent now: at most `per_tenant` of one tenant and `total` of all tenants.

        slots = ExportSlots(per_tenant=4, total=16)
        release = slots.take("acme")  # raises TooManyExports past a bound
        release()  # once the answer ended; a second call does nothing
    """

    def __init__(self, per_tenant: int, total: int):
        if per_tenant < 1 or total < 1:
            raise ValueError("`per_tenant` and `total` must be at least 1")
        self.per_tenant, self.total = per_tenant, total
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.refused = 0  # exports refused since start

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(self._held.values())

    def take(self, tenant: str) -> Callable[[], None]:
        """A slot for one export of `tenant`, and the call that gives it back (idempotent). Raises
        TooManyExports when the tenant has `per_tenant` exports in flight or all tenants `total`."""
        with self._lock:
            if self._held[tenant] >= self.per_tenant:
                self.refused += 1
                raise TooManyExports(f"this tenant already has {self._held[tenant]} exports being sent "
                                     f"(at most {self.per_tenant}, PLURALIGN_MAX_EXPORTS_PER_TENANT)")
            if sum(self._held.values()) >= self.total:
                self.refused += 1
                raise TooManyExports(f"{self.total} exports are being sent (at most {self.total} at once, PLURALIGN_MAX_EXPORTS)")
            self._held[tenant] += 1
        given_back = threading.Event()

        def release() -> None:
            with self._lock:
                if given_back.is_set():
                    return
                given_back.set()
                self._held[tenant] -= 1
                if not self._held[tenant]:
                    del self._held[tenant]

        return release


def hold(scope: Scope, release: Callable[[], None]) -> None:
    """Leave the export's slot with `export_guard`, which gives it back as the answer ends however it ends."""
    scope[_RELEASE] = release  # type: ignore[literal-required]


def sending(scope: Scope, lines) -> None:
    """Leave the export's line iterator with `export_guard`, which closes it (its LanceDB read) as the answer ends."""
    scope[_LINES] = lines  # type: ignore[literal-required]


class ExportStalled(Exception):
    """The client took no piece of the export for `export_send_timeout_s` seconds."""


def export_guard(app: ASGIApp) -> ASGIApp:
    """The export route's middleware: each body piece must be taken by the client (uvicorn's `send` returns once
    its write buffer is below the high-water mark) within `export_send_timeout_s` seconds, else the answer is
    cut (the chunked body never ends, as any cut export) and counted in `pluralign_exports_stalled_total`; the
    slot (`hold`) is given back and the line iterator (`sending`) closed whenever the answer ends: as its last piece is
    handed to the server, so a client that has read one answer whole finds its slot free for its next export (given
    back after that piece went out, its next could be refused 429 on a loaded machine), or
    once the handling ends for an answer cut or never sent."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        rt = scope["litestar_app"].state.runtime
        timeout = rt.settings.export_send_timeout_s
        scope[SENDS_BOUNDED] = True  # type: ignore[literal-required]
        stalled = False

        async def deadline_send(message) -> None:
            nonlocal stalled
            if message["type"] != "http.response.body":
                await send(message)
                return
            if not message.get("more_body", False):  # the answer's last piece: the slot is back before the client has it
                _ended(scope)
            try:
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                stalled = True
                raise ExportStalled(f"no piece taken for {timeout:g} s") from None

        try:
            await app(scope, receive, deadline_send)
        except BaseException as exc:
            if not (stalled and _is_stall(exc)):
                raise
            rt.metrics.inc("pluralign_exports_stalled_total")
            log.warning("an export of tenant %s was cut: its client took no piece for %g s (export_send_timeout_s)",
                        getattr(scope.get("user"), "tenant", "?"), timeout)
        finally:
            _ended(scope)  # an answer cut, or never sent

    return middleware


def _ended(scope: Scope) -> None:
    """The export's answer ended: its line iterator (`sending`) is closed and its slot (`hold`) given back, once."""
    lines = scope.pop(_LINES, None)  # type: ignore[misc]
    if lines is not None:
        try:
            lines.close()  # the LanceDB read ends now, not when the garbage collector gets to it
        except (ValueError, RuntimeError):  # still in next() on a worker thread: it ends as that returns
            pass
    release = scope.pop(_RELEASE, None)  # type: ignore[misc]
    if release is not None:
        release()


def _is_stall(exc: BaseException) -> bool:
    """Whether `exc` is ExportStalled, alone or in the exception groups anyio's task groups raise."""
    if isinstance(exc, ExportStalled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_stall(e) for e in exc.exceptions)
    return _is_stall(exc.__cause__) if exc.__cause__ is not None else False
