"""The OpenAPI document says what the service does: who may call each route, every error status it
answers (in OpenAI's error shape), the headers clients act on (`Retry-After`, `ETag`,
`Idempotent-Replayed`), and the real media types (server-sent events, the Prometheus text, the
dashboard's HTML, JSON lines).

Litestar derives paths and bodies from the handlers; `complete_openapi` adds what it cannot know,
in place, on the dict that `/schema/openapi.json` and the docs pages serve.
"""

from __future__ import annotations

import threading
import typing
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.spec import Example
from litestar.utils.sync import AsyncCallable

from pluralign.data.record import USER_ID, USER_ID_RULE
from pluralign.user import FEATURE_NAMES
from service.feedback.services import IDEMPOTENCY_KEY
from service.requestid import VALID
from training.jobs.params import MAX_GROUP_BY_CHARS, PARAMS

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "description": "what is wrong, naming the field"},
                "type": {"type": "string", "examples": ["invalid_request_error"]},
                "param": {"type": ["string", "null"], "description": "the field at fault (`messages[0].role`), or null"},
                "code": {"type": ["string", "null"], "examples": ["invalid_value"]},
                "request_id": {"type": ["string", "null"], "description": "the answer's `X-Request-Id`, which the service's log lines of this request carry"},
            },
        }
    },
    "description": "OpenAI's error shape, for every 4xx and 5xx",
}
SECURITY_SCHEMES = {
    "apiKey": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer pk-...`: a tenant key (/v1) or an admin key (/admin)"},
    "adminSession": {
        "type": "apiKey", "in": "cookie", "name": "pluralign_admin",
        "description": "the dashboard's session, set by POST /admin/login with an admin key",
    },
}
ERRORS = {
    400: "a field is invalid: `error.param` names it",
    401: "no key, or an unknown key",
    403: "the key may not use this route (admin keys: /admin only; tenant keys: /v1 only)",
    404: "no such resource (user, model, job, response) for this tenant",
    413: "the request body is over the size limit (any method's: a body a GET or DELETE is sent with is read too)",
    417: "`Expect` holds an expectation besides `100-continue`, the one this service meets (`code: expectation_failed`, "
         "`error.param` names the header); nothing was done and the body was not read",
    429: "too many requests: retry later",
    500: "an internal error (logged)",
}
# what `pluralign serve` answers on any route before the app sees the request (training.commands.serve: TimedRequests,
# service.stopping.draining), `Connection: close`: the 408 and 431 are declared in every operation
SERVER_ERRORS = {
    408: "the request (its headers, or its body: `error.param` is `body`) did not arrive whole within "
         "PLURALIGN_REQUEST_READ_TIMEOUT_S (`code: request_timeout`); nothing was done: send it again",
    431: "the request line and headers are over the size this service reads (`code: headers_too_large`)",
    503: "the service holds PLURALIGN_MAX_CONNECTIONS connections (`code: too_many_connections`) or is stopping: "
         "nothing was done; retry after `Retry-After` seconds",
}
# a 415's headers: what the route takes (`Accept` for `Content-Type`, `Accept-Encoding` for `Content-Encoding`)
MEDIA_TYPE_HEADERS = {"Accept": {"schema": {"type": "string"}}, "Accept-Encoding": {"schema": {"type": "string"}}}
PUBLIC = {"/health", "/metrics", "/admin/login", "/admin/logout"}
# /metrics' errors where the setting `metrics_admin_only` asks for an admin key (none without it): not ERRORS' words for
# every route ("admin keys: /admin only" is the opposite of what it then takes)
METRICS_ERRORS = {
    401: "a scrape from another machine (or through a proxy) without the setting `metrics_token`'s bearer token or an admin "
         "key, a wrong token, or no key or an unknown key where the setting `metrics_admin_only` asks for an admin key",
    403: "a tenant key, where the setting `metrics_admin_only` asks for an admin key (the totals count every tenant's traffic)",
}
MEDIA = {  # (path, method) -> the media types the 200 really answers
    ("/metrics", "get"): {"text/plain; version=0.0.4": {"schema": {"type": "string"}}, "text/plain; version=1.0.0": {"schema": {"type": "string"}},
                          "application/openmetrics-text; version=1.0.0": {"schema": {"type": "string"}}},
    ("/admin/dashboard", "get"): {"text/html": {"schema": {"type": "string"}}},
    ("/admin/login", "get"): {"text/html": {"schema": {"type": "string"}}},
    ("/v1/users/{user_id}/export", "get"): {"application/x-ndjson": {"schema": {"type": "string", "description": "one JSON object per line"}}},
}
RETRY_AFTER = {"description": "seconds to wait before sending the request again", "schema": {"type": "integer", "minimum": 1}}
WWW_AUTHENTICATE = {"description": '`Bearer realm="pluralign"` (with `error="invalid_token"` for an unknown key)', "schema": {"type": "string"}}
ETAG = {"description": 'the stated preferences\' entity tag, `"<epoch>.<version>"` (`"0"` at version 0; never given again for the user, even after a DELETE), for `If-Match` and `If-None-Match`',
        "schema": {"type": "string"}}
RESPONSE_HEADERS = {  # (path, method, status) -> headers it answers, beyond Retry-After on every 429 and 503
    ("/v1/users/{user_id}/stated-preferences", "get", "200"): {"ETag": ETAG},
    ("/v1/users/{user_id}/stated-preferences", "get", "304"): {"ETag": ETAG},
    ("/v1/users/{user_id}/stated-preferences", "patch", "200"): {"ETag": ETAG},
    ("/v1/users/{user_id}/stated-preferences", "patch", "412"): {"ETag": ETAG},
    **{(path, "post", "201"): {"Idempotent-Replayed": {
        "description": f"`true` when the `Idempotency-Key` was stored already{also}: nothing new was stored, the first receipt is answered",
        "schema": {"type": "string", "enum": ["true"]}}} for path, also in (
        ("/v1/feedback", ", or (sent without one) a `choice`, `rating` or `edit` is the same as the last feedback stored on its response"),
        ("/v1/users/{user_id}/import", ""))},
    ("/admin/jobs", "post", "201"): {"Location": {"description": "the job queued: `/admin/jobs/{id}`", "schema": {"type": "string"}}},
    ("/admin/jobs", "post", "200"): {"Content-Location": {
        "description": "the queued audit answered (nothing queued): `/admin/jobs/{id}`", "schema": {"type": "string"}}},
}
# every route takes and every answer carries `X-Request-Id` (service.requestid): declared once, referred to from each
REQUEST_ID_PARAMETER = {
    "name": "X-Request-Id", "in": "header", "required": False,
    "description": "your id for this request (a gateway's, a trace's), answered back and on the service's log lines; "
                   "without it the service makes one (`req_` and 32 hex digits). Another value is a 400 naming the header",
    "schema": {"type": "string", "pattern": f"^{VALID.pattern}$"},
}
REQUEST_ID_HEADER = {"description": "the request's id: the one sent, else a fresh `req_<32 hex>`; error bodies repeat it as "
                                    "`error.request_id`", "schema": {"type": "string"}}
SSE = {"schema": {"type": "string", "description": "`data: {chat.completion.chunk}` events, then `data: [DONE]`"}}


# what the service checks of a user id (service.ids.check_user_id): declared, so a generated client or a schema
# fuzzer knows it; `$` in a JSON Schema pattern (ECMA-262) does not match before a final newline, as Python's does
USER_ID_SCHEMA = {"type": "string", "pattern": f"^{USER_ID.pattern}$", "minLength": 1, "maxLength": 128, "description": USER_ID_RULE}
USER_FIELDS = ("user", "safety_identifier")  # a request body's fields naming the end user
ID_QUERY = {("/admin/audits/fairness", "tenant"), ("/admin/dashboard", "tenant")}  # ids
GROUP_BY = ("/admin/audits/fairness", "group_by")  # an attribute's name, in any script: not an id
MODEL_ID_SCHEMA = {"type": "string", "description": "a model's `id` from GET /v1/models (it may hold a `/`)"}
IDEMPOTENCY_KEY_SCHEMA = {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$",
                          "description": "1-255 printable ASCII characters, no spaces"}


def _declare_choices(schema: dict, path: str, op: dict) -> None:
    """The admin routes' job kinds (a body's `kind`, the jobs list's `?kind=`) and the ids they take in the query
    (a tenant, an attribute), which the service checks (training.jobs.params) but Litestar sees as any string."""
    kinds = sorted(PARAMS)
    request = schema.get("components", {}).get("schemas", {}).get("JobRequest", {}).get("properties", {})
    if "kind" in request:
        request["kind"] = {"type": "string", "enum": kinds}
    for parameter in op.get("parameters", []):
        if parameter.get("in") != "query":
            continue
        if (path, parameter.get("name")) == ("/admin/jobs", "kind"):
            parameter["schema"] = {"oneOf": [{"type": "string", "enum": kinds}, {"type": "null"}]}
        elif (path, parameter.get("name")) == GROUP_BY:
            parameter["schema"] = {"type": "string", "minLength": 1, "maxLength": MAX_GROUP_BY_CHARS,
                                   "description": "the attribute to group by, as feedback's `attributes` name it (any script; "
                                                  "not blank, no NUL)"}
        elif (path, parameter.get("name")) in ID_QUERY:
            declared = {**USER_ID_SCHEMA, "description": "an id: " + USER_ID_RULE.split(" is ", 1)[1]}
            parameter["schema"] = declared if parameter.get("required", False) else {"oneOf": [declared, {"type": "null"}]}


def _declare_ids(schema: dict, op: dict) -> None:
    """A path's `user_id` and a request body's `user` carry the user-id rule, `model_id` is a plain string
    (Litestar's `:path` made it `format: uri`, which `pluralign` is not), `Idempotency-Key` its rule."""
    for parameter in op.get("parameters", []):
        name = parameter.get("name")
        if (name, parameter.get("in")) == ("user_id", "path"):
            parameter["schema"] = dict(USER_ID_SCHEMA)
            parameter["example"] = USER_ID_EXAMPLE
        elif (name, parameter.get("in")) == ("model_id", "path"):
            parameter["schema"] = dict(MODEL_ID_SCHEMA)
        elif (name, parameter.get("in")) == ("Idempotency-Key", "header"):
            parameter["schema"] = {"oneOf": [IDEMPOTENCY_KEY_SCHEMA, {"type": "null"}]}
    bodies = [media.get("schema", {}) for media in op.get("requestBody", {}).get("content", {}).values()]
    refs = [b for body in bodies for b in (body.get("oneOf") or [body])]
    components = schema.get("components", {}).get("schemas", {})
    for ref in refs:
        target = components.get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
        for field, spec in target.get("properties", {}).items():
            if field not in USER_FIELDS:
                continue
            if spec.get("type") == "string":
                target["properties"][field] = {**spec, **USER_ID_SCHEMA}
            elif any(b.get("type") == "string" for b in spec.get("oneOf", [])):
                spec["oneOf"] = [dict(USER_ID_SCHEMA) if b.get("type") == "string" else b for b in spec["oneOf"]]


# bodies Litestar cannot see: the import handler reads the request's bytes itself (JSON lines)
REQUEST_BODIES = {
    ("/v1/users/{user_id}/import", "post"): {
        "required": True,
        "description": "JSON lines, one comparison a line in any TRL preference form (what `export?format=preferences` writes); "
                       "at most `PLURALIGN_MAX_BODY_BYTES`",
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
    },
}


# the request bodies the docs page (Swagger UI's "Try it out") starts from: without them it fills each field from the schema
# alone, `"model": "string"`, `"max_tokens": 0`, a feedback of the first kind (`choice`) naming a random response, each a 400
# or 404. The first of each operation's examples is the body it shows; each is sent to its route by
# tests/service/test_trial58.py (the later ones of /v1/feedback name a response to replace by one of your chats')
_POOL = [{"prompt": "Suggest a weekend plan.", "answers": ["Hike on Saturday.", "- Saturday: hike\n- Sunday: rest"]},
         {"prompt": "How do I boil an egg?", "answers": ["Boil it for 7 minutes.", "Put the egg in boiling water, wait "
                                                          "7 minutes for a soft yolk or 10 for a firm one, then cool it in cold water."]}]
_RESPONSE_ID = "chatcmpl-0123456789abcdef0123456789abcdef"  # the shape of a chat's `id`: put one of your chats' there
REQUEST_EXAMPLES: dict[tuple[str, str], dict[str, dict]] = {
    ("/v1/chat/completions", "post"): {
        "chat": {"summary": "a personalized answer for end user alice", "value": {
            "model": "pluralign", "user": "alice", "max_tokens": 64,
            "messages": [{"role": "user", "content": "What should I cook tonight?"}]}},
        "compare": {"summary": "two answers to choose between (`pluralign.compare` names the pair to ask about)", "value": {
            "model": "pluralign", "user": "alice", "n": 2, "max_tokens": 64,
            "messages": [{"role": "user", "content": "Suggest a weekend plan."}]}},
    },
    ("/v1/feedback", "post"): {
        "comparison": {"summary": "an explicit comparison", "value": {
            "type": "comparison", "user": "alice", "prompt": "What should I cook?",
            "chosen": "A spicy curry.", "rejected": "A plain steak."}},
        "choice": {"summary": "the user picked choices[1] of a chat (its `id` as response_id)", "value": {
            "type": "choice", "response_id": _RESPONSE_ID, "chosen_index": 1}},
        "rating": {"summary": "a 1-5 rating of a chat's served answer (its `id` as response_id)", "value": {
            "type": "rating", "response_id": _RESPONSE_ID, "rating": 5}},
        "rating_of_a_choice": {"summary": "a 1-5 rating of choices[1] of a chat with n=2 (`index`: which choice; 0 when left out)",
                               "value": {"type": "rating", "response_id": _RESPONSE_ID, "rating": 2, "index": 1}},
        "edit": {"summary": "the user rewrote a chat's answer (its `id` as response_id)", "value": {
            "type": "edit", "response_id": _RESPONSE_ID, "edited": "A spicy lentil curry with rice."}},
    },
    ("/v1/rewards/score", "post"): {
        "score": {"summary": "score answers for alice", "value": {
            "user": "alice", "prompt": "What should I cook?", "responses": ["A curry.", "A steak."]}},
    },
    ("/v1/users/{user_id}/stated-preferences", "patch"): {
        "state": {"summary": "prefers shorter answers, as lists", "value": {"preferences": {"length": "less", "list_items": "more"}}},
        "clear": {"summary": "clear one statement", "value": {"preferences": {"list_items": None}}},
    },
    ("/v1/users/{user_id}/next-comparison", "post"): {
        "pool": {"summary": "the most informative question of a pool the app supplies", "value": {"pool": _POOL}},
        "stored": {"summary": "from the tenant's calibration pool, else its stored comparisons", "value": {}},
    },
    ("/v1/calibration-pool", "put"): {
        "pool": {"summary": "the questions next-comparison asks when a request sends no pool", "value": {"pool": _POOL}},
    },
    # the first is the one the docs page shows: a population model on the built-in persona protocol, which a fresh
    # service takes (an adapter needs its user's stored comparisons: a 400 naming `params.user` before any)
    ("/admin/jobs", "post"): {
        "population": {"summary": "train the population model (PAL-A) on the built-in persona protocol: needs no stored "
                                  "comparisons", "value": {"kind": "pal", "params": {"protocol": "persona"}}},
        "adapter": {"summary": "train alice's LoRA adapter, once she has stored comparisons (without any: a 400 naming "
                               "`params.user`)", "value": {"kind": "adapter", "params": {"tenant": "default", "user": "alice"}}},
    },
    ("/v1/users/{user_id}/import", "post"): {
        "rows": {"summary": "two comparisons in TRL's standard form", "value":
                 '{"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}\n'
                 '{"prompt": "What should I cook?", "chosen": "A spicy curry.", "rejected": "A plain steak."}\n'},
    },
}
# a path's user id as the docs page fills it in
USER_ID_EXAMPLE = "alice"


def _declare_examples(path: str, method: str, op: dict) -> None:
    """The operation's request body examples (REQUEST_EXAMPLES), on each of its media types."""
    examples = REQUEST_EXAMPLES.get((path, method))
    if examples is None:
        return
    for media in op.get("requestBody", {}).get("content", {}).values():
        media["examples"] = {name: dict(example) for name, example in examples.items()}


def _declare_stated_features(schema: dict) -> None:
    """A stated-preferences PATCH takes the named features only (1 to 16 of them): said in the schema."""
    patch = schema.get("components", {}).get("schemas", {}).get("StatedPatch", {})
    preferences = patch.get("properties", {}).get("preferences")
    if preferences is not None:
        preferences.update(propertyNames={"enum": list(FEATURE_NAMES)}, minProperties=1, maxProperties=16)


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _fix_one_of(node: Any) -> None:
    """`oneOf` of integer and number: an integer matches both, so a validator refuses it; anyOf says it."""
    if isinstance(node, dict):
        branches = node.get("oneOf")
        if isinstance(branches, list) and {"integer", "number"} <= {b.get("type") for b in branches if isinstance(b, dict)}:
            node["anyOf"] = node.pop("oneOf")
        for value in node.values():
            _fix_one_of(value)
    elif isinstance(node, list):
        for value in node:
            _fix_one_of(value)


BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _bounds_on_numbers(op: dict) -> None:
    """An optional number parameter (`float | None`) is a `oneOf` of number and null with its range beside it, where
    JSON Schema reads it as a range for both: the range is put on the number."""
    for parameter in op.get("parameters", []):
        spec = parameter.get("schema", {})
        numbers = [b for b in spec.get("oneOf", []) if isinstance(b, dict) and b.get("type") in ("number", "integer")]
        if numbers and any(bound in spec for bound in BOUNDS):
            for bound in [b for b in BOUNDS if b in spec]:
                value = spec.pop(bound)
                for branch in numbers:
                    branch.setdefault(bound, value)


def _complete_operation(schema: dict, path: str, method: str, op: dict) -> None:
    """One operation of `complete_openapi`, in place: its request body, ids and choices, the
    X-Request-Id parameter, its security and declared errors, real media types and response headers."""
    if (path, method) in REQUEST_BODIES:
        op["requestBody"] = REQUEST_BODIES[(path, method)]
    _declare_examples(path, method, op)
    _declare_ids(schema, op)
    _declare_choices(schema, path, op)
    _bounds_on_numbers(op)
    responses = op.setdefault("responses", {})
    op.setdefault("parameters", []).append({"$ref": "#/components/parameters/RequestId"})
    _declare_errors(path, method, op, responses)
    if (path, method) in MEDIA:
        ok = next(s for s in responses if s.startswith("2"))
        responses[ok]["content"] = MEDIA[(path, method)]
    for status in [s for s in responses if s.startswith("3") and s != "304"]:  # redirects have no body, a Location
        responses[status] = {"description": "see other", "headers": {"Location": {"schema": {"type": "string"}}}}
    if "304" in responses:  # not modified (a conditional GET): no body, and no redirect
        responses["304"].pop("content", None)
    _declare_response_headers(path, method, responses)
    if path == "/v1/chat/completions":
        responses["200"].setdefault("content", {})["text/event-stream"] = SSE
        responses["200"]["description"] = "a chat.completion (JSON), or with `stream: true` server-sent chunks"


def _declare_errors(path: str, method: str, op: dict, responses: dict) -> None:
    """The operation's security requirement (none for a public path) and the errors it may answer."""
    public = path in PUBLIC or path.startswith("/schema")
    if not public:
        op["security"] = [{"apiKey": []}, {"adminSession": []}] if path.startswith("/admin") else [{"apiKey": []}]
    elif path == "/metrics":  # no key from this machine; else `metrics_token`'s token or an admin key (401, 403)
        op["security"] = [{}, {"apiKey": []}]
    # 413 whatever the method: any body a request declares is read before its route runs (service.strict.body_arrived),
    # a GET's or DELETE's too, and one over the limit is refused (declared for every method, not POST, PUT and PATCH only)
    statuses = [400, 413, 417, 500] + ([] if public else [401, 403, 404, 429]) + ([401, 403] if path == "/metrics" else [])
    for status in statuses:
        responses[str(status)] = _error((METRICS_ERRORS if path == "/metrics" else ERRORS).get(status, ERRORS[status]))
    for status, why in SERVER_ERRORS.items():  # a route's own 503 keeps its words
        responses.setdefault(str(status), _error(why))
    if method in ("post", "put", "patch"):  # service.strict: refuse_content_coding, refuse_transfer_coding, refuse_non_json_type
        responses["415"] = {**_error("the body's `Content-Encoding` is not taken (`Accept-Encoding: identity`: send it "
                                     "uncompressed), or a JSON body is declared as another `Content-Type`, or in a `charset` other "
                                     "than UTF-8, UTF-16 or UTF-32 (the import's JSON lines too; `Accept` names what is "
                                     "taken), or a transfer coding besides `chunked` (`Transfer-Encoding: gzip, chunked`); "
                                     "`error.param` names the header"), "headers": dict(MEDIA_TYPE_HEADERS)}
    if (path, method) == ("/admin/login", "post"):
        responses["401"] = {"description": "not an admin key: the form again, with the reason", "content": MEDIA[("/admin/login", "get")]}
        responses["415"] = {**_error("the body is not a form (JSON, multipart, text): `Accept` names the form type; "
                                     "or it has a `Content-Encoding` (`Accept-Encoding: identity`)"), "headers": dict(MEDIA_TYPE_HEADERS)}


def _declare_response_headers(path: str, method: str, responses: dict) -> None:
    """Each response's headers: X-Request-Id on all, Retry-After on a 429 or 503, WWW-Authenticate
    on a 401 (but the login form's), and those RESPONSE_HEADERS names."""
    for status, response in responses.items():
        headers = RESPONSE_HEADERS.get((path, method, status), {})
        if status in ("429", "503"):
            headers = {**headers, "Retry-After": RETRY_AFTER}
        if status == "401" and (path, method) != ("/admin/login", "post"):  # that one answers the form again
            headers = {**headers, "WWW-Authenticate": WWW_AUTHENTICATE}
        response.setdefault("headers", {}).update({**headers, "X-Request-Id": {"$ref": "#/components/headers/RequestId"}})


CONSTRAINTS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
               "minItems", "maxItems", "minProperties", "maxProperties", "propertyNames")
_STRUCT_REF = "#/components/schemas/{name}"


def _structs_in(annotation: Any, found: set[type]) -> None:
    """The msgspec Structs `annotation` names (through Annotated, unions, containers and Litestar's Response[...])."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        found.add(annotation)
    for arg in typing.get_args(annotation):
        _structs_in(arg, found)


def _route_structs(app: Litestar) -> list[type]:
    """The Structs the documented routes take as bodies and answer, and their declared error bodies'."""
    found: set[type] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if not isinstance(handler, HTTPRouteHandler) or not handler.resolve_include_in_schema():
                continue
            signature = handler.parsed_fn_signature
            if "data" in signature.parameters:
                _structs_in(signature.parameters["data"].annotation, found)
            _structs_in(signature.return_type.annotation, found)
            for spec in (handler.responses or {}).values():
                _structs_in(spec.data_container, found)
    return sorted(found, key=lambda t: (t.__module__, t.__qualname__))


def _has_constraint(node: Any) -> bool:
    if isinstance(node, dict):
        return any(key in node for key in CONSTRAINTS) or any(_has_constraint(v) for v in node.values())
    return isinstance(node, list) and any(_has_constraint(v) for v in node)


def _without_words(node: Any) -> Any:
    """`node` without what describes rather than constrains (descriptions, titles, defaults, examples)."""
    if isinstance(node, dict):
        return {k: _without_words(v) for k, v in node.items() if k not in ("description", "title", "default", "examples")}
    return [_without_words(v) for v in node] if isinstance(node, list) else node


def _refs_found(node: Any, components: dict) -> bool:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] not in components:
            return False
        return all(_refs_found(v, components) for v in node.values())
    return all(_refs_found(v, components) for v in node) if isinstance(node, list) else True


def constrain_as_msgspec(schema: dict, structs: list[type]) -> None:
    """Each property of a body component whose constraints Litestar's reading of msgspec's `Meta` lost is declared as
    msgspec declares it (msgspec validates the bodies), in place, its description kept. Litestar 2.25 drops a bound of
    0 (`ComparisonFeedback.margin`'s `ge=0`: falsy), the constraints of a list's items or a dict's keys and values
    (`PoolItem.answers`' 20,000 characters, `shown`'s non-negative indices), and puts an optional field's bounds beside
    its `oneOf`. Components not named as msgspec names them (two Structs of one name) are left as they are."""
    components = schema.get("components", {}).get("schemas", {})
    if not structs:
        return
    _, declared = msgspec.json.schema_components(structs, ref_template=_STRUCT_REF)
    for name, struct_schema in declared.items():
        component = components.get(name)
        if component is None or component.get("type") != "object":
            continue
        properties = component.get("properties", {})
        for field, spec in struct_schema.get("properties", {}).items():
            served = properties.get(field)
            if served is None or not _has_constraint(spec) or _without_words(spec) == _without_words(served):
                continue
            if not _refs_found(spec, components):
                continue
            exact = {k: v for k, v in spec.items() if k != "default"}
            if "anyOf" in exact and "oneOf" in served:  # an optional field, as the rest of the document writes it
                exact["oneOf"] = exact.pop("anyOf")  # (`_fix_one_of` makes an integer-or-number one anyOf again)
            if "description" in served:
                exact["description"] = served["description"]
            properties[field] = exact


def complete_openapi(schema: dict) -> dict:
    """Security schemes and requirements, declared errors, response headers and real media types, in place."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["ErrorBody"] = ERROR_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    components.setdefault("parameters", {})["RequestId"] = REQUEST_ID_PARAMETER
    components.setdefault("headers", {})["RequestId"] = REQUEST_ID_HEADER
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                _complete_operation(schema, path, method, op)
    _declare_stated_features(schema)
    _fix_one_of(schema)
    return schema


def example(summary: str, answer: msgspec.Struct) -> Example:
    """A response's example for a `ResponseSpec(examples=[...], generate_examples=False)`: `answer` as the route
    encodes it (msgspec's builtins), so it keeps to the schema Litestar derives from the same struct."""
    return Example(summary=summary, value=msgspec.to_builtins(answer))


# the completed document of each set of routes served in this process (`install`), by `_routes_of`
_DOCUMENTS: dict[tuple, dict] = {}
_DOCUMENTS_LOCK = threading.Lock()
# what of the app's OpenAPIConfig the document says (not the pages that render it: `render_plugins`, `path`...)
_CONFIG_FIELDS = ("title", "version", "summary", "description", "contact", "license", "terms_of_service", "external_docs",
                  "servers", "tags", "security", "components", "webhooks", "use_handler_docstrings", "create_examples",
                  "random_seed", "operation_id_creator")


def _declared(handler: HTTPRouteHandler) -> tuple:
    """What a route handler, and the routers and app above it, declare that its operation in the document says
    (what litestar 2.25's `litestar._openapi` reads of it besides its function's signature): one function served
    by two apps may be declared differently in each (another status, summary, tags, security, a router's response
    headers or dependencies). Each value's repr, which names a type or a function as itself."""
    dependencies = tuple(sorted((name, provide.dependency) for name, provide in handler.resolve_dependencies().items()))
    return dependencies, repr((
        handler.status_code, handler.summary, handler.description, handler.deprecated, handler.operation_id,
        handler.operation_class, handler.media_type, handler.content_encoding, handler.content_media_type,
        handler.response_description, handler.raises, handler.responses, handler.resolve_tags(), handler.resolve_security(),
        sorted(map(repr, handler.resolve_response_headers())), sorted(map(repr, handler.resolve_response_cookies())),
        sorted(handler.resolve_layered_parameters().items()), handler.resolve_data_dto(), handler.resolve_return_dto(),
    ))


def _routes_of(app: Litestar, plugin: OpenAPIPlugin) -> tuple:
    """What Litestar derives the document from: the app's OpenAPI config and plugins, and each documented route's
    path, methods, handler functions (the functions themselves, which the key keeps, never an id a later function
    could reuse; Litestar wraps a sync one in an `AsyncCallable` of its app's own) and what is declared of each
    (`_declared`)."""
    config = plugin.openapi_config
    return (
        repr(tuple(getattr(config, name) for name in _CONFIG_FIELDS)), tuple(type(p) for p in app.plugins.openapi),
        *sorted(
            ((path, method, handler.fn.func if isinstance(handler.fn, AsyncCallable) else handler.fn, *_declared(handler))
             for path, route in plugin.included_routes.items()
             for method, (handler, _) in route.route_handler_map.items() if handler.resolve_include_in_schema()),
            key=lambda route: (route[0], route[1]),
        ),
    )


def install(app: Litestar) -> None:
    """Build the app's OpenAPI document now and complete it; the docs pages serve this dict. The document
    of a set of routes is built once per process and served by each later app with the same routes:
    building it took 0.1-0.3 s (seconds on a loaded machine), a third of a tiny test service's start,
    and it depends on nothing else (`_routes_of`: the settings change no word of it). Built at start, not at the first request for it: its handlers run on
    the event loop, which the build would hold up."""
    plugin = app.plugins.get(OpenAPIPlugin)
    key = _routes_of(app, plugin)
    with _DOCUMENTS_LOCK:
        document = _DOCUMENTS.get(key)
        if document is None:
            document = plugin.provide_openapi_schema()
            constrain_as_msgspec(document, _route_structs(app))  # first: what completes it may narrow a field further
            _DOCUMENTS[key] = complete_openapi(document)
            return
    # shared, not copied (a deep copy took 40 ms): once completed, nothing writes the document, Litestar only
    # renders it. `_openapi_schema` is what its `provide_openapi_schema` returns once built (litestar 2.25, pinned)
    plugin._openapi_schema = document
