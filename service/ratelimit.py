"""Requests per second per tenant (setting `tenant_requests_per_second`), on Litestar's rate-limit
middleware: a tenant's keys share one budget; beyond it a 429 with Retry-After and the IETF
RateLimit headers. Every limited answer carries the RateLimit headers; only the 429 Retry-After.
Requests without a known key are counted by client address. /health, /metrics and /schema are
not limited."""

from __future__ import annotations

from litestar import Request
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware, get_remote_address
from litestar.types import Message, Receive, Scope, Send

from service.auth import KeyRing, bearer_key


def tenant_of(request: Request) -> str:
    header = request.headers.get("authorization", "")
    keys: KeyRing = request.app.state.runtime.keys
    key = bearer_key(header)  # a key only as authentication takes it
    entry = keys.lookup(key) if key is not None else None
    if entry is None:
        return "address:" + get_remote_address(request)
    return ("admin:" if entry.admin else "tenant:") + entry.tenant


class TenantRateLimit(RateLimitMiddleware):
    """Litestar's middleware, with `Retry-After` on its 429 only: every limited answer carries the
    `RateLimit-*` headers, and Litestar builds both from `create_response_headers`. Its 429 says which
    limit was reached, its setting, and when to send again (Litestar's says "Too Many Requests")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Litestar's check, with a 429 whose message names the limit (raised here, not by the routes
        within, whose own 429s keep their messages)."""
        app = scope["litestar_app"]
        request: Request = app.request_class(scope)
        if await self.should_check_request(request=request):
            key = self.cache_key_from_request(request)
            store = self.config.get_store_from_app(app)
            async with self._lock:
                cache_object = await self.retrieve_cached_history(key, store)
                if len(cache_object.history) >= self.max_requests:
                    headers = self.create_response_headers(cache_object=cache_object)
                    raise TooManyRequestsException(detail=self.limit_reached(request, headers["Retry-After"]), headers=headers)
                await self.set_cached_history(key=key, cache_object=cache_object, store=store)
            send = self.create_send_wrapper(send=send, cache_object=cache_object)
        await self.app(scope, receive, send)

    def limit_reached(self, request: Request, retry_after: str) -> str:
        who = tenant_of(request)
        sender = "requests without a known key from this address" if who.startswith("address:") else "this tenant's keys"
        return (f"{sender} went over the limit of {self.max_requests} requests a second (PLURALIGN_TENANT_REQUESTS_PER_SECOND): "
                f"retry after {retry_after} s")

    def rate_limit_headers(self, cache_object: CacheObject) -> dict[str, str]:
        """The `RateLimit-*` headers, `RateLimit-Reset` at least 0: it is delta-seconds, and Litestar
        subtracts the time the answer starts from the end of the window the request began in, so an
        answer started after that window (a slowly uploaded body, a chat of seconds) said -1, -2, ...."""
        headers = RateLimitMiddleware.create_response_headers(self, cache_object)
        key = self.config.rate_limit_reset_header_key
        headers[key] = str(max(0, int(headers[key])))
        return headers

    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        """The 429's headers: the RateLimit ones and `Retry-After` (the seconds until the window resets)."""
        headers = self.rate_limit_headers(cache_object)
        headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers

    def create_send_wrapper(self, send: Send, cache_object: CacheObject) -> Send:
        """Every other answer's: the RateLimit headers alone."""

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableScopeHeaders(message)
                for key, value in self.rate_limit_headers(cache_object).items():
                    headers[key] = value
            await send(message)

        return send_wrapper


def rate_limit(per_second: int) -> RateLimitConfig:
    return RateLimitConfig(
        rate_limit=("second", per_second), identifier_for_request=tenant_of, middleware_class=TenantRateLimit,
        exclude=["^/health$", "^/metrics$", "^/schema"],
    )
