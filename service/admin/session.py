"""The dashboard's login: a form that takes an admin key and opens a browser session.

GET /admin/login shows the form; POST /admin/login (form field `key`) checks that the key is an
admin key and sets `pluralign_admin`, a random session token in a Secure, HttpOnly, SameSite=Strict
cookie scoped to /admin that expires after `admin_session_s` seconds (setting; default one hour).
POST /admin/logout ends the session. The server keeps only the token's sha256 and its expiry, in
memory: a restart logs everyone out.

A session opens the admin area's read-only pages (GET): the dashboard, jobs and audits. Anything
that changes state (queueing or cancelling a job) still needs `Authorization: Bearer <admin key>`,
so a forged cross-site form cannot act with an operator's cookie.
"""

from __future__ import annotations

import hashlib
import html
import secrets
import threading
import time
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Response

from pluralign.data.record import USER_ID, Base
from service.auth import SESSION_COOKIE as COOKIE
from service.auth import Principal, session_tokens
from service.errors import bad_request

# what a `tenant` query parameter of the admin pages must be (the dashboard's words)
TENANT_NAME_RULE = "a tenant name is 1-128 characters: ASCII letters, digits and . _ @ : + - (starting with a letter or digit)"

COOKIE_PATH = "/admin"
# sessions one admin key holds at once: a sign-in past it signs out the key's oldest (`AdminSessions.open`)
MAX_SESSIONS_PER_KEY = 16
# on every admin HTML page: no script and nothing fetched at all (the pages have none: inline styles
# and SVG, forms posting to this service), so a stored answer that escaped the escaping still could
# not run; never framed by another site (clickjacking the sign-in); never sniffed as another type;
# never kept in a shared or back-button cache (the dashboard shows users' stored answers); the
# admin URL never sent on as a referrer
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


class AdminSessions:
    """Session tokens of the admin pages: token sha256 -> (principal, expiry as a unix time, the sha256 of
    the admin key that opened it). `still_admin(key_sha256)`: whether that key is still an admin key (the
    key file as it is now): a session of a revoked key is closed at its next request, as the key is."""

    def __init__(self, ttl_s: float, clock=time.time, still_admin: Callable[[str], bool] = lambda key_sha256: True):
        self.ttl_s, self.clock, self.still_admin = ttl_s, clock, still_admin
        self._lock = threading.Lock()
        self._live: dict[str, tuple[Principal, float, str]] = {}

    def open(self, principal: Principal, key_sha256: str = "") -> str:
        """A new session's token. The key's sessions are at most MAX_SESSIONS_PER_KEY: past it its oldest is closed.
        Unbounded, a script signing in at each scrape held one more session each time until it expired (an hour), and
        each sign-in, on the event loop, went through them all."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if v[1] > now}  # forget expired ones
            of_key = [k for k, v in self._live.items() if v[2] == key_sha256]  # oldest first: a dict keeps its order
            for digest in of_key[: max(0, len(of_key) - MAX_SESSIONS_PER_KEY + 1)]:
                del self._live[digest]
            self._live[_digest(token)] = (principal, now + self.ttl_s, key_sha256)
        return token

    def lookup(self, token: str) -> Principal | None:
        """The session's principal, or None when unknown, expired, or its key was revoked (or is no
        longer an admin key) since it was opened."""
        with self._lock:
            found = self._live.get(_digest(token))
            if found is None:
                return None
            if found[1] <= self.clock():
                del self._live[_digest(token)]
                return None
        if not self.still_admin(found[2]):
            self.close(token)
            return None
        return found[0]

    def close(self, token: str) -> None:
        with self._lock:
            self._live.pop(_digest(token), None)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LoginForm(Base):
    key: str


PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}pluralign admin login</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
:root{{color-scheme:light dark;--fg:#1a202c;--muted:#4a5568;--bg:#f7fafc;--card:#fff;--line:#e2e8f0;--field:#718096;--focus:#1a4f8b;--button:#2b6cb0}}
body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg);margin:0;padding:0 12px}}
main{{max-width:420px;margin:80px auto;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:28px}}
h1{{font-size:22px;margin:0 0 6px}} p{{color:var(--muted);font-size:14px}}
label{{display:block;font-size:13px;margin:18px 0 6px}}
input{{width:100%;box-sizing:border-box;padding:10px;border:1px solid var(--field);border-radius:6px;font-size:15px;background:var(--card);color:var(--fg)}}
input[aria-invalid=true]{{border:2px solid #c53030}}
button{{margin-top:18px;width:100%;padding:11px;border:0;border-radius:6px;background:var(--button);color:#fff;font-size:15px;cursor:pointer}}
input:focus,:focus-visible{{outline:3px solid var(--focus);outline-offset:2px}}
.error{{background:#fff5f5;border:1px solid #feb2b2;color:#c53030;padding:8px 10px;border-radius:6px;font-size:14px}}
@media (prefers-color-scheme:dark){{
:root{{--fg:#f7fafc;--muted:#cbd5e0;--bg:#171923;--card:#1a202c;--line:#4a5568;--field:#a0aec0;--focus:#90cdf4;--button:#2b6cb0}}
.error{{background:#3b1d1d;border-color:#fc8181;color:#feb2b2}} input[aria-invalid=true]{{border-color:#fc8181}}
}}
@media (forced-colors:active){{button{{border:1px solid ButtonText}}}}
</style></head><body><main>
<h1>pluralign</h1><p>Sign in to the operator's dashboard with an admin API key.</p>
{error}
<form method="post" action="/admin/login{query}">
<label for="key">Admin key</label>
<input id="key" name="key" type="password" autocomplete="current-password" placeholder="pk-..." required autofocus{invalid}>
<button type="submit">Sign in</button>
</form></main></body></html>"""


