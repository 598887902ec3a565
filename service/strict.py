"""Strict decoding of JSON request bodies, before Litestar's own (lenient) conversion.

Litestar decodes a body to plain values and then converts them with `strict=False`, so `"n": "3"`
became 3 and `"rerank": "true"` became True; a body nested a thousand levels deep overflowed the
untyped decoder (a 500). `strict_json_body` runs first on every route that takes a JSON body: it
decodes the raw bytes straight into the handler's declared type with msgspec (`strict=True`: no
strings for numbers or booleans; a typed decode stops at the first level that does not fit, so
depth costs nothing) and answers a 400 naming the field on any mismatch. Invalid UTF-8 is a 400
naming the field whose string holds it, by its dotted path (`pool[0].answers[1]`). `strict_query`
does the same for query parameters: an integer written as a float (`limit=2.0`), one outside its
range (every integer parameter has one, an int64's at most), or a parameter given twice is a 400
naming it; so is a float parameter that is not a finite decimal number within its range, and a
parameter the route does not take (`unknown_parameter`; /health, /metrics and /schema take any).
"""

from __future__ import annotations

import asyncio
import codecs
import math
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from types import UnionType
from typing import Annotated, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import anyio
import msgspec
from litestar import Request, Response
from litestar.connection.base import empty_receive, empty_send
from litestar.constants import RESERVED_KWARGS
from litestar.enums import ParamType, RequestEncodingType
from litestar.exceptions import HTTPException, MethodNotAllowedException
from litestar.params import ParameterKwarg
from litestar.types import Receive, Scope, Send

from pluralign.data.decode_words import did_you_mean, in_our_words, one_of  # noqa: F401 (did_you_mean: the service's name too)
from pluralign.data.io import utf16_like
from pluralign.data.json_keys import repeated_key
from pluralign.data.record import MAX_CREATED_AT, time_text_hint
from pluralign.data.text import closest_name, lone_surrogate_escape, lone_surrogate_problem, shorten
from service.errors import bad_request, path_problem, unsupported_media_type
from service.head import allow_for, is_head, takes_head
from service.ids import PATTERN_WORDS

