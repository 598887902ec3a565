"""Requests per second per tenant (setting `tenant_requests_per_second`), on Litestar's rate-limit
middleware: a tenant's keys share one budget; beyond it a 429 with Retry-After and the IETF
RateLimit headers. Requests without a known key are counted by client address. /health,
/metrics and /schema are not limited."""

from __future__ import annotations

from litestar import Request
from litestar.middleware.rate_limit import CacheObject, RateLimitConfig, RateLimitMiddleware, get_remote_address

from service.auth import KeyRing


def tenant_of(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    keys: KeyRing = request.app.state.runtime.keys
    entry = keys.lookup(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
    if entry is None:
        return "address:" + get_remote_address(request)
    return ("admin:" if entry.admin else "tenant:") + entry.tenant


class TenantRateLimit(RateLimitMiddleware):
    def create_response_headers(self, cache_object: CacheObject) -> dict[str, str]:
        headers = super().create_response_headers(cache_object)
        headers["Retry-After"] = str(max(1, int(headers[self.config.rate_limit_reset_header_key])))
        return headers


def rate_limit(per_second: int) -> RateLimitConfig:
    return RateLimitConfig(
        rate_limit=("second", per_second), identifier_for_request=tenant_of, middleware_class=TenantRateLimit,
        exclude=["^/health$", "^/metrics$", "^/schema"],
    )