def login_page(error: str = "", status: int = 200, tenant: str | None = None) -> Response:
    """The form; with `error`, the reason first in the title (what a screen reader reads on arrival) and
    in a box that describes the key field, which is marked invalid and has focus. `tenant` (a checked tenant name,
    `checked_tenant`): the form posts it on, so signing in lands on that tenant's dashboard."""
    query = html.escape(tenant_query(tenant))
    if error:
        box = f'<p class="error" id="key-error" role="alert">{html.escape(error)}</p>'
        page = PAGE.format(title=f"Error: {html.escape(error)} - ", error=box, invalid=' aria-invalid="true" aria-describedby="key-error"',
                           query=query)
    else:
        page = PAGE.format(title="", error="", invalid="", query=query)
    return Response(page, media_type="text/html", status_code=status, headers=PAGE_HEADERS)


def tenant_query(tenant: str | None) -> str:
    """`?tenant=T` for a tenant name (its `+`, `@` and `:` escaped: a `+` is read back as a space), "" for None."""
    return f"?tenant={quote(tenant, safe='')}" if tenant else ""


def checked_tenant(tenant: str | None) -> str | None:
    """The login's `tenant` query parameter (the dashboard's it was sent from), as it is; a 400 naming `tenant` when it is
    not a tenant name (it is written into the form's action and the redirect: an id, never another URL)."""
    if tenant is not None and not USER_ID.fullmatch(tenant):
        raise bad_request("tenant", TENANT_NAME_RULE)
    return tenant


def _sessions(request: Request) -> AdminSessions:
    return request.app.state.admin_sessions


@get("/admin/login", sync_to_thread=False, summary="The admin login form (HTML)", media_type="text/html")
def login_form(tenant: FromQuery[str | None] = None) -> Response:
    """`tenant`: the dashboard's (`/admin/dashboard?tenant=T` sends a browser without a session here with it)."""
    return login_page(tenant=checked_tenant(tenant))


@post("/admin/login", sync_to_thread=False, status_code=303, summary="Open an admin session from an admin key (form post)")
def login(request: Request, data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
          tenant: FromQuery[str | None] = None) -> Response:
    """303 to the dashboard (of `tenant`, when the form was opened from a tenant's dashboard) with the session cookie
    set; 401 with the form again for a key that is not an admin key."""
    tenant = checked_tenant(tenant)
    entry = request.app.state.runtime.keys.lookup(data.key.strip()) if data.key.strip() else None
    if entry is None or not entry.admin:
        return login_page("That is not an admin key.", status=401, tenant=tenant)
    sessions = _sessions(request)
    token = sessions.open(Principal(tenant=entry.tenant, admin=True), entry.sha256)
    response = Redirect(f"/admin/dashboard{tenant_query(tenant)}", status_code=303)
    response.set_cookie(
        COOKIE, token, path=COOKIE_PATH, max_age=int(sessions.ttl_s), secure=True, httponly=True, samesite="strict"
    )
    return response


@post("/admin/logout", sync_to_thread=False, status_code=303, summary="End the admin session")
def logout(request: Request) -> Response:
    for token in session_tokens(request):  # every one the browser sent: whichever was its session ends
        _sessions(request).close(token)
    response = Redirect("/admin/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


SESSION_HANDLERS = (login_form, login, logout)
