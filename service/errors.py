"""Every bad input is a 4xx that names the field and the problem; nothing reaches the client as a 500."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR

log = logging.getLogger("pluralign.service")


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The body of every error response (documented in the OpenAPI schema under each route's codes)."""

    status_code: int
    detail: str
    extra: list[dict[str, Any]] | None = None  # [{"key": field, "message": problem}]


_WHY = {
    400: "Bad request: the `extra` entries name each field and its problem",
    404: "Not found in this tenant",
    409: "Conflict",
    413: "Request body too large",
    429: "Too many requests: retry after `Retry-After` seconds",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI `responses` for a route's error codes, so clients (and schema fuzzers) know them."""
    return {code: ResponseSpec(data_container=ErrorBody, description=_WHY.get(code, "Error"), generate_examples=False) for code in codes}


def bad_request(field: str, problem: str) -> ValidationException:
    """A 400 whose body says which field is wrong and why."""
    return ValidationException(detail=f"`{field}`: {problem}", extra=[{"key": field, "message": problem}])


def error_body(status: int, detail: str, extra=None) -> dict:
    body = {"status_code": status, "detail": detail}
    if extra:
        body["extra"] = extra
    return body


def stream_error(status: int, detail: str) -> dict:
    """The body of a server-sent error event (a stream's headers are already sent): OpenAI's
    `{"error": {...}}` wrapping this module's error body."""
    body = error_body(status, detail)
    return body if "error" in body else {"error": {"message": detail, **body}}


def value_error_handler(_: Request, exc: ValueError) -> Response:
    """Library ValueErrors (a bad record, an unknown adapter, a bad setting in a request) are the client's."""
    return Response(error_body(HTTP_400_BAD_REQUEST, str(exc)), status_code=HTTP_400_BAD_REQUEST)


def _malformed_json(exc: BaseException) -> bool:
    seen = exc
    for _ in range(4):
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            return False
        if isinstance(seen, msgspec.DecodeError) and not isinstance(seen, msgspec.ValidationError):
            return True
    return False


def internal_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RecursionError):  # a body nested deeper than any decoder goes
        return Response(error_body(400, "`body`: the JSON is nested too deeply", [{"key": "body", "message": "nested too deeply"}]), status_code=400)
    if isinstance(exc, HTTPException) and exc.status_code != HTTP_500_INTERNAL_SERVER_ERROR:  # a 500's detail stays in the log
        if exc.status_code == HTTP_400_BAD_REQUEST and _malformed_json(exc):
            detail = f"the request body is not valid JSON: {exc.detail}"
            return Response(error_body(400, detail, [{"key": "body", "message": exc.detail}]), status_code=400)
        return Response(error_body(exc.status_code, exc.detail, exc.extra), status_code=exc.status_code, headers=exc.headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(error_body(HTTP_500_INTERNAL_SERVER_ERROR, "internal error"), status_code=HTTP_500_INTERNAL_SERVER_ERROR)
