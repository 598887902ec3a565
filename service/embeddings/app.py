"""A small server for OpenAI's `/v1/embeddings` over a local encoder (`pluralign serve-embeddings`).

It is what `PLURALIGN_ENCODER=openai:URL` talks to when no Text Embeddings Inference or vLLM server
is at hand (tests, a CPU box set apart for embedding). Floats or base64 (little-endian float32, the
openai client's default) as the request asks; requests are encoded one at a time in a worker
thread, in the order they come. Told to stop (`stop_taking_encodes`, SIGTERM), requests still waiting
for their turn are answered 503 with Retry-After at once (the openai client, and so `RemoteEncoder`,
sends them again); the one encoding finishes. Every answer carries `X-Request-Id` (the caller's own, as
the front service's `RemoteEncoder` forwards it, or a fresh one), and each request has an access-log line
naming it (`service.requestid`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
from typing import Literal

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.exceptions import HTTPException, ServiceUnavailableException, TooManyRequestsException
from litestar.params import JSONBody

from pluralign.data.decode_words import in_our_words
from pluralign.data.record import Base
from pluralign.embed.base import Encoder, window_texts, word_pieces
from service.errors import (
    HUNG_UP,
    MAX_PARAM,
    MAX_PATH,
    bad_request,
    controls_escaped,
    from_extra,
    hung_up,
    malformed_json,
    refuse_request_id,
    shorten,
    shown,
)
from service.metrics import access_route_of, method_of
from service.requestid import CLIENT_CLOSED, app_logging, with_request_ids
from service.scheduler import Busy, FairScheduler, Stopping
from service.stopping import STOPPING, STOPPING_RETRY_AFTER
from service.strict import (
    DecodedRequest,
    not_utf8_off_loop,
    one_content_type,
    read_json_body,
    refuse_content_coding,
    refuse_expectation,
    refuse_json_route_type,
    refuse_transfer_coding,
    undecodable_json_off_loop,
)

log = logging.getLogger("pluralign.embeddings")


class EmbeddingsRequest(msgspec.Struct):  # OpenAI's request carries fields we ignore (user, dimensions)
    input: str | list[str]
    model: str
    encoding_format: Literal["float", "base64"] | None = "float"  # null: not given, floats (as the API service takes a null)
    dimensions: int | None = None
    user: str | None = None


class Embedding(Base):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class Usage(Base):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Base):
    data: list[Embedding]
    model: str
    usage: Usage
    object: str = "list"


def openai_error(request: Request, exc: Exception) -> Response:
    """Errors in OpenAI's shape (`{"error": {"message", "type", "param"}}`), which its clients print.
    Only an HTTPException (a request checked and refused) is a 4xx; anything else, a ValueError from
    the encoder included, is a 500 `internal error` with its detail in the log (it was a 400 carrying
    the exception's text)."""
    if not isinstance(exc, HTTPException):
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return Response({"error": {"message": "internal error", "type": "server_error", "param": None, "code": "internal_error"}},
                        status_code=500)
    if hung_up(request, exc):  # counted and logged as the client's hang-up (499), not a 500: no one reads it
        return Response({"error": {"message": HUNG_UP, "type": "invalid_request_error", "param": "body", "code": "client_closed_request"}},
                        status_code=CLIENT_CLOSED)
    status = exc.status_code
    param, code, detail = from_extra(getattr(exc, "extra", None), request)  # the field, as the API service names it
    message = exc.detail
    if status in (404, 405) and exc.detail in ("Not Found", "Method Not Allowed"):  # Litestar's words name no request
        path = controls_escaped(shorten(request.url.path, MAX_PATH + 3, "..."))  # an override or ESC written as its escape
        message, code = f"no route `{request.method} {path}`: this server serves `POST /v1/embeddings`, `GET /info` and `GET /health`", \
            "not_found" if status == 404 else None
    elif status == 400 and malformed_json(exc):  # Litestar's own decode: "Input data was truncated"
        param, code, message = "body", "invalid_json", f"`body`: the request body is not valid JSON: {exc.detail}"
    elif detail:  # Litestar's "Validation failed for POST /v1/embeddings" said nothing of the field or the problem
        message = detail if param is None or detail.startswith(f"`{param}`") else f"`{param}`: {detail}"
    if status == 400 and code is None:
        code = "invalid_value"
    kind = "invalid_request_error" if status < 500 else "server_error"
    return Response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status, headers=exc.headers)