_AT = re.compile(r"^(?P<problem>.*?) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.S)  # a key of a dict: "at `key` in `$.x`"
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")
# a whole string, an unterminated one's quote, or structure. A string's body as runs between escapes (Friedl's
# unrolled loop): the alternation per character took 0.4 s to pass a 1 MB string, this takes 25 ms
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[{}\[\],]', re.S)


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
    if problem.startswith("Expected `str` matching regex"):  # the pattern in words, not the regex
        problem = next((f"must be {words}" for core, words in PATTERN_WORDS.items() if core in problem), problem)
    elif _NUMBER_FOR_TEXT.fullmatch(problem):  # `"user": 3`: no number is read as text (3.0 may be "3" or "3.0")
        problem += " (send it as a JSON string, in quotes: \"3\", not 3)"
    elif _TEXT_FOR_NUMBER.fullmatch(problem):  # `"max_tokens": "64"`, as a form's or a script's value stringified
        problem += " (send the number without quotes: 3, not \"3\")"
    elif _TEXT_FOR_BOOL.fullmatch(problem):  # `"stream": "true"`
        problem += " (send true or false without quotes)"
    return path or "body", problem


_NUMBER_FOR_TEXT = re.compile(r"Expected `str(?: \| null)?`, got `(?:int|float)`")
_TEXT_FOR_NUMBER = re.compile(r"Expected `(?:int|float)(?: \| null)?`, got `str`")
_TEXT_FOR_BOOL = re.compile(r"Expected `bool(?: \| null)?`, got `str`")


_SEGMENT = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


class _OutOfRange:
    """A JSON number no float holds (`1e400`), read again untyped: no declared type converts it (`_bad_entry`)."""


def _finite_or_out_of_range(text: str) -> float | _OutOfRange:
    number = float(text)
    return number if math.isfinite(number) else _OutOfRange()


# msgspec refuses such a number ("Number out of range") before any type is looked at, so the untyped reading would
# fail too and leave the dict's key untold; read so, it is the value at fault
_UNTYPED = msgspec.json.Decoder(float_hook=_finite_or_out_of_range)


def _dict_value_field(body: bytes, body_type: type, path: str) -> str:
    """The dotted path of msgspec's `metadata[...]` (a dict's value: msgspec does not say which key):
    `metadata.<key>`, the key of the first value (in the body's order, where msgspec stopped) that
    does not convert to the dict's declared value type. The dict itself (`metadata`) when that cannot
    be told (the body cannot be read again untyped, or no value is found at fault)."""
    pieces = path.split("[...]")
    try:
        root = _UNTYPED.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return pieces[0] or "body"
    segments: list[str | int] = []
    for piece in pieces[:-1]:
        segments += [int(i) if i else name for i, name in _SEGMENT.findall(piece)]
        key = _bad_entry(root, body_type, segments)
        if key is None:
            return _dotted(segments) or "body"
        segments.append(key)
    return _dotted(segments + [int(i) if i else name for i, name in _SEGMENT.findall(pieces[-1])])


def _bad_entry(root, body_type: type, segments: list[str | int]) -> str | None:
    """The key of the first value of the dict at `segments` (in `root`, typed by `body_type`) that
    does not convert strictly to the dict's value type; None if there is none or no such dict."""
    holder, annotation = root, body_type
    for segment in segments:
        annotation = _member_type(annotation, segment)
        try:
            holder = holder[segment]
        except (KeyError, IndexError, TypeError):
            return None
    value_type = _member_type(annotation, "")
    if not isinstance(holder, dict) or value_type is None:
        return None
    for key, value in holder.items():
        try:
            msgspec.convert(value, value_type, strict=True)
        except msgspec.ValidationError:
            return key
    return None


def _member_type(annotation, segment: str | int):
    """The declared type of `annotation`'s member `segment`: a struct's field, a list's item, a
    dict's value (any str segment of a dict; "" asks for it); None when there is none."""
    if annotation is None:
        return None
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    for option in options:
        if get_origin(option) is Annotated:
            option = get_args(option)[0]
        origin = get_origin(option)
        if isinstance(segment, int) and origin in (list, tuple):
            return get_args(option)[0]
        if isinstance(segment, str) and origin is dict:
            return get_args(option)[1]
        if isinstance(segment, str) and segment and isinstance(option, type) and issubclass(option, msgspec.Struct):
            hints = get_type_hints(option, include_extras=True)
            if segment in hints:
                return hints[segment]
    return None


def _options(annotation) -> list:
    """The types `annotation` may be: a union's members, each without `Annotated`."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return [get_args(o)[0] if get_origin(o) is Annotated else o for o in options]


def literal_values(annotation) -> tuple[str, ...]:
    """The values of a `Literal[...]` (or an optional one); () for any other type."""
    return tuple(str(v) for o in _options(annotation) if get_origin(o) is Literal for v in get_args(o))


def _choices(body_type: type, field: str) -> tuple[str, ...]:
    """What the body's field at the dotted path `field` takes when it is a choice: a Literal's
    values, or the tags of a union of tagged structs (`type` of a feedback, of a content part)."""
    segments = [int(i) if i else name for i, name in _SEGMENT.findall(field)]
    if not segments:
        return ()
    parent = body_type
    for segment in segments[:-1]:
        parent = _member_type(parent, segment)
    tags = tuple(str(o.__struct_config__.tag) for o in _options(parent) if isinstance(o, type) and issubclass(o, msgspec.Struct)
                 and o.__struct_config__.tag_field == segments[-1])
    return tags or literal_values(_member_type(parent, segments[-1]))


# the longest dotted path to an unknown field `closest_field` reads for a hint: far past any of the API's own
# (`messages[62499].content[99].prompt_cache_breakpoint`: 51), and a few microseconds to walk and match
MAX_HINTED_PATH = 256


def closest_field(body: bytes, body_type: type, field: str) -> str:
    """` (did you mean `max_tokens`?)`: the field closest to the unknown `field` (a dotted path: `max_token`,
    `pluralign.candidatse`, `messages[0].contnet`) of the struct holding it (`pluralign.data.text.closest_name`: a
    few letters' slip, another case, word order or separator), or "" when none is close or the object already gives
    the close one (`max_token` beside `max_tokens`: naming it would mislead; a null is not given). A union of tagged
    structs (a feedback's kinds, a message's roles) is read as the kind the body's tag names there (an `edit`'s
    `edited`), any of them when that cannot be told. A path over MAX_HINTED_PATH characters gets none: a client's key of up to a MB, walked and
    matched on the event loop, would hold it 0.2-0.6 s a request."""
    if len(field) > MAX_HINTED_PATH:
        return ""
    segments = [int(i) if i else name for i, name in _SEGMENT.findall(field)]
    if not segments or not isinstance(segments[-1], str):
        return ""
    parent = body_type
    for segment in segments[:-1]:
        parent = _member_type(parent, segment)
    holder = _object_at(body, segments[:-1])
    structs = [o for o in _options(parent) if isinstance(o, type) and issubclass(o, msgspec.Struct)]
    if len(structs) > 1:
        structs = _tagged_as(holder, structs) or structs
    names = [f.encode_name for struct in structs for f in msgspec.structs.fields(struct)]
    close = closest_name(segments[-1], names, given={name for name in names if holder.get(name) is not None})  # null: not given
    return f" (did you mean `{close}`?)" if close else ""


def _object_at(body: bytes, segments: list[str | int]) -> dict:
    """The JSON object at `segments` of `body`; {} when it cannot be read (a body past LOOP_BYTES is not decoded
    again on the event loop for a hint)."""
    if len(body) >= LOOP_BYTES:
        return {}
    try:
        holder = msgspec.json.decode(body)
        for segment in segments:
            holder = holder[segment]
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, LookupError, TypeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _tagged_as(holder: dict, structs: list[type]) -> list[type]:
    """Those of the tagged `structs` whose tag the object `holder` carries; [] when none."""
    return [struct for struct in structs if (config := struct.__struct_config__).tag_field is not None
            and holder.get(config.tag_field) == config.tag]


# msgspec's error for a value outside a field's choices: "Invalid enum value <repr>" (a Literal's, an Enum's), and
# "Invalid value <tag>" (a tagged union's tag field: a string tag as its text in quotes, not its repr; an int as is)
_INVALID = re.compile(r"Invalid (?P<enum>enum )?value (?P<got>.*)$", re.S)
# the escapes Python's repr writes in a str (of `\\`, the quotes, tab, newline and return, and code points)
_REPR_ESCAPE = re.compile(r"\\(?:x(?P<x>[0-9a-f]{2})|u(?P<u>[0-9a-f]{4})|U(?P<U>[0-9a-f]{8})|(?P<char>[\\'\"tnr]))")
_ESCAPED = {"\\": "\\", "'": "'", '"': '"', "t": "\t", "n": "\n", "r": "\r"}


def refused_value(problem: str) -> str | int | None:
    """The value msgspec's error `problem` says a field does not take (`Invalid enum value 'robot'`: "robot"), read
    here, not with `ast.literal_eval`: a tag comes as its text in quotes (`'compar\\son'`), which compiled as Python
    raised 3.11's DeprecationWarning for the invalid escape (through `warnings`, which is not thread-safe to silence),
    `\\N{BULLET}` read as a bullet and `it's` not at all; a repr holds only the escapes `_REPR_ESCAPE` reads. None for
    another message, or a value written in a form this does not read."""
    found = _INVALID.match(problem)
    if found is None:
        return None
    got = found["got"]
    if _INTEGER.fullmatch(got):
        return int(got) if len(got) <= 4000 else None  # Python reads at most 4300 digits
    if len(got) < 2 or got[0] != got[-1] or got[0] not in "'\"":
        return None
    if not found["enum"]:  # a tag: its text as it came
        return got[1:-1] if got[0] == "'" else None
    return _REPR_ESCAPE.sub(_unescaped, got[1:-1])


def _unescaped(escape: re.Match) -> str:
    code = escape["x"] or escape["u"] or escape["U"]
    return chr(int(code, 16)) if code else _ESCAPED[escape["char"]]


def _dotted(segments: list[str | int]) -> str:
    out = ""
    for segment in segments:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            segment = shorten(segment, 67, "...")
            out += f".{segment}" if out else segment
    return out


def _utf8_field(body: bytes) -> str:
    """The dotted path (`pool[0].answers[1]`, `attributes.g`) of the string holding the first invalid
    UTF-8 byte of `body`; a key holding it is named by its object (`attributes`); `body` when no
    field does (a string at the top, a key at the top)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _path_to_open_string(body[: exc.start]) or "body"
    return "body"


def _path_to_open_string(prefix: bytes) -> str:
    """The path of the string `prefix` ends inside. msgspec decodes in order and stops at that string,
    so the JSON before it is well formed (and valid UTF-8): a scan of its brackets, commas and
    strings finds each open object's current key and each open array's current index."""
    opened: list[list] = []  # per open container: [key or None, expecting a key] or [index]
    for token in _TOKEN.finditer(prefix):
        text = token.group()
        if text == b'"':  # the string holding the byte: a key names its object, a value its member
            if opened and len(opened[-1]) == 2 and opened[-1][1]:
                opened.pop()
            return "".join(_member(frame, i) for i, frame in enumerate(opened))
        if text == b"{":
            opened.append([None, True])
        elif text == b"[":
            opened.append([0])
        elif text in (b"}", b"]"):
            if opened:
                opened.pop()
        elif text == b",":
            if opened and len(opened[-1]) == 2:
                opened[-1][1] = True
            elif opened:
                opened[-1][0] += 1
        elif opened and len(opened[-1]) == 2 and opened[-1][1]:  # an object's key
            key = msgspec.json.decode(text, type=str)
            opened[-1] = [shorten(key, 67, "..."), False]
    return ""


def _member(frame: list, depth: int) -> str:
    if len(frame) == 1:
        return f"[{frame[0]}]"
    return f".{frame[0]}" if depth else str(frame[0])


def allowed_methods(request: Request) -> str | None:
    """Every method of the matched path. Litestar's automatic OPTIONS answer lists only the methods
    of the first handler registered on a path (GET /v1/users/{id} but not its DELETE); HEAD wherever
    GET is and takes it (`service.head`)."""
    template = request.scope.get("path_template")
    for route in request.app.routes:
        if getattr(route, "path_format", None) == template and hasattr(route, "methods"):
            return allow_for(request.app, request.url.path, ", ".join(route.methods))
    return None


async def before_request(request: Request) -> Response | None:
    """The app's hook before every handler: OPTIONS answered with the path's full `Allow`, path parameters that are no
    UTF-8 or hold NUL refused (`path_problem`), query parameters and JSON bodies decoded strictly."""
    if request.method == "OPTIONS":
        allow = allowed_methods(request)
        return Response(None, status_code=204, headers={"Allow": allow}) if allow else None
    if (refusal := path_problem(request)) is not None:  # a path parameter's bytes no UTF-8, or NUL
        raise refusal
    if is_head(request) and not takes_head(request.route_handler):  # its GET starts work: before any of it
        allow = allowed_methods(request) or "GET, OPTIONS"
        raise MethodNotAllowedException(
            detail=f"`HEAD {request.url.path}`: the path takes {allow} (its GET starts a job, which a HEAD must not)",
            headers={"Allow": allow})
    refuse_expectation(request)
    refuse_content_coding(request)
    refuse_transfer_coding(request)
    one_content_type(request)
    refuse_json_route_type(request)
    strict_query(request)
    await body_arrived(request)
    await strict_form_body(request)
    return await strict_json_body(request)


async def body_arrived(request: Request) -> None:
    """Waits for the whole body a request declares (`Content-Length` over 0, or `Transfer-Encoding`), whether or not its
    route reads one, so no handler runs before its request has arrived: a body that does not arrive within
    PLURALIGN_REQUEST_READ_TIMEOUT_S is answered 408 with nothing done. A route reading no body (a DELETE's) running
    as soon as the head came, a DELETE whose body trickled in would be carried out and answered before the body ended, or
    answered 408 while it went on deleting. Raises Litestar's 413 past the route's body limit (the body is kept for
    the handler: reading it again costs nothing). A GET, HEAD or DELETE route that takes no body (`takes_no_body`) has
    one sent anyway read and dropped as it arrives, piece by piece, and reads it as empty: kept
    whole, near 1 MB would be held twice over (Litestar joins its pieces) for each GET /health sent one under the limit."""
    if not ((request.content_length or 0) > 0 or "transfer-encoding" in request.headers):
        return
    if not takes_no_body(request):
        await request.body()
        return
    async for _ in request.stream():  # RFC 9110 9.3.1: a GET's content has no meaning; it arrives, it is not kept
        pass
    _decoded_request(request).read_as(b"")


def takes_no_body(request: Request) -> bool:
    """Whether the request's route reads no body: a GET, HEAD or DELETE whose handler declares no `data`."""
    return request.method in ("GET", "HEAD", "DELETE") and request.route_handler.parsed_data_field is None


def refuse_expectation(request: Request) -> None:
    """A request whose `Expect` holds anything but `100-continue` (its only expectation, RFC 9110 10.1.1) is a 417
    naming the header (`code: expectation_failed`), before its body is read or anything done: the service cannot meet
    an expectation it does not know, and RFC 9110 lets a server say so rather than go on, as if the
    header were not there. `100-continue` (any case; uvicorn sends the 100 when the app first
    asks for the body, none to an HTTP/1.0 client: `pluralign serve`'s protocol) and an empty value (a list of no members,
    RFC 9110 5.6.1) are taken. Raises the 417 HTTPException."""
    members = [m.strip() for line in request.headers.getall("expect", []) for m in line.split(",") if m.strip()]
    unmet = [m for m in members if m.lower() != "100-continue"]
    if not unmet:
        return
    shown = shorten(unmet[0], 40, "...")
    message = (f"{shown!r}: this service meets no expectation but `100-continue` (RFC 9110 10.1.1); send the request "
               "without it (the body is not read)")
    raise HTTPException(status_code=417, detail=f"`Expect`: {message}",
                        extra=[{"key": "Expect", "message": message, "code": "expectation_failed"}])


def refuse_content_coding(request: Request) -> None:
    """A body sent with a `Content-Encoding` (gzip, br, ...) is a 415 naming the header, whose
    `Accept-Encoding: identity` says what is taken (RFC 9110 15.5.16): bodies are read as sent, so a
    compressed one was "not valid JSON", and a plain one labelled compressed was read despite its label."""
    # a list-based field: its lines are one list (RFC 9110, 5.3), as a proxy in front may join them; with only
    # the first line read, `identity` then `gzip` would have a gzipped body parsed as JSON
    coding = ", ".join(line.strip() for line in request.headers.getall("content-encoding", []))
    codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
    if all(c == "identity" for c in codings) or request.method not in ("POST", "PUT", "PATCH"):
        return
    problem = f"{coding[:32]!r}: request bodies are read as sent, not decompressed: send it uncompressed"
    raise HTTPException(status_code=415, detail=f"`Content-Encoding`: {problem}", headers={"Accept-Encoding": "identity"},
                        extra=[{"key": "Content-Encoding", "message": problem, "code": "unsupported_media_type"}])


def transfer_coding_problem(lines: list[str]) -> tuple[int, str] | None:
    """What is wrong with a request's `Transfer-Encoding` lines (one list, as a proxy may join them: RFC 9110 5.3), as
    (status, problem), or None for none or `chunked` alone, the one coding read. `chunked` not last: 400, the body's
    length cannot be known (RFC 9112 6.3); `chunked` more than once (`chunked, chunked`, on one line or two): 400, a
    sender must not apply it twice (RFC 9112 6.1; not the 415 below, which says to send the body
    uncompressed). Another coding before a final `chunked` (`gzip, chunked`): 415, as a
    `Content-Encoding` is (`refuse_content_coding`): bodies are read as sent, not decompressed (RFC 9112 6.1 allows
    501; 415, which every body route declares, says what to send, and no client retries it)."""
    coding = ", ".join(line.strip() for line in lines)
    codings = [c.strip().lower() for c in coding.split(",") if c.strip()]
    if codings in ([], ["chunked"]):
        return None
    if codings[-1] != "chunked":
        return 400, f"{coding[:32]!r}: `chunked` must be the last transfer coding (the body's length is not known otherwise): send the body chunked or with Content-Length"
    if codings.count("chunked") > 1:
        return 400, f"{coding[:32]!r}: `chunked` is applied once (RFC 9112 6.1): send the body chunked once, or with Content-Length"
    return 415, f"{coding[:32]!r}: only `chunked` is read, and bodies are read as sent, not decompressed: send it uncompressed"


def refuse_transfer_coding(request: Request) -> None:
    """A body sent with a transfer coding besides `chunked` (`Transfer-Encoding: gzip, chunked`) is a 415 naming the
    header, with `Accept-Encoding: identity`, as a `Content-Encoding` is (`transfer_coding_problem`). httptools, uvicorn's
    parser where installed, undoes the chunks alone: unrefused, the app would read the gzip bytes (a 400 'not valid
    JSON' naming `body`), and store a plain body labelled gzip. h11 refuses such a request itself (`pluralign serve`'s
    protocol answers it the same way: `training.commands.serve.TimedRequests.send_400_response`)."""
    problem = transfer_coding_problem(request.headers.getall("transfer-encoding", []))
    if problem is None:
        return
    status, message = problem
    raise HTTPException(status_code=status, detail=f"`Transfer-Encoding`: {message}",
                        headers={"Accept-Encoding": "identity"} if status == 415 else None,
                        extra=[{"key": "Transfer-Encoding", "message": message,
                                "code": "unsupported_media_type" if status == 415 else "invalid_value"}])


def one_content_type(request: Request) -> None:
    """A body sent with `Content-Type` twice is a 400 naming the header: it is one value (RFC 9110, 8.3), and which
    of two counts would be each reader's guess, a proxy's in front as much as this service's, as for two
    `Authorization` headers (service.auth). With the first read, `application/json` then
    `text/plain` would be stored, the other order a 415."""
    sent = request.headers.getall("content-type", [])
    if len(sent) > 1 and request.method in ("POST", "PUT", "PATCH"):
        path = request.url.path
        taken = ("application/x-ndjson" if path.endswith("/import") else
                 "application/x-www-form-urlencoded" if path == "/admin/login" else "application/json")
        raise bad_request("Content-Type", f"{len(sent)} `Content-Type` headers: send one, `Content-Type: {taken}`")


_INTEGER = re.compile(r"-?[0-9]+")
INT64 = (-(2**63), 2**63 - 1)  # what msgspec, LanceDB and a job file hold: an integer parameter's widest range
# a number as JSON writes it (what Litestar's conversion reads after this check): no `+5`, `.5`, `inf`, `nan`
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
MAX_NUMBER_CHARS = 32  # a float parameter's characters: 17 significant digits, a sign, a point and an exponent fit


class QueryParameter(msgspec.Struct, frozen=True):
    """A query parameter of a route: its name in the query and, for an integer or a float (`number`),
    its range (a float's is closed: `ge`/`le`; `gt`/`lt` are taken as the same bounds, and the
    handler's own validation still excludes them)."""

    name: str
    integer: bool = False
    lowest: int = INT64[0]
    highest: int = INT64[1]
    number: bool = False
    least: float = -math.inf
    most: float = math.inf
    choices: tuple[str, ...] = ()  # a Literal's values


def _bounds(kwarg: ParameterKwarg | None) -> tuple[int, int]:
    """The integer range a parameter declares (`ge`/`gt`, `le`/`lt`), within an int64's."""
    lowest, highest = INT64
    if kwarg is not None:
        if kwarg.ge is not None:
            lowest = max(lowest, int(kwarg.ge))
        if kwarg.gt is not None:
            lowest = max(lowest, int(kwarg.gt) + 1)
        if kwarg.le is not None:
            highest = min(highest, int(kwarg.le))
        if kwarg.lt is not None:
            highest = min(highest, int(kwarg.lt) - 1)
    return lowest, highest


def _float_bounds(kwarg: ParameterKwarg | None) -> tuple[float, float]:
    """The range a float parameter declares; an unbounded side is infinite (only finite values pass)."""
    least, most = -math.inf, math.inf
    if kwarg is not None:
        low = kwarg.ge if kwarg.ge is not None else kwarg.gt
        high = kwarg.le if kwarg.le is not None else kwarg.lt
        least = float(low) if low is not None else least
        most = float(high) if high is not None else most
    return least, most


def _shown_bound(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def number_range(parameter: QueryParameter) -> str:
    """`a number from 0 to 600`, `a number of at least 0`, `a finite number`."""
    least, most = parameter.least, parameter.most
    if math.isfinite(least) and math.isfinite(most):
        return f"a number from {_shown_bound(least)} to {_shown_bound(most)}"
    if math.isfinite(least):
        return f"a number of at least {_shown_bound(least)}"
    if math.isfinite(most):
        return f"a number of at most {_shown_bound(most)}"
    return "a finite number"


def check_number(parameter: QueryParameter, value: str) -> None:
    """A 400 naming the parameter unless `value` is a decimal number (as JSON writes one, at most
    `MAX_NUMBER_CHARS` characters) within its range: `wait=` and 5,000 zeros answered "Expected
    `float`, got `str`", 400 nines "Number out of range", `since=nan` reached the handler."""
    name = parameter.name
    shown = shorten(value, 27, "...")  # between graphemes
    wanted = number_range(parameter)
    if len(value) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(value):
        raise bad_request(name, f"must be {wanted}, written in decimal in at most {MAX_NUMBER_CHARS} characters "
                                f"(as in {name}=1.5), got {shown!r}{_time_hint(parameter, value)}")
    number = float(value)
    if not (math.isfinite(number) and parameter.least <= number <= parameter.most):
        raise bad_request(name, f"must be {wanted}, got {shown!r}{_time_hint(parameter, value)}")


def _time_hint(parameter: QueryParameter, value: str) -> str:
    """What a refused value of a parameter of the times an import takes (an audit's `since`) is told: a date's seconds,
    or a time in milliseconds divided (`time_text_hint`); a date whose UTC offset's `+` the query read as a space
    (`since=2026-01-01T00:00:00+01:00` as `date -Iseconds` prints it, not percent-encoded) that it was, and the date's
    seconds. "" for another parameter or value."""
    if (parameter.least, parameter.most) != (0, MAX_CREATED_AT) or len(value) > 64:
        return ""
    if (hint := time_text_hint(value)) or " " not in value.strip():
        return hint
    plus = time_text_hint(value.strip().replace(" ", "+"))
    return f" (a `+` in a query string is read as a space: send it as %2B){plus}" if plus else ""


@lru_cache(maxsize=256)
def _query_parameters(handler) -> tuple[QueryParameter, ...]:
    """Each query parameter of a route handler."""
    found = []
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if name in RESERVED_KWARGS or not (kwarg is None or isinstance(kwarg, ParameterKwarg)):
            continue  # the request, the body, a path parameter, a dependency
        if kwarg is not None and kwarg.param_type in (ParamType.HEADER, ParamType.COOKIE):
            continue
        types = [t for t in field.inner_types if not t.is_none_type] if field.is_optional else [field]
        integer = bool(types) and all(t.is_subclass_of(int) and not t.is_subclass_of(bool) for t in types)
        number = bool(types) and not integer and all(t.is_subclass_of(float) for t in types)
        wire = kwarg.name if kwarg is not None and kwarg.name else name  # QueryParameter(name=...)
        if integer:
            found.append(QueryParameter(wire, integer, *_bounds(kwarg)))
        elif number:
            found.append(QueryParameter(wire, number=True, least=_float_bounds(kwarg)[0], most=_float_bounds(kwarg)[1]))
        else:
            found.append(QueryParameter(wire, choices=literal_values(field.annotation)))
    return tuple(found)


# routes read by tools that add query parameters of their own (probes, scrapers, the docs pages): any query
OPEN_QUERY = ("/health", "/metrics", "/schema")


def refuse_unknown_query(request: Request, parameters: tuple[QueryParameter, ...]) -> None:
    """A 400 (`unknown_parameter`) naming the first query parameter the route does not take, and the
    closest one it does: a mistyped one was ignored (`export?fromat=preferences` answered the full
    export with 200, as if understood), where an unknown body field is refused."""
    template = request.scope.get("path_template") or request.url.path
    if template.startswith(OPEN_QUERY):
        return
    known = [parameter.name for parameter in parameters if parameter.name not in request.path_params]
    for name in request.query_params:
        if name not in known:
            close = closest_name(name, known, given=request.query_params)  # one given is not meant
            takes = f"this route takes {', '.join(f'`{k}`' for k in known)}" if known else "this route takes no query parameters"
            hint = f" (did you mean `{close}`?)" if close else ""
            raise bad_request(name, f"unknown query parameter{hint}; {takes}", code="unknown_parameter")


def strict_query(request: Request) -> None:
    """Query parameters as the docs promise: an integer is written as one (Litestar's lenient
    conversion took `limit=2.0` and `before=1e3` for 2 and 1000), and each parameter is given at
    most once (of `limit=1&limit=500` Litestar used the last). A 400 names the parameter as the
    client wrote it. An integer outside its range is refused here, by its digits (`offset` had no
    upper bound: 10**30 was served, and 5,000 digits answered only 'Integer value out of range')."""
    handler = request.scope.get("route_handler")
    if getattr(handler, "parsed_fn_signature", None) is None:
        return
    path_params = request.path_params
    refuse_unknown_query(request, _query_parameters(handler))
    for parameter in _query_parameters(handler):
        name = parameter.name
        if name in path_params:
            continue
        values = request.query_params.getall(name, [])
        if len(values) > 1:
            raise bad_request(name, f"given {len(values)} times; give it once")
        if parameter.number and values:
            check_number(parameter, values[0])
            continue
        if parameter.choices and values and values[0] not in parameter.choices:
            raise bad_request(name, one_of(parameter.choices, values[0]))
        if not (parameter.integer and values):
            continue
        value = values[0]
        shown = shorten(value, 27, "...")
        if not _INTEGER.fullmatch(value):
            raise bad_request(name, f"must be an integer (digits only, as in {name}=20), got {shown!r}")
        if len(value.lstrip("-")) > 1 and value.lstrip("-").startswith("0"):
            # Litestar's conversion (msgspec's: JSON's grammar) refuses `05` as "`limit`:
            # Expected `int`, got `str`", naming neither the value nor the fault
            raise bad_request(name, f"must be an integer without a leading zero (as in {name}=20), got {shown!r}")
        digits = value.lstrip("-")
        if len(digits) > 19 or not parameter.lowest <= int(value) <= parameter.highest:  # 19: an int64's digits
            raise bad_request(name, f"must be an integer from {parameter.lowest} to {parameter.highest}, got {shown!r}")


FORM = "application/x-www-form-urlencoded"


class DecodedRequest(Request):
    """Litestar's Request (the apps' `request_class`) whose body can be replaced by the body read in its declared
    charset (`read_as`), which Litestar's own decoding of a route's `data` (JSON or form) then reads through the
    public `body()`; `sent_body()` is the body as it arrived (Litestar's limit on its size applied).

    Litestar 2.25 has no public way to replace a body it read: `body()` caches it in `Request._body` and in the
    scope's connection state, both private. A subclass
    overriding `body()` is the way its `request_class` setting documents to change how a body is read."""

    __slots__ = ("_decoded_body",)

    def __init__(self, scope: Scope, receive: Receive = empty_receive, send: Send = empty_send) -> None:
        super().__init__(scope, receive, send)
        self._decoded_body: bytes | None = None

    async def body(self) -> bytes:
        """The body: as `read_as` gave it once it was called, else as it arrived (`sent_body`)."""
        return self._decoded_body if self._decoded_body is not None else await super().body()

    async def sent_body(self) -> bytes:
        """The body as it arrived. Raises Litestar's 413 past the route's `request_max_body_size`."""
        return await super().body()

    def read_as(self, body: bytes) -> None:
        """What `body()` returns from now on (this request's body read in its charset, as UTF-8)."""
        self._decoded_body = body


def _decoded_request(request: Request) -> DecodedRequest:
    if not isinstance(request, DecodedRequest):
        raise TypeError(f"a body is read in its charset on a DecodedRequest: create the app with "
                        f"`request_class=DecodedRequest` (got {type(request).__name__})")
    return request


# fields one form may hold, counted before Litestar parses it (the login form takes `key` alone, and refuses any other
# field as unknown, but only once it has parsed them all): 110,000 empty ones in 0.85 MB took ~1 s on the event loop,
# no key needed to send them (measured: another tenant's reads went from p50 30 ms to 990 ms under four such clients)
MAX_FORM_FIELDS = 16


async def strict_form_body(request: Request) -> None:
    """A `before_request` hook: a route that takes a form (`POST /admin/login`) answers a 415 naming
    `body` when the body is of another type (JSON, multipart, text) or is JSON sent as a form
    (`curl -d '{...}'` without `-H`). Litestar reads any body of such a route as a form, so a JSON
    body became one unknown field named by the whole JSON text (the admin key in it included). The form
    is read in its `charset` as a JSON route's body is (`body_in_utf8`: a UTF-16 or UTF-32 one decoded,
    another charset a 415 naming `Content-Type`); it was read as UTF-8 whatever its charset."""
    data = request.route_handler.parsed_data_field
    kwarg = data.kwarg_definition if data is not None else None
    if kwarg is None or getattr(kwarg, "media_type", None) != RequestEncodingType.URL_ENCODED or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent, parameters = request.content_type
    decoded = _decoded_request(request)
    body = await decoded.sent_body()
    if sent in ("", FORM):
        body = body_in_utf8(parameters, body, accept=FORM)
        decoded.read_as(body)
    body_is_json = json_like(body)
    fields = ", ".join(f"`{name}`" for name in getattr(data.annotation, "__struct_fields__", ()))
    if sent in ("", FORM) and not body_is_json:
        if (given := body.count(b"&") + 1) > MAX_FORM_FIELDS:  # before Litestar parses them
            raise bad_request("body", f"holds {given} form fields; this route takes {fields} (at most {MAX_FORM_FIELDS} fields a form)")
        return
    what = "JSON" if body_is_json else sent
    raise unsupported_media_type("body", f"this route takes a form ({FORM}: {fields}), not {what}", FORM)


JSON = "application/json"
BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark: RFC 8259 8.1 lets a parser ignore it; Notepad writes one
# a JSON media type: application/json, or any type/subtype with the +json suffix (RFC 6839), a subtype named before it
_JSON_TYPE = re.compile(r"application/json|[a-z0-9][a-z0-9!#$&^_.-]*/[a-z0-9][a-z0-9!#$&^_.+-]*\+json")
# the charsets a JSON body is read in: RFC 8259's UTF-8 (US-ASCII is part of it), RFC 4627's UTF-16 and UTF-32
UTF8_CHARSETS = ("utf-8", "ascii")
OTHER_UNICODE_CHARSETS = ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be")


def json_like(body: bytes) -> bool:
    """Whether `body` looks like a JSON object or array: its first byte past white space (and a UTF-8
    BOM) opens one. How a form-typed body is told from a form (both helpers below ask it)."""
    return body.removeprefix(BOM).lstrip()[:1] in (b"{", b"[")


def refuse_non_json_type(sent: str, body: bytes) -> None:
    """A 415 naming `Content-Type` when a JSON route's body is declared as another type: `text/plain`
    (what `fetch` sends for a string body), a multipart body, JSON lines, `application/+json` (no
    subtype), ... Were any type read as JSON, `text/plain` JSON would be served and a form or text
    body be a 400 `invalid_json` that does not say the type is the problem. Taken: `application/json`
    (and any `type/subtype+json`), no `Content-Type` at all, and a form type whose body is JSON
    (`curl -d '{...}'` without `-H 'Content-Type: application/json'`: docs/api.md promises
    it); a form body that is a form (`a=1&b=2`) is refused. `sent` is the media type alone,
    lower-cased (`Request.content_type[0]`)."""
    if not sent or _JSON_TYPE.fullmatch(sent):
        return
    if sent == FORM and json_like(body):
        return
    problem = f"{sent} is not taken: this route takes a JSON body, sent as {JSON}"
    if sent == FORM:
        problem += " (curl -d sends a form type: add -H 'Content-Type: application/json')"
    raise unsupported_media_type("Content-Type", problem, JSON)


def refuse_form_upload(sent: str, accept: str) -> None:
    """A 415 naming `Content-Type` when a route that takes a file as its body (the import's JSON lines) is sent
    a multipart form instead (`curl -F file=@prefs.jsonl`, requests' and httpx's `files=`): read as the
    file, the form's boundary line was a 400 "`line 1`: malformed JSON" that did not say the form was the
    problem. `sent` is the media type alone, lower-cased; `accept` the 415's `Accept`."""
    if sent.startswith("multipart/"):
        raise unsupported_media_type("Content-Type", f"{sent} is not taken: send the file itself as the body "
                                                     "(curl --data-binary @FILE, requests' data=open(FILE, 'rb')), not a form", accept)


def takes_json_body(request: Request) -> bool:
    """Whether the request's route reads a JSON body (`strict_json_body` checks it): a declared `data` of JSON media type,
    on a method other than GET, HEAD and OPTIONS."""
    data = request.route_handler.parsed_data_field
    if data is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    kwarg = data.kwarg_definition
    return kwarg is None or getattr(kwarg, "media_type", RequestEncodingType.JSON) == RequestEncodingType.JSON


def refuse_json_route_type(request: Request) -> None:
    """A JSON route's request whose `Content-Type` alone refuses it (`text/plain`, multipart, ...: not JSON and not the
    form type, whose body is taken when it is JSON) is the 415 of `refuse_non_json_type` before its body is read. Read
    first, a client sending `Expect: 100-continue` would be sent the `100 Continue`, then its body
    read only to be refused (RFC 9110 10.1.1 lets the server answer the final status instead of the 100).
    Raises the 415 HTTPException naming `Content-Type`."""
    if not takes_json_body(request):
        return
    sent = request.content_type[0].strip().lower()
    if sent != FORM:  # a form-typed body is told from its text: it waits for the body
        refuse_non_json_type(sent, b"")


def json_body_in_utf8(content_type: tuple[str, dict[str, str]], body: bytes) -> bytes:
    """A JSON route's body as UTF-8 JSON, its type checked (`refuse_non_json_type`), then its charset
    (`body_in_utf8`); a form-typed body's charset first, since whether it is JSON is told from its text.
    `content_type` is Litestar's `Request.content_type` (the media type, its parameters).

    Raises an HTTPException: a 415 naming `Content-Type` for a type that is not JSON, and what
    `body_in_utf8` raises."""
    sent, parameters = content_type
    sent = sent.strip().lower()
    if sent == FORM:  # a form-typed body is taken when it is JSON, told once its charset is read (a UTF-16 `{` is not b"{")
        body = body_in_utf8(parameters, body)
        refuse_non_json_type(sent, body)
        return body
    refuse_non_json_type(sent, body)
    return body_in_utf8(parameters, body)


def body_in_utf8(parameters: dict[str, str], body: bytes, accept: str = JSON) -> bytes:
    """A JSON (or JSON lines) body as UTF-8, read in the `charset` of its Content-Type's `parameters`. A
    UTF-8 BOM before it is dropped (it was a 400 'invalid character'). A body whose `charset` is UTF-16 or
    UTF-32 is decoded as declared and returned in UTF-8 (it was read as UTF-8: a 400 for a rightly labelled
    body; Express's body-parser reads these too); a UTF-8 or US-ASCII one is returned as sent, its bytes
    checked where it is decoded (`strict_json_body` names the field holding a bad byte). The JSON routes
    (`json_body_in_utf8`), the import route (JSON lines) and the login form (`strict_form_body`) read a body so;
    `accept` is the 415's `Accept` (FORM: the errors speak of a form, the 400's code `invalid_value`).

    Raises an HTTPException: a 415 naming `Content-Type` for another charset (`charset=latin-1`,
    `windows-1252`, one Python does not know): JSON is UTF-8 (RFC 8259 8.1), and a Latin-1 decode never
    fails, so a UTF-8 body labelled Latin-1 (a client's default label) would be stored as `CafÃ©` unseen;
    the 415 makes the label's mistake visible once. A 400 naming `body` when the body is not valid in the
    UTF-16 or UTF-32 charset it declares."""
    declared = parameters.get("charset", "utf-8").strip()
    try:
        codec = codecs.lookup(declared).name
    except LookupError:
        codec = ""
    if codec in UTF8_CHARSETS:
        return body.removeprefix(BOM)
    shown = shorten(declared, 27, "...")
    form = accept == FORM  # the login form's words: it is no JSON (its 415 cites no RFC 8259)
    if codec not in OTHER_UNICODE_CHARSETS:
        rule = "this form is read as UTF-8 (the URL Standard's" if form else "JSON is read as UTF-8 (RFC 8259;"
        raise unsupported_media_type("Content-Type", f"charset={shown} is not taken: {rule} UTF-16 and UTF-32 are read "
                                                     f"too): send it as UTF-8, with charset=utf-8 or none", accept)
    try:
        text = body.decode(_byte_order(codec, body))
    except UnicodeDecodeError as exc:
        raise bad_request("body", f"is not valid {shown.upper()}, the charset its Content-Type declares "
                                  f"({exc.reason} at byte {exc.start})", code="invalid_value" if form else "invalid_json") from None
    return text.removeprefix("\ufeff").encode()


def _byte_order(codec: str, body: bytes) -> str:
    """The codec to read `body` with, declared `codec` (one of OTHER_UNICODE_CHARSETS). A `utf-16` or `utf-32`
    body without a BOM is read in the order its first character's zero bytes show (JSON's first character is
    ASCII: RFC 4627 section 3), else big-endian (RFC 2781 4.3); Python's codec would read it in the machine's
    order (little-endian), a big-endian body then a 400 for a body labelled rightly."""
    width = {"utf-16": 2, "utf-32": 4}.get(codec)
    if width is None or body.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE) if width == 4 else
                                        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return codec
    first = body[:width]
    little = len(first) == width and first[0] != 0 and not any(first[1:])
    return f"{codec}-{'le' if little else 'be'}"


async def read_json_body(request: Request) -> bytes:
    """The body of a request to a JSON route, checked and made UTF-8 (`json_body_in_utf8`); the request (a
    DecodedRequest, the apps' `request_class`) keeps the UTF-8 body, which Litestar's own decoding then reads.
    Raises what `json_body_in_utf8` does, Litestar's 413 past the body limit, and a TypeError for a request
    of another class."""
    decoded = _decoded_request(request)
    body = await decoded.sent_body()
    utf8 = json_body_in_utf8(request.content_type, body)
    decoded.read_as(utf8)
    return utf8


def lone_surrogate_refusal(body: bytes) -> HTTPException | None:
    """The 400 (`invalid_json`) naming the field of a JSON body's first lone UTF-16 surrogate escape
    (`"\\ud83d"`), when such escapes are all that is wrong with it; None otherwise."""
    if (lone := lone_surrogate_escape(body)) is None:
        return None
    offset, escape = lone
    field = _path_to_open_string(body[:offset]) or "body"
    return bad_request(field, lone_surrogate_problem(escape, offset + 1), code="invalid_json")


def _utf16_hint(body: bytes) -> str:
    """What to do with a body read as UTF-8 that looks UTF-16 or UTF-32 (`pluralign.data.io.utf16_like`, as an
    import's line is told: PowerShell 5's `>` and `Out-File` write UTF-16), said after the 400; "" otherwise."""
    if utf16_like(body):
        return ("; it looks UTF-16 or UTF-32 encoded (a byte order mark or NUL bytes between characters): send UTF-8, "
                "or declare its charset (`Content-Type: application/json; charset=utf-16`)")
    return ""


def undecodable_json(body: bytes, exc: msgspec.DecodeError | RecursionError, body_type: object = None) -> HTTPException:
    """The 400 (`invalid_json`) of a JSON route's `body` (UTF-8, `read_json_body`'s) that msgspec
    could not decode (`exc`, not a ValidationError: that is a field's): the body is empty (what to send), holds a
    lone surrogate escape (its field named), a `NaN` or infinity (its field named, and what the field of the route's
    `body_type` takes), is nested too deeply, or is not JSON (msgspec's words, and a hint when it looks UTF-16 or
    UTF-32 sent without its charset). The API service's JSON routes and the embeddings server
    (`service.embeddings.app`) answer these alike."""
    if isinstance(exc, RecursionError):
        return bad_request("body", "the JSON is nested too deeply", code="invalid_json")
    if not body.strip():  # `curl -X POST URL` alone: "Input data was truncated" would not say what to send
        return bad_request("body", "the request body is empty: send a JSON object (`{}` takes every optional field's "
                                   "default)", code="invalid_json")
    if (refusal := lone_surrogate_refusal(body)) is not None:  # msgspec says "truncated" or "surrogate pair", not where
        return refusal
    if (refusal := non_json_constant_refusal(body, str(exc), body_type)) is not None:  # msgspec: "invalid character (byte 93)"
        return refusal
    return bad_request("body", f"the request body is not valid JSON: {exc}{_utf16_hint(body)}", code="invalid_json")


# a body this long or longer has its repeated keys looked for off the event loop (`repeated_key`: ~50 MB/s, 1.3 ms)
LOOP_BYTES = 65_536
# a body this long or longer has the field of its fault named off the event loop (`_path_to_open_string`: ~1 MB/s,
# ~2 ms). At LOOP_BYTES, a body just under it would hold the loop 55-60 ms
SCAN_LOOP_BYTES = 2_048
T = TypeVar("T")


async def _scan_off_loop(body: bytes, scan: Callable[..., T], *args: object) -> T:
    """`scan(*args)`, on a thread for a `body` of SCAN_LOOP_BYTES or more."""
    if len(body) < SCAN_LOOP_BYTES:
        return scan(*args)
    return await anyio.to_thread.run_sync(scan, *args)


async def not_utf8_off_loop(body: bytes, problem: str) -> HTTPException:
    """The 400 naming the field whose string holds `body`'s first byte that is not UTF-8 (`problem`: where), worked out on
    a thread (`_utf8_field` scans the JSON before it in Python: 0.6 s for 1 MB on the loop)."""
    field = await _scan_off_loop(body, _utf8_field, body)
    return bad_request(field, f"is not valid UTF-8 ({problem})")


async def undecodable_json_off_loop(body: bytes, exc: msgspec.DecodeError | RecursionError, body_type: object = None) -> HTTPException:
    """`undecodable_json`, worked out on a thread for a body of SCAN_LOOP_BYTES or more: naming the field of a `NaN` or
    of a lone surrogate escape scans the JSON before it in Python (`_path_to_open_string`: 0.3-1 s for a 1 MB body of
    many short values), which on the event loop would keep every tenant's requests waiting."""
    return await _scan_off_loop(body, undecodable_json, body, exc, body_type)


_INVALID_AT = re.compile(r"invalid character \(byte (\d+)\)")
_NON_JSON_CONSTANTS = (b"NaN", b"Infinity", b"-Infinity")  # how Python's json.dumps writes a float NaN or infinity


def non_json_constant_refusal(body: bytes, problem: str, body_type: object = None) -> HTTPException | None:
    """The 400 (`invalid_json`) naming the field (`margin`, `responses[1]`) of a JSON body whose first fault,
    where msgspec stopped (`problem`: its words, "invalid character (byte N)"), is `NaN`, `Infinity` or
    `-Infinity`: what Python's `json.dumps` writes for a float that JSON cannot hold (aiohttp's `json=`, urllib with
    it), as an import's line names it (`pluralign.data.io`), and what the field of `body_type` takes (its choices:
    `_choices`; text: `_takes_text`; else a number); None otherwise. Its words fit the field, not `body` nor
    "send a finite number" of every field, also of one taking text, where a NaN is most often pandas' missing
    value, or of a choice of words (a feedback's `type`, a message's `role`)."""
    if (found := _INVALID_AT.search(problem)) is None:
        return None
    start = int(found.group(1))
    start -= body[start - 1:start] == b"-"  # msgspec stops past the sign of -Infinity
    word = next((w for w in _NON_JSON_CONSTANTS if body.startswith(w, start)), None)
    if word is None:
        return None
    field = _path_to_open_string(body[:start] + b'"') or "body"  # the value there, as if a string opened at it
    if choices := _choices(body_type, field):  # a Literal or a union's tag (`type`, `role`): words, not a number
        advice = f"this field takes one of {', '.join(f'`{c}`' for c in choices)}"
    elif _takes_text(body_type, field):
        advice = "this field takes text (pandas writes a missing value as NaN)"
    else:
        advice = "send a finite number"
    return bad_request(field, f"`{word.decode()}` is not JSON (Python's json.dumps writes a float NaN or infinity so): "
                              f"{advice} (or leave the field out where it is optional)", code="invalid_json")


def _takes_text(body_type: object, field: str) -> bool:
    """Whether the field at the dotted path `field` (`responses[1]`) of `body_type` takes a string (False when
    `body_type` is None or holds no such field)."""
    member = body_type
    for segment in [int(i) if i else name for i, name in _SEGMENT.findall(field)]:
        member = _member_type(member, segment)
    return member is not None and str in _options(member)


# objects and arrays one JSON body may open at least (an import's line: at most). A 1 MB body of `[]` opens 240,000, each a
# Python object made on the event loop, twice (our strict decode, then Litestar's): 100-300 ms of every tenant's requests
# waiting per body, where a body of this many takes a few ms
MAX_JSON_CONTAINERS = 10_000
# a chat message opens an object in 16 bytes at least (`{"role":"user"},`), a text part one in 26: a chat's body may open
# one per CONTAINER_BYTES of the route's body limit, so no chat of messages and parts under the limit reaches its cap (a cap of
# 10,000 in all would refuse a chat of 3,400 messages of text parts, legal with a remote generator and no `max_prompt_tokens`);
# a route takes this cap with `opt={CONTAINERS_BY_BODY_LIMIT: True}` (its lists unbounded but by the body limit)
CONTAINER_BYTES = 16
CONTAINERS_BY_BODY_LIMIT = "containers_by_body_limit"
PIECE_BYTES = 65_536  # of a body counted at a time (`containers_counted`), the event loop running other requests between


def _opened_by_piece(body: bytes) -> Iterator[int]:
    """The objects and arrays opened in each piece of PIECE_BYTES of the JSON text `body`: escaped backslashes
    and quotes taken out, each remaining `"` opens or closes a string, whose state carries from one piece to the next,
    as does an escape the piece's end cuts (a run of backslashes of odd length at its end: the next piece's first byte
    is the one escaped). A piece is not stretched a byte at a time, in Python, to the end of a run of backslashes
    crossing its end: a string of 880 KB of them would be one piece, ~55 ms of the loop's CPU."""
    inside = escaped = False
    for start in range(0, len(body), PIECE_BYTES):
        piece = body[start + escaped:start + PIECE_BYTES].replace(b"\\\\", b"")  # the escaped byte skipped
        escaped = piece.endswith(b"\\")  # what is left of a run is one backslash at most: here, escaping the next byte
        parts = piece.replace(b'\\"', b"").split(b'"')
        outside = b"".join(parts[1 if inside else 0::2])
        inside ^= len(parts) % 2 == 0  # an odd number of quotes in the piece
        yield outside.count(b"[") + outside.count(b"{")


def json_containers(body: bytes) -> int:
    """How many objects and arrays the JSON text `body` opens: its `[` and `{` outside strings. Byte operations
    only: ~2-20 ms a MB, and up to ~80 ms for a MB of 150,000 strings (all at once: `containers_counted` yields)."""
    return sum(_opened_by_piece(body))


def too_many_containers(body: bytes, limit: int = MAX_JSON_CONTAINERS) -> int | None:
    """The objects and arrays `body` opens when they are more than `limit`; None otherwise. Its
    brackets counted in all (~1 ms a MB) settle most bodies: only one holding more than that many looks past
    its strings (`json_containers`)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    opened = json_containers(body)
    return opened if opened > limit else None


def containers_cap(request: Request) -> int:
    """The most objects and arrays a JSON body of `request`'s route may open: MAX_JSON_CONTAINERS, or for a route
    opting in (CONTAINERS_BY_BODY_LIMIT: the chat's) one per CONTAINER_BYTES of its body limit (62,500 under the
    default 1 MB) where that is more. At the cap, the strict decode of junk arrays takes about what the densest legal
    chat's does (benchmarks/json_containers.py)."""
    handler = request.route_handler
    if not handler.opt.get(CONTAINERS_BY_BODY_LIMIT):
        return MAX_JSON_CONTAINERS
    return max(MAX_JSON_CONTAINERS, (handler.resolve_request_max_body_size() or 0) // CONTAINER_BYTES)


async def containers_counted(body: bytes, limit: int) -> int | None:
    """`too_many_containers` for a request body, the event loop running other requests between each PIECE_BYTES
    counted: a MB of bracket-filled strings held it 20-80 ms at once before (benchmarks/json_containers.py)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None
    opened = 0
    for piece in _opened_by_piece(body):
        opened += piece
        await asyncio.sleep(0)
    return opened if opened > limit else None


async def strict_json_body(request: Request) -> None:
    """A `before_request` hook: raises a 400 naming the field when the body does not decode strictly
    into the route's declared body type. Routes without a JSON body are left alone."""
    if not takes_json_body(request):
        return None
    data = request.route_handler.parsed_data_field
    body = await read_json_body(request)
    if (opened := await containers_counted(body, cap := containers_cap(request))) is not None:  # before any of them is made
        raise bad_request("body", f"opens {opened} JSON objects and arrays; a request may open at most {cap}")
    try:
        _decoder(data.annotation).decode(body)
    except msgspec.ValidationError as exc:
        field, problem = field_of(exc)
        if "[...]" in field:  # a dict's value: named by its key (the body read again: off the loop past SCAN_LOOP_BYTES)
            field = await _scan_off_loop(body, _dict_value_field, body, data.annotation, field)
        invalid = _INVALID.match(problem)
        choices = _choices(data.annotation, field) if invalid else ()
        if choices:  # msgspec's "Invalid enum value 'robot'" says nothing of what the field takes
            problem = one_of(choices, refused_value(problem), invalid["got"])
        # an unknown field keeps OpenAI's code for it (clients show `unknown_parameter`), and names the closest it has
        code = "unknown_parameter" if "unknown field" in problem else "invalid_value"
        if code == "unknown_parameter":  # another server's parameter (a chat's `top_k`) is said so: its closest misleads
            said = getattr(data.annotation, "unknown_problem", None)
            problem = (said(field, body) if said else None) or f"unknown field{closest_field(body, data.annotation, field)}"
        # where the body's type says more of a choice than its field's choices (a chat's content part, by its role)
        if invalid and (said := getattr(data.annotation, "choice_problem", None)) and (own := said(field, body, invalid["got"])):
            problem, code = own
        key = "a key: " if problem.startswith("a key: ") else ""  # msgspec's words left (`Expected `int`, got `str``) in ours
        raise bad_request(field, key + in_our_words(problem[len(key):]), code=code) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise await undecodable_json_off_loop(body, exc, data.annotation) from None
    except UnicodeDecodeError as exc:
        raise await not_utf8_off_loop(body, f"{exc.reason} at byte {exc.start} of the string") from None
    # Python's decoder reads ~50 MB/s: a large body's check leaves the event loop (1 MB: ~20 ms)
    if (field := repeated_key(body) if len(body) < LOOP_BYTES else await anyio.to_thread.run_sync(repeated_key, body)) is not None:
        raise bad_request(field, "given 2 times in one JSON object; give it once")
    return None
