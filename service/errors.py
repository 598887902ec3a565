"""Every error is OpenAI-shaped and names the field: `{"error": {"message", "type", "param", "code"}}`,
with the request's `X-Request-Id` beside them as `request_id` (service.requestid).

OpenAI's clients read this shape: the official `openai` client raises `BadRequestError` with
`e.message`, `e.param` and `e.code` filled from it (LiteLLM and LangChain pass it on). Every bad
input is a 4xx whose `message` and `param` name the field; no bad input is answered with a 500.

Only request validation is a 4xx: the places that check a request raise `bad_request` (or another
HTTPException). Any other exception, a `ValueError` included (a damaged stored row, a numerical
failure inside a fit, msgspec's errors on the server's own data, a bug), is a 500 `internal error`
whose detail goes to the log only: a 4xx tells clients, retries and monitoring that the caller is
at fault, and its message went out with file paths and internal field names. Stored data that cannot
be read or written (`pluralign.store.failures`: a full disk, a read-only mount, a damaged LanceDB
file) is not a bug: 507 or 503 naming the table or file kind, never its path (`storage_failure`).
"""

from __future__ import annotations

import logging
import math
import re
from urllib.parse import quote, unquote_to_bytes

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    InternalServerException,
    NotFoundException,
    ServiceUnavailableException,
    ValidationException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.response import Redirect
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR

from pluralign.data.decode_words import in_our_words, validation_problem
from pluralign.data.record import USER_ID, USER_ID_RULE
from pluralign.data.text import MAX_SHOWN, closest_name, controls_escaped, is_blank, shorten, shown  # noqa: F401 (MAX_SHOWN, shown: the service's names too)
from pluralign.store.failures import StoreUnavailable, TenantBacklog, storage_problem, unavailable
from service.head import allow_for
from service.metrics import route_of
from service.requestid import CLIENT_CLOSED, client_gone
from service.requestid import HEADER as REQUEST_ID_HEADER
from service.requestid import current as current_request_id

log = logging.getLogger("pluralign.service")

# OpenAI's `error.type` per status; statuses not listed fall back to their class (4xx or 5xx)
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    405: "invalid_request_error", 409: "conflict_error", 412: "invalid_request_error", 413: "invalid_request_error",
    415: "invalid_request_error", 417: "invalid_request_error", 421: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error",
}
# `error.code` per status, when the raiser gave none: a stable machine-readable word
ERROR_CODES = {
    400: "invalid_value", 401: "invalid_api_key", 403: "permission_denied", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 412: "version_mismatch", 413: "request_too_large", 415: "unsupported_media_type",
    417: "expectation_failed", 422: "invalid_value",
    429: "rate_limit_exceeded", 500: "internal_error", 503: "unavailable", 507: "insufficient_storage",
}


class ErrorInfo(msgspec.Struct):
    """The inner object of an error body; `param` is the field at fault (`messages[0].role`) or null."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None  # the answer's `X-Request-Id`: what the operator's log lines of this request carry


class ErrorBody(msgspec.Struct):
    """What every 4xx and 5xx answers, as OpenAI does."""

    error: ErrorInfo


_WHY = {
    400: "Bad request: `error.param` names the field and `error.message` the problem",
    404: "Not found in this tenant",
    409: "Conflict with the service's state: `error.code` says which, `error.message` what to do",
    412: "Precondition failed: `If-Match` does not name the current record's entity tag, or `If-None-Match` names it "
         "(its `ETag` is in the answer); nothing was changed",
    413: "Request body too large",
    422: "Well formed but not done: `error.code` says why",
    421: "Misdirected: another replica than the one `replica` names answered; ask that one at its own address",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "Unavailable for now: retry after `Retry-After` seconds",
    507: "Insufficient storage: the service's disk is full; nothing this request sent was acknowledged",
}


def error_responses(*codes: int, why: dict[int, str] | None = None) -> dict[int, ResponseSpec]:
    """OpenAPI `responses` for a route's error codes, so clients (and schema fuzzers) know them: `why` says when the
    route answers a code (a 409 is an idempotency key in use on one route, a tenant being removed on another; the API's
    page, Swagger UI, shows each), else `_WHY`'s words for every route."""
    said = {**_WHY, **(why or {})}
    return {code: ResponseSpec(data_container=ErrorBody, description=said.get(code, "Error"), generate_examples=False) for code in codes}


# the 409 and 422 of a route taking `Idempotency-Key` (chat, feedback, import)
KEY_IN_USE = ("`idempotency_key_in_use`: a copy sent while the first request under its `Idempotency-Key` still runs; "
              "nothing begun: retry after `Retry-After`")
KEY_REUSED = "`idempotency_key_reused`: the `Idempotency-Key` was used for another body; nothing stored: send a new key"


def query_not_utf8(request: Request, name: str) -> ValidationException | None:
    """The 400 naming query parameter `name` when a value of it is no UTF-8 once percent-decoded (`%FF`, a Latin-1
    `r%E9gion`, a character cut short), None when every one is. Litestar reads such bytes as U+FFFD (the replacement
    character), a text the client never sent (RFC 3986 section 2.5: a URI's percent-encoded text is UTF-8)."""
    wanted = name.encode()
    for pair in request.scope.get("query_string", b"").split(b"&"):
        key, _, value = pair.partition(b"=")
        if unquote_to_bytes(key.replace(b"+", b" ")) != wanted:
            continue
        raw = unquote_to_bytes(value.replace(b"+", b" "))
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return bad_request(name, f"is no UTF-8 text: byte {raw[exc.start]:#04x} at byte {exc.start + 1} of its value "
                                     "(percent-encode the name's UTF-8 bytes: `région` is `r%C3%A9gion`)")
    return None