async def check_json_body(request: Request) -> None:
    """`create_embeddings_app`'s `before_request`: the body's type and charset as the API service checks them (`service.strict.read_json_body`:
    a 415 naming `Content-Type` for another type or charset, UTF-16 and UTF-32 read as declared, a
    UTF-8 BOM ignored; any type was read as JSON); then a body that is not JSON is the API service's 400
    (`service.strict.undecodable_json`): a lone UTF-16 surrogate escape names its field (Litestar's own decode
    said "Input data was truncated", naming none), a UTF-16 or UTF-32 body sent without its charset says so and
    how to send it (Litestar's said "invalid character (byte 0)"). An empty body, and the fields, are Litestar's
    to refuse (it names the fields missing). Before it, as the API service's hook: a `Content-Encoding` is a 415 naming it, and
    `Content-Type` sent twice a 400 naming it (not the first type read, nor a gzipped body as JSON)."""
    refuse_expectation(request)  # as the API service's hook: a 417 before the body is read
    if request.method == "POST" and request.url.path == "/v1/embeddings":
        refuse_content_coding(request)
        refuse_transfer_coding(request)  # as the API service's hook
        one_content_type(request)
        refuse_json_route_type(request)  # a type refused before the body is read (no 100 Continue)
        body = await read_json_body(request)
        if body.strip():
            try:
                msgspec.json.decode(body, type=msgspec.Raw)  # JSON's syntax only, not kept: Litestar decodes the fields
                # Raw reads no string: one holding a byte that is not UTF-8 was Litestar's 500 (1 MB: 0.3 ms ASCII, 4 ms not)
                body.isascii() or body.decode("utf-8")
            except (msgspec.DecodeError, RecursionError) as exc:
                raise await undecodable_json_off_loop(body, exc) from None
            except UnicodeDecodeError as exc:
                raise await not_utf8_off_loop(body, f"{exc.reason} at byte {exc.start} of the body") from None
            if _LARGE_NUMBER.search(body) and (field := out_of_range_field(body)) is not None:
                raise bad_request(shorten(field, MAX_PARAM, "..."), in_our_words("Number out of range"))


# what a number no float holds is written with (`1e400`, `1` and 300 zeros `e9`): only a body holding one (or a text
# that looks so) is decoded whole again, a MB in 10 ms where the syntax check above takes 0.3 ms
_LARGE_NUMBER = re.compile(rb"\d{100}|[eE][+-]?\d{3}")


def out_of_range_field(body: bytes) -> str | None:
    """The top-level field of the JSON object `body` holding a number that no 64-bit integer or float holds (`1e400`),
    anywhere in its value; None when none does. Litestar's decode refuses such a body naming no field (msgspec's
    `Number out of range - at `$[...]``: a dict's value, its key unsaid), as the API service's does not."""
    try:
        fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except msgspec.ValidationError:  # not an object: Litestar's to refuse
        return None
    for name, value in fields.items():
        try:
            msgspec.json.decode(value)
        except msgspec.ValidationError:
            return name
    return None


def tokens_read(encoder: Encoder, texts: list[str]) -> int:
    """`usage.prompt_tokens` of a request (OpenAI's: the input's tokens): the word pieces `encoder` reads of `texts`,
    special tokens included, a text past its `max_length` counted as `max_length` (the rest is cut). Counted with the
    encoder's own tokenizer (`counter`, else `tokenizer`: the caller runs it where the encoder runs, one call at a
    time); an encoder with neither (a stand-in) counts words ("hello world"
    is 2 where MiniLM reads 4, and text without spaces (CJK) one a text)."""
    counter = getattr(encoder, "counter", None) or getattr(encoder, "tokenizer", None)
    if counter is None:
        return sum(len(t.split()) for t in texts)
    cap = getattr(encoder, "max_length", None)
    if cap is None:
        return sum(word_pieces(counter, texts))
    return sum(min(n, cap) for n in window_texts(counter, texts, cap)[1])  # a long text's start only: its count is past `cap`


