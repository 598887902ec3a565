"""Identifiers that come from clients: user ids and response ids, checked before any query."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

from litestar.types import ASGIApp, Receive, Scope, Send

from pluralign.data.record import RESERVED_TENANTS, TENANT_RULE, USER_ID, USER_ID_RULE, tenant_problem  # noqa: F401 (the service's names for them)
from service.errors import ENCODED_SLASH, ENCODED_SLASH_HINT, USERS_PATH, bad_request, shown

RESPONSE_ID = re.compile(r"chatcmpl-[0-9a-f]{32}")
# the same as a wire schema's pattern (msgspec searches with `re`, whose `$` also matches before a final newline)
RESPONSE_ID_PATTERN = rf"^{RESPONSE_ID.pattern}$(?!\n)"
# what a pattern of the wire schemas means, said to a client instead of the regex (service.strict)
PATTERN_WORDS = {
    RESPONSE_ID.pattern: "the `id` of a chat completion (`chatcmpl-` and 32 hex digits, the reply's `pluralign.response_id`)",
}


def check_user_id(value: str, field: str = "user") -> str:
    if not USER_ID.fullmatch(value):
        raise bad_request(field, USER_ID_RULE + (ENCODED_SLASH_HINT if ENCODED_SLASH.search(value) else ""))
    return value


USER_HEADER = "X-Pluralign-User"  # what the load balancer routes a user's requests by (deploy/README.md)


def user_header_lines(request) -> list[str]:
    """The request's `X-Pluralign-User` field lines (none, one, or more: `routed_to`)."""
    return request.headers.getall(USER_HEADER.lower(), [])


def routed_to(lines: Sequence[str], user: str | None, field: str, whose: str = "names") -> None:
    """A 400 naming `X-Pluralign-User` when a request that reads or writes `user` (named by `field`: the path's
    `user_id`, the body's `user`, or the user a `response_id` was served to) sent the header (its field `lines`) naming
    another user, or sent it twice. The load balancer hashes the API key and this header (deploy/README.md), so such a
    request reaches the replica of the user the header names, not its own: a feedback there is not read by the user's
    next chat on theirs (read-your-writes), a read there misses what theirs holds. No header, or a request of no user
    (`user` None: an anonymous chat), passes, and so does one header sent empty (`X-Pluralign-User:`): the balancer's hash
    reads it as it reads none (nginx's `$http_x_pluralign_user` is "" for both), so it routes as no header does (not
    a 400, "names '' but `user_id` names ...")."""
    if user is None or not lines or list(lines) == [""]:
        return
    if len(lines) > 1:
        raise bad_request(USER_HEADER, f"{len(lines)} `{USER_HEADER}` headers: send one, naming the request's user ({shown(user)})")
    if lines[0] != user:
        raise bad_request(USER_HEADER, f"names {shown(lines[0])} but `{field}` {whose} {shown(user)}: the load balancer routes a "
                                       f"user's requests by this header, so it must name the request's user (or be left out)")


def one_segment_ids(app: ASGIApp) -> ASGIApp:
    """Wraps the app's ASGI handler (outside its routing): under USERS_PATH a `%2F` in the request's path
    stays `%2F` in the path the app routes on, so a user id sent with an encoded `/` is one segment,
    checked as the one id it is (`check_user_id`: a 400 naming `user_id` and the rule; for a method the
    user's own path does not take, the 404/405 handler says the same: `service.errors`), never split into
    two. The server decodes the path before the app sees it: GET /v1/users/ann%2Fpreferences was routed as
    ann's preferences, and PATCH /v1/users/ann%2Fstated-preferences changed ann's. Every other escape, and
    every other path (a model id may hold a `/`: /v1/models/{model_id:path}), is decoded as before."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%2" in raw:
            text = raw.split(b"?", 1)[0].decode("ascii", "replace")
            decoded = unquote(text)
            if ENCODED_SLASH.search(text) and decoded.startswith(USERS_PATH) and scope["path"] == decoded:
                scope = {**scope, "path": unquote(ENCODED_SLASH.sub("%252F", text))}
        await app(scope, receive, send)

    return handler


def last_segment_sent(scope: Scope, routed: str) -> str:
    """The path's last segment as the client sent it, percent-decoded once (`/v1/users/ria/preferences/x%2Fy`: `x/y`),
    where the segment the app routed (`routed`) holds a `%2F`: under USERS_PATH `one_segment_ids` keeps an encoded `/`
    encoded, so `routed` is `x%2Fy` there, and an id holding a `%2F` of its own (sent as `%252F`) reads the same
    (a `pref_id`: `service.users.controllers.retract_preference`). `routed` as it is otherwise, or when the server gave
    no `raw_path`."""
    raw = scope.get("raw_path")
    if not raw or not ENCODED_SLASH.search(routed):
        return routed
    return unquote(raw.split(b"?", 1)[0].rstrip(b"/").rsplit(b"/", 1)[-1].decode("ascii", "replace"))


def check_response_id(value: str, field: str = "response_id") -> str:
    if not RESPONSE_ID.fullmatch(value):
        raise bad_request(field, "a response id looks like `chatcmpl-` followed by 32 hex digits")
    return value