_PLACEHOLDER = re.compile(r"\{(?P<name>[^:}]+)(?::(?P<kind>[^}]+))?\}")  # a route template's `{job_id:str}`
# how to send a character that is not ASCII in a path or query
PERCENT_ENCODE = "percent-encode the UTF-8 bytes of its characters: `é` is `%C3%A9`"


def _sent_path(request: Request) -> bytes | None:
    """The request's path as sent, percent-decoded but not read as UTF-8 (uvicorn's `scope["path"]` reads bytes that are
    no UTF-8 as U+FFFD), without the app's `root_path`; None when the server gave no `raw_path`."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):
        return None
    path = unquote_to_bytes(raw)
    root = str(request.scope.get("root_path") or "").encode("utf-8", "surrogateescape")
    return path[len(root):] if root and path.startswith(root) else path


def _sent_path_params(request: Request) -> dict[str, bytes]:
    """Each path parameter of the request's route as sent, percent-decoded to bytes but not read as UTF-8, by name: the
    path's segments as the app routed them (`_sent_segments`) at the route template's placeholders, the rest of the
    path for the last one when the path has more segments than the template (a `:path` parameter,
    `/v1/models/{model_id:path}`, whose type Litestar's template does not say). {} when the server gave no `raw_path`
    or no route matched."""
    raw, template = request.scope.get("raw_path"), request.scope.get("path_template")
    if not isinstance(raw, bytes) or not template:
        return {}
    segments = _sent_segments(request, raw)
    parts = [part for part in template.split("/") if part]
    found: dict[str, bytes] = {}
    for i, part in enumerate(parts):
        if (placeholder := _PLACEHOLDER.fullmatch(part)) is None or i >= len(segments):
            continue
        rest = i == len(parts) - 1 and len(segments) > len(parts)
        found[placeholder["name"]] = b"/".join(segments[i:]) if rest else segments[i]
    return found


def _sent_segments(request: Request, raw: bytes) -> list[bytes]:
    """The segments of the path `raw` as sent (empty ones dropped, as Litestar's `normalize_path` does; without the
    app's `root_path`), each percent-decoded to bytes, split as the app routed it (`scope["path"]`): at each `/` once
    decoded, as the server splits `/v1/models/a%2Fb`, or, where the routed path kept an encoded `/` in its segment
    (`service.ids.one_segment_ids`: `/v1/users/ann/preferences/x%2Fy`), at the `/`s sent as such."""
    routed = [segment for segment in str(request.scope.get("path", "")).split("/") if segment]
    skip = len([segment for segment in str(request.scope.get("root_path") or "").split("/") if segment])
    decoded = [segment for segment in unquote_to_bytes(raw).split(b"/") if segment][skip:]
    kept = [unquote_to_bytes(segment) for segment in raw.split(b"/") if segment][skip:]
    if len(kept) == len(routed) and [segment.decode("utf-8", "replace") for segment in decoded] != routed:
        return kept
    return decoded


def path_problem(request: Request) -> ValidationException | None:
    """The 400 naming the first path parameter whose value is no UTF-8 text once percent-decoded (`/v1/users/%FF`, an
    overlong `%C0%AF`, a surrogate's `%ED%A0%80`, a Latin-1 `caf%E9`) or holds NUL (`%00`), None when none does:
    Litestar reads such bytes as U+FFFD, a name no client sent, which a 404 then repeated (`no job 'U+FFFD'`), and no
    id, name or file this service serves holds NUL (a file's path cannot: a 500 on the docs' assets)."""
    if not request.path_params:
        return None
    sent = _sent_path_params(request)
    for name, value in request.path_params.items():
        raw = sent.get(name)
        if raw is None:  # no `raw_path`: NUL can still be told
            raw = value.encode("utf-8", "replace") if isinstance(value, str) else b""
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return bad_request(name, f"is no UTF-8 text: byte {raw[exc.start]:#04x} at byte {exc.start + 1} of its value "
                                     f"once percent-decoded ({PERCENT_ENCODE})")
        if b"\x00" in raw:
            return bad_request(name, f"holds NUL (`%00`, at byte {raw.index(0) + 1} of its value), which no name or id "
                                     "this service takes holds")
    return None


def path_not_utf8(request: Request) -> str | None:
    """The problem of a request's path that is no UTF-8 text once percent-decoded (`byte 0xff at byte 12 of the path`),
    None for one that is (or when the server gave no `raw_path`)."""
    path = _sent_path(request)
    try:
        (path or b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"byte {path[exc.start]:#04x} at byte {exc.start + 1} of the path once percent-decoded is no UTF-8"
    return None


def bad_request(field: str, problem: str, code: str = "invalid_value") -> ValidationException:
    """A 400 whose body says which field is wrong and why (`param` = `field`)."""
    return ValidationException(detail=f"`{field}`: {problem}", extra=[{"key": field, "message": problem, "code": code}])




def unsupported_media_type(field: str, problem: str, accept: str) -> HTTPException:
    """A 415 whose body names `field` (`param`) and says why; its `Accept` header names the media
    type the route takes (RFC 9110, 15.5.16)."""
    return HTTPException(status_code=415, detail=f"`{field}`: {problem}", headers={"Accept": accept},
                         extra=[{"key": field, "message": problem, "code": "unsupported_media_type"}])


def refuse_blank(field: str, text: str) -> None:
    """A 400 naming `field` when `text` has no visible character (`pluralign.data.text.is_blank`):
    the rule for every text the API compares, scores or asks about."""
    if is_blank(text):
        raise bad_request(field, "must hold a visible character (not only whitespace or zero-width characters)")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """`{"error": {"message", "type", "param", "code", "request_id"}}` for a response of `status`."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code or ERROR_CODES.get(status),
                      "request_id": current_request_id()}}


def refuse_request_id(problem: str) -> tuple[int, bytes]:
    """The 400 of a malformed `X-Request-Id` header (service.requestid), as the JSON body's bytes."""
    return 400, msgspec.json.encode(error_body(400, f"`{REQUEST_ID_HEADER}`: {problem}", REQUEST_ID_HEADER, "invalid_value"))


def error_response(status: int, message: str, param: str | None = None, code: str | None = None, headers=None) -> Response:
    return Response(error_body(status, message, param, code), status_code=status, headers=headers)


MAX_PARAM = 64  # characters of a field's name an error repeats: the name comes from the client, at any length
_MISSING = re.compile(r"^Missing required (?P<source>\w+) parameter '(?P<name>[^']*)' for path ")  # Litestar's message
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_HINT = re.compile(r" \(did you mean `[^`]+`\?\)")


def _msgspec_param(message: str) -> tuple[str, str | None, str | None]:
    """msgspec's `Expected `float`, got `str` - at `$.temperature`` -> ("`temperature`: must be a number, not text",
    "temperature", None): the problem in our words (`pluralign.data.decode_words`).

    The param is OpenAI's dotted form (`messages[0].role`); an unknown field is the field itself."""
    code = "unknown_parameter" if _UNKNOWN.search(message) else None
    # a missing or unknown field is named, not the object holding it (as a body decoded strictly names it)
    path, problem = validation_problem(message)
    return (f"`{path}`: {problem}" if path else problem), path or None, code


def _wire_name(request: Request, argument: str) -> str:
    """The header or query parameter a handler argument is read from (`idempotency_key` ->
    `Idempotency-Key`, `export_format` -> `format`): Litestar's own validation errors name the
    Python argument, the client knows the name it sent."""
    handler = request.scope.get("route_handler")
    found = getattr(handler, "parsed_fn_signature", None)
    field = found.parameters.get(argument) if found is not None else None
    return getattr(getattr(field, "kwarg_definition", None), "name", None) or argument  # Query/HeaderParameter(name=...)


def _choice_problem(request: Request | None, field: str, message: str) -> str | None:
    """`must be one of `float`, `base64`; got 'hex'` for msgspec's `Invalid enum value 'hex'` of a body's `field` whose
    type is a choice (a Literal of the route's body type: `service.strict.one_of`, as a strict body says it); None
    for another message, or where the choices cannot be told."""
    if request is None or not message.startswith("Invalid "):
        return None
    from service.strict import _INVALID, _choices, one_of, refused_value  # here: strict imports this module

    body_type = getattr(getattr(request.scope.get("route_handler"), "parsed_data_field", None), "annotation", None)
    found = _INVALID.match(message)
    try:
        choices = _choices(body_type, field) if body_type is not None and found else ()
    except (LookupError, TypeError, AttributeError):  # a path the type does not hold as read
        return None
    return one_of(choices, refused_value(message), found["got"]) if choices else None


def from_extra(extra, request: Request | None = None) -> tuple[str | None, str | None, str | None]:
    """(param, code, message) from a ValidationException's `extra` (ours or Litestar's); a header or
    query parameter is named as sent when `request` is given."""
    items = extra if isinstance(extra, list) else [extra] if isinstance(extra, dict) else []
    for item in items:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message") or "")
        key = item.get("key")
        if key is not None and item.get("source") in ("header", "query") and request is not None:
            key = _wire_name(request, str(key))
        if key is not None and not (item.get("source") == "body" and key == "data"):  # ours, or a query/path parameter
            # Litestar names a body's field as `key` too, msgspec's words in `message` (`Expected `int``): in ours
            return str(key), item.get("code"), _choice_problem(request, str(key), message) or in_our_words(message) or None
        if message:  # the body's msgspec error: the field is in its path
            text, param, code = _msgspec_param(message)
            return param, code, text
    return None, None, None


def stream_error(status: int, detail: str, code: str | None = None, param: str | None = None) -> dict:
    """The body of a server-sent error event (a stream's headers are already sent): OpenAI's
    `{"error": {...}}` wrapping this module's error body."""
    body = error_body(status, detail, param, code)
    return body if "error" in body else {"error": {"message": detail, **body}}


def malformed_json(exc: BaseException) -> bool:
    """Whether `exc` came from a JSON decode error (Litestar's own decode of a body). A context
    suppressed by `raise ... from None` is not followed: an error raised that way names its field
    itself (the import's `line 3` was reported as the whole `body`)."""
    seen = exc
    for _ in range(4):
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        if seen is None:
            return False
        if isinstance(seen, msgspec.DecodeError) and not isinstance(seen, msgspec.ValidationError):
            return True
    return False


MAX_PATH = 128  # characters of a request's path an error repeats
# said after the user-id rule of a user id sent with an encoded `/` (`service.ids.one_segment_ids`)
ENCODED_SLASH_HINT = "; `%2F` in a path is an encoded `/`, which no user id holds"
# a `/` sent percent-encoded inside one path segment (`/v1/users/ann%2Fpreferences`): looked for in a request's
# raw path and in a user id (`service.ids`), and in the path as routed, where `one_segment_ids` keeps it
ENCODED_SLASH = re.compile(r"%2f", re.IGNORECASE)
USERS_PATH = "/v1/users/"  # the routes whose first segment after it is a user id
_USER_ID_WITH_SLASH = re.compile(re.escape(USERS_PATH) + "[^/]*" + ENCODED_SLASH.pattern, re.IGNORECASE)  # the path as routed


def _routes(request: Request, method: str, path: str) -> bool:
    """Whether `method path` reaches a handler of the app (HEAD as GET, as `answer_head` routes it)."""
    try:
        request.app.asgi_router.handle_routing(path=path, method="GET" if method == "HEAD" else method)
    except Exception:  # Litestar's 404 or 405
        return False
    return True


# OpenAI's APIs beside Chat Completions, which its clients' quickstarts lead with (the `openai` library's README opens
# with `client.responses.create`): the first segment after /v1 -> what a 404 there says is served instead
OPENAI_APIS_NOT_SERVED = {
    "responses": "OpenAI's Responses API (`client.responses.create`) is not served: pluralign is OpenAI-compatible "
                 "through Chat Completions, `POST /v1/chat/completions` (`client.chat.completions.create`, `messages` "
                 "for `input`)",
    "completions": "OpenAI's legacy Completions API (`client.completions.create`, a `prompt`) is not served: send "
                   "`messages` to `POST /v1/chat/completions` (`client.chat.completions.create`)",
    "embeddings": "embeddings are not served here: `pluralign serve-embeddings` serves `POST /v1/embeddings` on a port "
                  "of its own (deploy/README.md)",
}


# OpenAI's stored chat completions (chats sent with `store: true`, read back by id): the openai client's
# `client.chat.completions.retrieve(id)`, `.update`, `.delete` and `.messages.list` reach /v1/chat/completions/{id}[/messages],
# its `.list()` GET /v1/chat/completions: what the 404 (or the 405 of that GET) says a user's stored chats are instead
STORED_CHATS_NOT_SERVED = (
    "OpenAI's stored chat completions (`client.chat.completions.retrieve`, `.list`, `.update`, `.delete`, `.messages.list`) "
    "are not served: a named user's stored chats are the `interaction` lines of `GET /v1/users/{id}/export`, each with "
    "its `response_id` (the reply's `id`), kept until `DELETE /v1/users/{id}` (docs/api.md)")


def _openai_api_hint(path: str) -> str | None:
    """What a 404 says for a path under one of OpenAI's APIs this service does not serve (with or without its
    `/v1`: a client's base_url without it too), else None."""
    sent = path.strip("/").split("/")
    rest = sent[1:] if sent[0] == "v1" and len(sent) > 1 else sent
    # a stored chat by its id, or its messages (the client's shapes only: `/v1/chat/completions/chat/completions`
    # is a base_url set to the route's own URL, `_route_after_route`)
    if rest[:2] == ["chat", "completions"] and (len(rest) == 3 or (len(rest) == 4 and rest[3] == "messages")):
        return STORED_CHATS_NOT_SERVED
    return OPENAI_APIS_NOT_SERVED.get(rest[0])


def _route_after_route(request: Request, method: str, path: str) -> str | None:
    """The route an OpenAI client meant whose base_url is a route's own URL (`.../v1/chat/completions`, as a curl example
    gives the endpoint): it sends `/v1/chat/completions/chat/completions`, the route's path and then the client's part of
    it, which is the route meant with `/v1` before it. None when the path is no route's path and a route after it."""
    for route in request.app.routes:
        prefix = route.path.rstrip("/")
        if prefix.startswith("/v1/") and "{" not in prefix and path.startswith(prefix + "/") \
                and (meant := "/v1" + path[len(prefix):].rstrip("/")) != path and _routes(request, method, meant):
            return f"did you mean `{method} {shorten(meant, MAX_PATH + 3, '...')}`? (the path begins with the route `{prefix}`: an OpenAI client's base_url is the service's URL ending in /v1, not a route's)"
    return None


def _place_hint(request: Request, path: str) -> str | None:
    """What a 404 says for a place a person opens in a browser rather than a route: the service's own URL (as `make
    serve` prints it), `/admin` (looking for the dashboard), and a docs page or document under /schema that Litestar's
    defaults serve and this service does not (/schema/redoc, /schema/openapi.yaml). None elsewhere."""
    if path.rstrip("/") in ("", "/v1"):
        dashboard = ", the operator's dashboard at /admin/dashboard" if _routes(request, "GET", "/admin/dashboard") else ""
        return ("pluralign's API routes begin with /v1/ (POST /v1/chat/completions, GET /v1/models, ...: docs/api.md lists "
                f"them); interactive docs at /schema{dashboard}")
    if request.method not in ("GET", "HEAD"):
        return None
    if path.startswith("/schema/") and _routes(request, "GET", "/schema/openapi.json"):
        return "the API's docs are Swagger UI at /schema (also /schema/swagger) and the OpenAPI document /schema/openapi.json"
    if path.rstrip("/") == "/admin" and _routes(request, "GET", "/admin/dashboard"):
        return "the operator's dashboard is at /admin/dashboard (docs/admin.md lists the admin routes)"
    return None


def _route_hint(request: Request) -> str | None:
    """What a 404 for a path no route has says instead of pointing at the docs, when the path is plainly
    one of ours mis-sent: a route without its `/v1` (an OpenAI client given the service's URL as its
    `base_url`) or with `/v1` twice (a base URL ending in /v1/v1), or a route with its fixed segments
    mistyped (`_closest_route`: `/v1/chat/completion`, `/healthz`, `/v1/feed`). None when no route is
    that close, or the close one does not take the request's method: a guess there would mislead. The hint
    names no host: the request's Host header is the client's to set (and, behind a proxy, an internal name)."""
    method, path = request.method, request.url.path
    if (place := _place_hint(request, path)) is not None:
        return place
    for meant, why in (("/v1" + path.rstrip("/"), "the API's routes begin with /v1"),
                       (path[3:], "the path holds /v1 twice")):
        if path.startswith("/") and meant.startswith("/v1/") and (path.startswith("/v1/v1/") or not path.startswith("/v1/")) \
                and _routes(request, method, meant):
            return f"did you mean `{method} {shorten(meant, MAX_PATH + 3, '...')}`? ({why}: an OpenAI client's base_url is the service's URL ending in /v1)"
    if (after := _route_after_route(request, method, path)) is not None:
        return after
    if (unserved := _openai_api_hint(path)) is not None:
        return unserved
    best = _closest_route(request, method, path.strip("/").split("/"))
    if best is not None and _routes(request, method, best):
        return f"did you mean `{method} {shorten(best, MAX_PATH + 3, '...')}`? ({_reference(best)} lists the routes)"
    return None


def _closest_route(request: Request, method: str, sent: list[str]) -> str | None:
    """The path of the one route taking `method` that the path's segments `sent` most likely mean: as many segments,
    each of its fixed ones that differs from the one sent being the name `closest_name` picks for it among the fixed
    segments of that place in the routes taking `method` (`completion`: `completions`, `user`: `users`, `feed`:
    `feedback`, `next`: `next-comparison`, `V1`: `v1`); of two routes as close, the one fewer segments away, and
    none when still two. The one rule of every "did you mean" (`pluralign.data.text.closest_name`), not difflib's
    ratio of 0.75 this used: that named far ones (`forwards` read as `rewards`, `preference_kinds` as `preferences`,
    `charts` as `chat`) and missed a word begun (`feed`, `next`, `stated`), and a path with two segments mistyped."""
    wanted = "GET" if method == "HEAD" else method
    shapes = [parts for route in request.app.routes
              if (parts := getattr(route, "path_components", None)) is not None and len(parts) == len(sent)
              and not route.path.startswith("/schema") and wanted in getattr(route, "methods", ())]
    picked: dict[int, str | None] = {}  # place -> the fixed segment closest to the one sent there (`closest_name`)
    found: dict[str, int] = {}  # route's path as meant -> how many segments it changed
    for parts in shapes:
        changed = 0
        for place, (a, b) in enumerate(zip(sent, parts, strict=True)):
            if not isinstance(b, str) or a == b:
                continue
            if place not in picked:
                picked[place] = closest_name(a, [p[place] for p in shapes if isinstance(p[place], str)])
            if picked[place] != b:
                break
            changed += 1
        else:
            if changed:
                found["/" + "/".join(b if isinstance(b, str) else a for a, b in zip(sent, parts, strict=True))] = changed
    fewest = min(found.values(), default=0)
    closest = [meant for meant, changed in found.items() if changed == fewest]
    return closest[0] if len(closest) == 1 else None


def _reference(path: str) -> str:
    """The doc that lists a path's routes and fields: the admin area's are in docs/admin.md, not docs/api.md."""
    return "docs/admin.md" if path == "/admin" or path.startswith("/admin/") else "docs/api.md"


def _unrouted(request: Request, exc: HTTPException) -> str | None:
    """Litestar's bare 404 (no route has this path) and 405 (the path's routes take other methods)
    say only "Not Found" and "Method Not Allowed"; OpenAI's say which request it was ("Invalid URL
    (GET /v1/nope)"), so a typo in a route does not read like a missing user. None for every other
    error (ours always carry their own detail)."""
    path = shorten(request.url.path, MAX_PATH + 3, "...")  # between graphemes: never half an emoji
    if (problem := path_not_utf8(request)) is not None:  # shown as sent, percent-encoded, not as U+FFFD
        path = shorten(request.scope["raw_path"].decode("ascii", "backslashreplace"), MAX_PATH + 3, "...")
        if exc.status_code == 404 and exc.detail == "Not Found":
            return controls_escaped(f"no route `{request.method} {path}`: {problem} ({PERCENT_ENCODE}); "
                                    f"{_reference(request.url.path)} lists the routes")
    if exc.status_code == 404 and exc.detail == "Not Found":  # (the path's control and bidi characters escaped)
        return controls_escaped(f"no route `{request.method} {path}`: {_route_hint(request) or f'{_reference(request.url.path)} lists the routes'}")
    if exc.status_code == 405 and exc.detail == "Method Not Allowed":
        allowed = next((allow_for(request.app, request.url.path, value) for name, value in (exc.headers or {}).items() if name.lower() == "allow"), None)
        stored = "; " + STORED_CHATS_NOT_SERVED if request.url.path.rstrip("/") == "/v1/chat/completions" and request.method in ("GET", "HEAD") else ""
        return controls_escaped((f"`{request.method} {path}`: the path takes {allowed}" if allowed else f"`{request.method} {path}` is not allowed") + stored)
    return None


_IMPORT_PATH = re.compile(re.escape(USERS_PATH) + r"[^/]+/import/?$")  # POST /v1/users/{user_id}/import


def _too_large(request: Request) -> str:
    """A 413's message: how large the body was (when it said) and the limit, the setting named."""
    limit = request.app.state.runtime.settings.max_body_bytes
    sent = request.headers.get("content-length", "")
    # the size, then the limit ("N bytes over the limit" read as N bytes too many)
    size = f"the body is {int(sent)} bytes, larger" if sent.isdigit() and len(sent) < 20 else "the body is larger"
    message = f"`body`: {size} than the limit of {limit} bytes a request (PLURALIGN_MAX_BODY_BYTES)"
    if _IMPORT_PATH.match(request.url.path):  # a preference file of any size has a way in: in pieces
        message += ("; send a larger file in pieces: `pluralign data import --source jsonl --path FILE --url URL --key KEY` "
                    "does (docs/api.md)")  # URL not filled in: the Host header is the client's to set
    return message


def schema_router_hook(response: Response) -> Response:
    """The `after_request` hook of the /schema router: Litestar's OpenAPI plugin answers a /schema/<name>
    it does not serve with its own HTML page, `<h1>Error 404</h1>`; raised instead, it is the JSON 404
    that every other unknown path answers."""
    if response.status_code == 404:
        raise NotFoundException()
    return response


# a field of one feedback kind sent with another (`POST /v1/feedback`'s unknown field): what the body's kind takes instead
_FEEDBACK_FIELD_OF = {
    "user": ("`user`: a `choice`, `rating` or `edit` takes no `user`: its `response_id` names the chat, and the chat its "
             "user (leave it out)"),
    "index": ("`index`: a `rating` or an `edit` takes it (the choice it is about); a `choice` names its pick by "
              "`chosen_index`, a `comparison` its answers by their texts"),
    "chosen_index": ("`chosen_index`: a `choice` takes it (the pick); a `rating` or an `edit` names the choice it is "
                     "about by `index`"),
}


def _worded(request: Request, exc: HTTPException, param: str | None, code: str | None, detail: str | None) -> tuple[str | None, str]:
    """(param, message) of an HTTPException's error body: the field it names (`param`, else the one
    Litestar's message names; shortened to MAX_PARAM) and a message that starts with it, in our words
    where Litestar's or msgspec's say too little (an unknown route or field, a body over the limit)."""
    status = exc.status_code
    message = _unrouted(request, exc) or exc.detail
    if status == 413 and exc.detail == "Request Entity Too Large":  # Litestar's, naming neither the body nor the limit
        param, message = "body", _too_large(request)
    # a client's field name, repeated in `param` and the message: cut, its control and bidi characters escaped
    if param is not None and (said := controls_escaped(shorten(param, MAX_PARAM + 3, "..."))) != param:
        long, param = param, said
        message, detail = message.replace(long, param), detail.replace(long, param) if detail else detail
    missing = _MISSING.match(message) if status == HTTP_400_BAD_REQUEST and param is None else None
    if missing:  # Litestar names it only in its message (with the whole URL)
        param, message = missing["name"], f"`{missing['name']}`: a required {missing['source']} parameter is missing"
    if code == "unknown_parameter" and "unknown field" in message:  # msgspec's words for a body's field
        hint = _HINT.search(message)  # strict.closest_field's
        detail = message = (f"`{param}`: unknown field{hint[0] if hint else ''} ({_reference(request.url.path)} lists the "
                            "fields this API takes)")
        if request.url.path == "/v1/feedback" and param in _FEEDBACK_FIELD_OF:  # another kind takes it
            detail = message = _FEEDBACK_FIELD_OF[param]
    if detail and detail not in message:  # Litestar's "Validation failed for POST ..." says nothing of the field
        message = f"{message}: {detail}" if param is None else detail if detail.startswith(f"`{param}`") else f"`{param}`: {detail}"
    if param and param not in message:
        message = f"`{param}`: {message}"
    return param, message


def _http_error(request: Request, exc: HTTPException) -> Response:
    """The response to an HTTPException other than a 500: its status, its message naming the field
    (`_worded`), its headers (a 405's Allow completed)."""
    status = exc.status_code
    if status == 401 and request.url.path == "/admin/dashboard" and "text/html" in request.headers.get("accept", ""):
        # a browser without a session: to the login form, which sends it back to the same tenant's page once signed in
        # (not every tenant's page); only a tenant name is carried, never another URL
        tenant = request.query_params.get("tenant")
        carried = f"?tenant={quote(tenant, safe='')}" if tenant is not None and USER_ID.fullmatch(tenant) else ""
        return Redirect(f"/admin/login{carried}", status_code=303)
    param, code, detail = from_extra(exc.extra, request)
    if status == HTTP_400_BAD_REQUEST and code != "invalid_json" and malformed_json(exc):  # Litestar's own decode
        return error_response(400, f"`body`: the request body is not valid JSON: {exc.detail}", "body", "invalid_json")
    if status in (404, 405) and exc.detail in ("Not Found", "Method Not Allowed") \
            and _USER_ID_WITH_SLASH.match(request.scope.get("path", "")):  # no route for that method on such a user's path
        return error_response(400, f"`user_id`: {USER_ID_RULE}{ENCODED_SLASH_HINT}", "user_id", "invalid_value")
    param, message = _worded(request, exc, param, code, detail)
    headers = exc.headers
    if status == 405 and headers:  # Litestar's Allow: the path's declared methods; HEAD wherever GET is and takes it
        headers = {name: allow_for(request.app, request.url.path, value) if name.lower() == "allow" else value for name, value in headers.items()}
    return error_response(status, message, param, code, headers=headers)


HUNG_UP = "the client closed the connection before its request's body arrived whole"


def hung_up(request: Request, exc: Exception) -> bool:
    """Whether `exc` is Litestar's "client disconnected prematurely" (an InternalServerException from reading the
    body) of a request whose client went away (`service.requestid.client_gone`): a dropped upload, its hang-up, not
    the server's failure. The API service and the embeddings server answer it CLIENT_CLOSED (499), unlogged."""
    return isinstance(exc, InternalServerException) and client_gone(request.scope)


ENCODER_RETRY_AFTER = 10  # seconds: `Retry-After` of a request whose embeddings server failed (its own retries spent)


def encoder_unavailable(exc: Exception) -> ServiceUnavailableException:
    """The 503 with Retry-After of a request whose texts the embeddings server (`PLURALIGN_ENCODER=openai:URL`) did not
    embed (down, an error answer, or not an embeddings list: `RemoteEncoderError`), its address and words logged, not
    said (one that sent no whole answer in time, `EncoderTimedOut`, says that and the bound).
    Not a 500 `internal error` (a chat of a user, a score, a next comparison), as a generation
    server's failure is this 503."""
    log.error("a request was not finished: %s", exc)
    from pluralign.embed.remote import EncoderTimedOut  # here: what imports this module need not import numpy

    why = "failed or could not be reached (the operator's log says why)"
    if isinstance(exc, EncoderTimedOut):
        why = (f"did not send its whole answer within {exc.bound_s:g} s" + (f" (each of {exc.tries} tries)" if exc.tries > 1 else "")
               + " (PLURALIGN_ENCODER_TIMEOUT_S)")
    return ServiceUnavailableException(
        detail=f"embedding is unavailable for now: the embeddings server (PLURALIGN_ENCODER) {why}; the request was not "
               "finished: send it again", headers={"Retry-After": str(ENCODER_RETRY_AFTER)})


def internal_error_handler(request: Request, exc: Exception) -> Response:
    """Every HTTPException (ours, Litestar's 404/405/413, auth's 401/403) and anything unexpected,
    a ValueError included (not a client's error unless raised as `bad_request`); a 500's own message
    stays in the log."""
    if isinstance(exc, RecursionError):  # a body nested deeper than any decoder goes
        return error_response(400, "`body`: the JSON is nested too deeply", "body", "invalid_json")
    from pluralign.embed.remote import RemoteEncoderError  # here: what imports this module need not import numpy

    if isinstance(exc, RemoteEncoderError):
        exc = encoder_unavailable(exc)
    if isinstance(exc, HTTPException) and exc.status_code != HTTP_500_INTERNAL_SERVER_ERROR:
        return _http_error(request, exc)
    storage = storage_failure(request, exc)
    if storage is not None:
        return storage
    if isinstance(exc, TenantBacklog):
        return backlog_response(exc)
    if hung_up(request, exc):  # no one reads this answer: its status is what is counted and logged
        return error_response(CLIENT_CLOSED, HUNG_UP, "body", "client_closed_request")
    log.exception("unhandled error on %s %s", request.method, route_of(request.scope), exc_info=exc)  # the template: no user id
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


BACKLOG_RETRY_AFTER = 5  # seconds: `Retry-After` of a 503 `feedback_backlog` where the tenant's drain rate is not measured
BACKLOG_RETRY_AFTER_RANGE = (1, 60)  # seconds: the least and the most a measured one says (`backlog_retry_after`)


def backlog_retry_after(exc: TenantBacklog) -> float:
    """`Retry-After` (seconds) of a 503 `feedback_backlog`: the time the tenant's backlog takes to drain enough for the
    request to fit at the rate its rows left the log lately (`TenantBacklog.wait_s`, `DrainRates`), rounded up and held
    within BACKLOG_RETRY_AFTER_RANGE; BACKLOG_RETRY_AFTER where that rate is not measured (fewer than two departures of
    the tenant's rows in the last minute). Not always 5 s: a client told to come back in 5 s where the
    worker needs minutes sends it again a dozen times, and one told 5 s where it needs 0.2 s waits for nothing."""
    return drain_retry_after(exc.wait_s())


def drain_retry_after(wait: float | None) -> float:
    """`Retry-After` (seconds) of a wait of `wait` seconds for rows of the feedback log to drain (None: not measured):
    rounded up, held within BACKLOG_RETRY_AFTER_RANGE; BACKLOG_RETRY_AFTER where None. The 503 `feedback_backlog` of a
    refused feedback or import (`backlog_retry_after`) and of an audit whose feedback was still being moved (the rows
    still waiting over their drain rate: `service.admin.controllers`)."""
    if wait is None:
        return BACKLOG_RETRY_AFTER
    least, most = BACKLOG_RETRY_AFTER_RANGE
    return min(max(math.ceil(wait), least), most)


def backlog_response(exc: TenantBacklog) -> Response:
    """The 503 `feedback_backlog` of a feedback or import refused because its tenant's rows waiting in the feedback log
    are at their bound, by count or by size (`TenantBacklog`, setting `tenant_feedback_backlog_rows`), with Retry-After (`backlog_retry_after`);
    counted in `pluralign_feedback_refused_total{reason="feedback_backlog"}` (`FeedbackLog.refused`). Nothing of the
    request was acknowledged."""
    wait = backlog_retry_after(exc)
    rate = "" if exc.drain_rate is None else f" (they are stored at ~{exc.drain_rate:.3g} rows/s lately)"
    waiting = (f"{exc.rows} feedback rows waiting to be stored, {exc.bytes} bytes of them (at most {exc.byte_limit}: "
               f"{exc.limit} rows of {exc.byte_limit // max(exc.limit, 1)} bytes on average)" if exc.by_size else
               f"{exc.rows} feedback rows waiting to be stored (at most {exc.limit})")
    message = (f"this tenant has {waiting}{rate}; this request's {exc.adding} were not acknowledged: send them again "
               f"after `Retry-After` seconds ({wait:g})")
    return error_response(503, message, code="feedback_backlog", headers={"Retry-After": f"{wait:g}"})


STORAGE_RETRY_AFTER = 60  # seconds: `Retry-After` of a 503 for a table that cannot be read or written


def storage_status(exc: StoreUnavailable, method: str = "POST", done: str | None = None) -> tuple[int, str, str]:
    """(status, code, message) for stored data that cannot be read or written while answering a
    request of `method`: 507 `insufficient_storage` for no room, 503 `storage_unavailable` for a
    read-only folder or a damaged file. The message names the table (or the feedback log), never a
    path, then says what became of the request (`done`, else by its method)."""
    if done is None:
        done = ("send the request again later" if method in ("GET", "HEAD")
                else "nothing this request sent was acknowledged; send it again later")
    status, code = (507, "insufficient_storage") if exc.problem == "full" else (503, "storage_unavailable")
    return status, code, f"{exc.public} (the operator's log says where): {done}"


def storage_response(request: Request, failure: StoreUnavailable, done: str | None = None, logged: bool = True) -> Response:
    """The 507 or 503 of `storage_status`, and one log line naming what failed, its folder and the
    cause, for the operator (docs/operations.md); none when not `logged` (said lately)."""
    status, code, message = storage_status(failure, request.method, done)
    if logged:
        log.error("%s %s answered %d: %s (docs/operations.md, storage failures)", request.method, route_of(request.scope), status, failure)
    headers = {"Retry-After": str(STORAGE_RETRY_AFTER)} if status == 503 else None
    return error_response(status, message, code=code, headers=headers)


def storage_failure(request: Request, exc: BaseException) -> Response | None:
    """A request that failed because stored data cannot be read or written (a full disk, a read-only
    mount, a damaged LanceDB file; `pluralign.store.failures`): 507 or 503 naming what, and one log
    line naming it with its folder and the cause, for the operator (docs/operations.md). None for
    any other failure."""
    failure = storage_failure_of(request.app.state.runtime, exc)
    return None if failure is None else storage_response(request, failure)


def storage_failure_of(rt, exc: BaseException) -> StoreUnavailable | None:
    """`exc` as the StoreUnavailable its request is answered by (`storage_failure`, a stream's error event): itself, or
    a plain OSError (ENOSPC, EROFS, EIO) from a file the service writes itself (a job's record) as "the data folder"
    (`rt.settings.data_path`), then recorded in `rt.store.problems`; a calibration pool or the pools' ledger that cannot
    be read (`CalibrationPoolUnreadable`) as that file, unreadable, recorded the same way (not a 500 `internal error`,
    which would say nothing of it); None for any other failure."""
    # here: what imports this module need not import numpy
    from service.calibration.pools import CalibrationPoolUnreadable

    if isinstance(exc, CalibrationPoolUnreadable):
        failure = StoreUnavailable(exc.what, exc.where, "read", "unreadable", str(exc))
        rt.store.problems.failed(failure, watched=False)
        return failure
    found = storage_problem(exc)
    action = "read or written" if found is not None and found[0] == "unreadable" else "written"  # EIO: either
    failure = unavailable(exc, "the data folder", str(rt.settings.data_path), action) if isinstance(exc, OSError) else None
    if failure is not None and failure is not exc:
        rt.store.problems.failed(failure, watched=False)
    return failure