def served_info(encoder: Encoder) -> dict[str, str | int | bool | None]:
    """`GET /info`: what Text Embeddings Inference's says of the model served, which `RemoteEncoder` reads at its start
    (`pluralign.embed.remote.RemoteEncoder._check_served`): `model_id`, the one model name served; `max_input_length`, the
    word pieces the encoder reads of a text (null: not known, a stand-in's); `auto_truncate`, whether a longer text is cut
    (on the right, as a local encoder cuts it: true) or may be refused (null: not known, where this server relays another
    server's vectors, `openai:URL`). A front service of a model other than MiniLM learns the length from it."""
    from pluralign.embed.remote import RemoteEncoder

    length = getattr(encoder, "max_length", None)
    relays = isinstance(encoder, RemoteEncoder)
    return {"model_id": encoder.encoder_id, "max_input_length": length,
            "auto_truncate": None if relays or length is None else True}


def create_embeddings_app(encoder: Encoder, max_batch: int = 256) -> Litestar:
    """Serves `encoder` under its `encoder_id` (the only model name accepted) at /v1/embeddings."""
    lock = threading.Lock()
    served = {"requests": 0, "texts": 0}
    # one encoding at a time, in the order they come (bounded only to keep memory finite): closed as the server stops
    turns = FairScheduler(workers=1, per_tenant=QUEUE, max_waiting=QUEUE, what="encodings")

    @post("/v1/embeddings", status_code=200)  # async: the encoder runs on the `turns` thread (below)
    async def embeddings(data: JSONBody[EmbeddingsRequest]) -> EmbeddingsResponse:
        if data.model != encoder.encoder_id:
            raise bad_request("model", f"this server serves {encoder.encoder_id!r}, not {shown(data.model)}")
        texts = [data.input] if isinstance(data.input, str) else data.input
        if not texts or len(texts) > max_batch:
            raise bad_request("input", f"give 1 to {max_batch} texts")
        if (empty := next((i for i, t in enumerate(texts) if not t), None)) is not None:  # OpenAI's API refuses one too
            raise bad_request("input" if isinstance(data.input, str) else f"input[{empty}]",
                              "an empty text: give at least one character (OpenAI's /v1/embeddings refuses an empty input too)")
        if data.dimensions is not None and data.dimensions != encoder.dim:
            raise bad_request("dimensions", f"this model has {encoder.dim} dimensions")

        def run() -> tuple[np.ndarray, int]:
            with lock:
                served["requests"] += 1
                served["texts"] += len(texts)
                return encoder.encode(texts), tokens_read(encoder, texts)  # counted on this thread, in turn with the encoding

        try:
            vectors, tokens = await asyncio.wrap_future(turns.submit("all", run))
            vectors = vectors.astype("<f4", copy=False)  # (n, d)
        except Busy as exc:
            raise TooManyRequestsException(detail=f"encodings are busy: {exc}", headers={"Retry-After": str(exc.retry_after)}) from None
        except Stopping:
            raise ServiceUnavailableException(detail=f"{STOPPING}: the texts were not encoded; send them again",
                                              headers={"Retry-After": str(STOPPING_RETRY_AFTER)}) from None
        if data.encoding_format == "base64":
            items = [Embedding(index=i, embedding=base64.b64encode(v.tobytes()).decode()) for i, v in enumerate(vectors)]
        else:
            items = [Embedding(index=i, embedding=v.tolist()) for i, v in enumerate(vectors)]
        return EmbeddingsResponse(data=items, model=encoder.encoder_id, usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    @get("/health")
    async def health() -> dict[str, str | int]:
        return {"status": "ok", "model": encoder.encoder_id, "dim": encoder.dim, **served}

    @get("/info")
    async def info() -> dict[str, str | int | bool | None]:
        return served_info(encoder)

    app = Litestar(route_handlers=[embeddings, health, info], exception_handlers={HTTPException: openai_error, Exception: openai_error},
                   before_request=check_json_body, request_class=DecodedRequest, debug=False,
                   logging_config=app_logging("text"))  # each line a request caused ends ` request_id=<id>`
    # the caller's X-Request-Id (the front service's request, `RemoteEncoder`) echoed and on the access line
    # (`pluralign.access`: method, route template, status, ms, request id), so one request is followed across both logs
    app.asgi_handler = with_request_ids(app.asgi_handler, log_access=True, tenant_of=lambda scope: None, route_of=access_route_of,
                                        method_of=method_of, refuse=refuse_request_id)
    app.state.encodings = turns
    return app


QUEUE = 10_000  # requests waiting to be encoded, at most


def stop_taking_encodes(app: Litestar) -> int:
    """The server is told to stop: requests waiting for their turn are answered 503 with Retry-After at
    once, as is every later one; the one encoding finishes. Returns how many were refused."""
    return app.state.encodings.close(STOPPING)

