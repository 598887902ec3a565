"""Strict decoding of JSON request bodies, before Litestar's own (lenient) conversion.

Litestar decodes a body to plain values and then converts them with `strict=False`, so `"n": "3"`
became 3 and `"rerank": "true"` became True; a body nested a thousand levels deep overflowed the
untyped decoder (a 500). `strict_json_body` runs first on every route that takes a JSON body: it
decodes the raw bytes straight into the handler's declared type with msgspec (`strict=True`: no
strings for numbers or booleans; a typed decode stops at the first level that does not fit, so
depth costs nothing) and answers a 400 naming the field on any mismatch. Invalid UTF-8 is a 400
naming the key whose string holds it.
"""

from __future__ import annotations

import re
from functools import lru_cache

import msgspec
from litestar import Request, Response
from litestar.enums import RequestEncodingType

from service.errors import bad_request

_AT = re.compile(r"^(?P<problem>.*?) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.S)  # a key of a dict: "at `key` in `$.x`"
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")
_KEY_BEFORE = re.compile(rb'"((?:[^"\\]|\\.){1,128})"\s*:\s*(?:\[\s*)?"?[^"]*$', re.S)


@lru_cache(maxsize=64)
def _decoder(body_type: type) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(body_type, strict=True)


def field_of(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(`messages[0].role`, problem) from msgspec's 'problem - at `$.messages[0].role`'; a missing or
    unknown field is named by the field itself, a bad key of a dict ('problem - at `key` in
    `$.attributes`') by the dict."""
    message = str(exc)
    found = _AT.match(message)
    problem, path = (found["problem"], found["path"].lstrip(".")) if found else (message, "")
    if found and found["key"]:
        problem = f"a key: {problem}"
    named = _NAMED.search(problem)
    if named and ("missing required field" in problem or "unknown field" in problem):
        path = f"{path}.{named['name']}" if path else named["name"]
    return path or "body", problem


def _utf8_field(body: bytes) -> str:
    """The key whose string value holds the first invalid UTF-8 byte of `body` (or `body`)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        key = _KEY_BEFORE.search(body[: exc.start])
        if key:
            return key.group(1).decode("utf-8", "replace")
    return "body"


def allowed_methods(request: Request) -> str | None:
    """Every method of the matched path. Litestar's automatic OPTIONS answer lists only the methods
    of the first handler registered on a path (GET /v1/users/{id} but not its DELETE)."""
    template = request.scope.get("path_template")
    for route in request.app.routes:
        if getattr(route, "path_format", None) == template and hasattr(route, "methods"):
            return ", ".join(sorted(route.methods))
    return None


async def before_request(request: Request) -> Response | None:
    """The app's hook before every handler: OPTIONS answered with the path's full `Allow`, JSON
    bodies decoded strictly."""
    if request.method == "OPTIONS":
        allow = allowed_methods(request)
        return Response(None, status_code=204, headers={"Allow": allow}) if allow else None
    return await strict_json_body(request)


async def strict_json_body(request: Request) -> None:
    """A `before_request` hook: raises a 400 naming the field when the body does not decode strictly
    into the route's declared body type. Routes without a JSON body are left alone."""
    data = request.route_handler.parsed_data_field
    if data is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    kwarg = data.kwarg_definition
    if kwarg is not None and getattr(kwarg, "media_type", RequestEncodingType.JSON) != RequestEncodingType.JSON:
        return None
    body = await request.body()
    try:
        _decoder(data.annotation).decode(body)
    except msgspec.ValidationError as exc:
        field, problem = field_of(exc)
        # an unknown field keeps OpenAI's code for it (clients show `unknown_parameter`)
        raise bad_request(field, problem, code="unknown_parameter" if "unknown field" in problem else "invalid_value") from None
    except msgspec.DecodeError as exc:
        raise bad_request("body", f"the request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        field = _utf8_field(body)
        raise bad_request(field, f"is not valid UTF-8 ({exc.reason} at byte {exc.start} of the string)") from None
    except RecursionError:
        raise bad_request("body", "the JSON is nested too deeply") from None
    return None
