"""GET/DELETE /v1/users/{user_id}, its preferences, export and import, and POST /v1/rewards/score."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from typing import Annotated, Literal
from urllib.parse import quote

import msgspec
from litestar import Request, delete, get, patch, post
from litestar.concurrency import sync_to_thread
from litestar.exceptions import HTTPException, NotFoundException, ServiceUnavailableException, TooManyRequestsException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import Response, Stream

from pluralign.data.record import Base, new_pref_id_problem, pref_id_climbs, pref_id_problem, time_unit
from pluralign.data.text import shorten
from pluralign.embed.remote import RemoteTextsRefused
from pluralign.files import DECODE_ERRORS
from pluralign.policy.rerank import ranked_by, rerank
from pluralign.store import StoredPreference
from pluralign.store.claims import Claim, claim_of, earlier_contents
from pluralign.store.failures import unavailable
from pluralign.store.retractions import TooManyPending
from pluralign.store.tables import PrefIdConflict
from pluralign.user import FEATURE_NAMES
from service.calibration.pools import read_pool
from service.deletions import forget_if_deleted_since
from service.encoders import refused_text
from service.errors import (
    KEY_REUSED,
    bad_request,
    error_response,
    error_responses,
    refuse_blank,
    shown,
    storage_response,
)
from service.feedback.services import IDEMPOTENCY_KEY, check_labels, one_idempotency_key, replay_of
from service.head import is_head
from service.ids import check_user_id, last_segment_sent, routed_to, user_header_lines
from service.nulls import NullMeansDefault
from service.requestid import remember
from service.runtime import ForgetIncomplete, Runtime
from service.scheduler import Busy, Stopping
from service.strict import MAX_JSON_CONTAINERS, body_in_utf8, did_you_mean, refuse_form_upload, too_many_containers
from service.users import exports, retractions, services
from service.users.journal import DeleteNotRecorded

log = logging.getLogger("pluralign.service")


class PreferencePage(msgspec.Struct):
    data: list[StoredPreference]
    total: int
    offset: int
    limit: int
    next_offset: int | None  # the next page's `offset`; null on the last page, and when paging by `after`
    # the next page's `after` (an opaque cursor: the last row's place); null on the last page
    next_after: str | None = None


_CURSOR = msgspec.json.Decoder(tuple[float | str, str])
# an infinite time, which an older release could store (JSON's 1e999) and JSON cannot write, in a cursor
_INFINITE = {"inf": math.inf, "-inf": -math.inf}


def page_cursor(row: StoredPreference) -> str:
    """The opaque `after` of the page that follows `row`: its sort key (created_at, pref_id), JSON, base64url; an
    infinite created_at (the store reads NaN as inf) as "inf" or "-inf": written as a number, it was null."""
    at = row.created_at if math.isfinite(row.created_at) else repr(row.created_at)
    return base64.urlsafe_b64encode(msgspec.json.encode((at, row.pref_id))).rstrip(b"=").decode()


def read_cursor(after: str) -> tuple[float, str]:
    """The (created_at, pref_id) an `after` cursor holds; a 400 naming `after` for one `page_cursor` did not write, and
    for one a version before rows44 wrote on a row stored in milli-, micro- or nanoseconds (its time as stored)."""
    try:
        created_at, pref_id = _CURSOR.decode(base64.urlsafe_b64decode(after + "=" * (-len(after) % 4)))
        created_at = _INFINITE.get(created_at, math.nan) if isinstance(created_at, str) else created_at
    except (ValueError, msgspec.DecodeError):  # binascii.Error is a ValueError
        created_at, pref_id = math.nan, ""
    if (unit := time_unit(created_at)) is not None:
        # such a cursor sorted after every row now that the pages order that time as its seconds: an empty last page,
        # the walk would end short without a word; nor can it be placed in that order (it may have
        # passed rows that sort after it now)
        raise bad_request("after", f"is a cursor an earlier version wrote (a time in {unit[1]}, which the pages now order as its "
                                   "seconds): walk the pages again from the first page (no `after`)")
    if math.isnan(created_at):
        raise bad_request("after", f"is not a cursor this service wrote (pass on a page's `next_after` as it is), got {shorten(repr(after), 64, '...')}")
    return created_at, pref_id


class Deleted(msgspec.Struct):
    user: str
    deleted: dict[str, int]
    warnings: list[str] = []  # what of the user could not be cleaned (an embedding cache): [] when all was


class ScoreRequest(Base):
    user: str
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    responses: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]], msgspec.Meta(min_length=1, max_length=32)]


class ScoreResponse(msgspec.Struct):
    user: str
    scores: list[float]
    best_index: int
    prior: bool


def _user(request: Request, user_id: str) -> tuple[Runtime, str, str]:
    """(runtime, tenant, the path's user id checked); a 400 naming `user_id`, or `X-Pluralign-User` when that header
    names another user (`routed_to`): every route under /v1/users/{user_id} calls it before anything else is done."""
    user_id = check_user_id(user_id, "user_id")
    routed_to(user_header_lines(request), user_id, "user_id")
    return request.app.state.runtime, request.user.tenant, user_id


@get("/v1/users/{user_id:str}", sync_to_thread=True, responses=error_responses(404, 429, 503, 507), summary="A user's profile")
def get_user(request: Request, user_id: FromPath[str]) -> services.UserProfile:
    rt, tenant, user_id = _user(request, user_id)
    found = services.profile(rt, tenant, user_id)
    if found is None:
        raise NotFoundException(f"no user {user_id!r} in this tenant")
    return found


@get("/v1/users/{user_id:str}/preferences", sync_to_thread=True, responses=error_responses(404, 429, 503, 507), summary="A user's preferences, oldest first")
def list_preferences(
    request: Request,
    user_id: FromPath[str],
    offset: Annotated[int, Parameter(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    after: Annotated[str | None, Parameter(max_length=512)] = None,
) -> PreferencePage:
    """A page of the user's comparisons, oldest first (then by pref_id). 404 when nothing at all is held about
    the user, as the profile and the export answer (a known user without comparisons yet: an empty page).

    Page by `after`: each page's `next_after` (an opaque cursor, null on the last page) passed as the next
    request's `after` gives the rows after that page's last one, so rows added or deleted meanwhile never make
    a walk skip or repeat one (by `offset`, a row added before the offset shifts every later one). A cursor
    this service did not write is a 400 naming `after`; `after` with an `offset` a 400 naming `offset`."""
    if after is not None and offset:
        raise bad_request("offset", "cannot be combined with `after` (a cursor already says where the page begins)")
    rt, tenant, user_id = _user(request, user_id)
    key = None if after is None else read_cursor(after)
    services.flush_for_read(rt, tenant, user_id)
    rows, total = rt.store.preferences_for(tenant, user_id, offset, limit + 1, after=key)  # one more: is there a next page?
    more, rows = len(rows) > limit, rows[:limit]
    if total == 0 and not services.anything_held(rt, tenant, user_id):
        raise NotFoundException(f"no user {user_id!r} in this tenant")
    next_offset = offset + len(rows) if after is None and more else None
    return PreferencePage(data=rows, total=total, offset=offset, limit=limit, next_offset=next_offset,
                          next_after=page_cursor(rows[-1]) if more else None)


@get("/v1/users/{user_id:str}/export", sync_to_thread=True, responses=error_responses(404, 429, 503, 507), summary="Everything held about a user, as JSONL",
     middleware=[exports.export_guard])
def export_user(
    request: Request, user_id: FromPath[str], export_format: Annotated[Literal["all", "preferences"], QueryParameter(name="format")] = "all"
) -> Stream:
    """`format=all`: user, preference and interaction lines, each tagged by `type`. `format=preferences`:
    the user's comparisons as a preference file (TRL columns), which POST .../import reads back.

    A GET takes one of the tenant's `max_exports_per_tenant` (and everyone's `max_exports`) slots until its answer
    ends, is cut or its client hangs up: past them 429 `too_many_exports` with Retry-After, before anything is read.
    A HEAD reads counts and at most a few rows, sends no body and takes no slot. A client that takes no piece of
    the body for `export_send_timeout_s` seconds has its answer cut (`service.users.exports`)."""
    rt, tenant, user_id = _user(request, user_id)
    name = f"{user_id}.jsonl" if export_format == "all" else f"{user_id}-preferences.jsonl"  # saving both keeps both
    headers = {"Content-Disposition": attachment(name)}
    if is_head(request):  # the GET's status (is anything held about them?) without reading every row
        services.flush_for_read(rt, tenant, user_id)  # as the GET: a large import's backlog is a 503 at once
        has_lines = services.export_head(rt, tenant, user_id, export_format)
        if has_lines is None:
            raise NotFoundException(f"no user {user_id!r} in this tenant")
        # one empty piece where the GET has a first one, none where its body is empty, so that the answer's headers are
        # the GET's (RFC 9110 9.3.2): a stream is gzipped from its first piece on for a client that accepts it
        # (`Content-Encoding`, `Vary`), an empty one is not; the body is dropped
        pieces = (b"",) if has_lines else ()
        return Stream(iter(pieces), media_type="application/x-ndjson", headers=headers)
    try:  # before any read: the slot is given back by `export_guard` as the answer ends, whatever ends it
        exports.hold(request.scope, rt.exports.take(tenant))
    except exports.TooManyExports as exc:
        return error_response(429, f"too many exports: {exc}; retry after {exports.EXPORT_RETRY_AFTER} seconds",
                              code="too_many_exports", headers={"Retry-After": str(exports.EXPORT_RETRY_AFTER)})
    # read as it is sent, from one version of each table, a batch of rows at a time (`services.export_lines`): the
    # first line is read here, so a failure before it is the 503 it was (and a DELETE then is the 404 it is after);
    # a later one cuts the connection (the chunked body never ends), never a 200 that looks complete
    lines, first = services.export_started(rt, tenant, user_id, export_format)
    exports.sending(request.scope, lines)
    # a known user may have no comparisons to export yet (or only rows the preference file leaves out):
    # unknown is when nothing at all is held about them, as for HEAD
    if first is None and not services.anything_held(rt, tenant, user_id):
        raise NotFoundException(f"no user {user_id!r} in this tenant")
    return Stream(in_chunks(() if first is None else itertools.chain((first,), lines)), media_type="application/x-ndjson", headers=headers)


# what `filename` keeps of a file name: characters every system takes in one (Windows refuses : < > " / \\ | ? * and
# control characters; ':' is in user ids); the rest becomes `_`
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._@+\-]")
# RFC 8187 attr-char beyond letters, digits and `-._~` (which `quote` never escapes)
ATTR_CHARS = "!#$&+^`|"
# Windows' device names: a file name whose part before its first '.' is one names the device, whatever its extension
# (`con.jsonl` is the console; Microsoft's "Naming Files, Paths, and Namespaces")
DEVICE_NAME = re.compile(r"(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\.|$)", re.IGNORECASE)


def attachment(name: str) -> str:
    """The `Content-Disposition` of a download saved as `name` (RFC 6266): `filename` a name any system takes (each
    character past letters, digits and `._@+-` an `_`), and, where that differs, `filename*` the original, UTF-8,
    percent-encoded (RFC 8187), which clients that read it (browsers, `email.message`) prefer. The user id as it
    is would not do: ':' (`org:acme:ann`) names no file on Windows, and a download there would fail.
    A name that is safe already keeps the header it had: `attachment; filename="<name>"`. One that begins with a
    Windows device name (`con.jsonl`, `COM1.jsonl`) is saved as `_con.jsonl` (kept, it would have
    Windows open the device, not a file)."""
    safe = SAFE_FILENAME.sub("_", name)
    if DEVICE_NAME.match(safe):
        safe = "_" + safe
    if safe == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{safe}\"; filename*=UTF-8''{quote(name, safe=ATTR_CHARS)}"


EXPORT_CHUNK_BYTES = 64 * 1024


def in_chunks(lines: Iterable[bytes], size: int = EXPORT_CHUNK_BYTES) -> Iterator[bytes]:
    """`lines` joined into pieces of about `size` bytes (whole pieces as read), each one body message: a line a
    message passed 50,000 messages through every middleware for a 50k-row export, and a compressed
    answer flushed its compressor after every line."""
    piece: list[bytes] = []
    held = 0
    for line in lines:
        piece.append(line)
        held += len(line)
        if held >= size:
            yield b"".join(piece)
            piece, held = [], 0
    if piece:
        yield b"".join(piece)


class Imported(msgspec.Struct):
    user: str
    stored: list[str]  # pref_ids written (durable before this reply)
    # pref_ids of rows the user held already, with the same content (a file imported again): not stored again
    already_stored: list[str] = []


@post("/v1/users/{user_id:str}/import", status_code=201, responses=error_responses(409, 422, 429, 503, 507, why={
    409: "`pref_id_conflict`: a row's `pref_id` is held (or claimed through another replica) for this user with other "
         "content, `error.param` naming its line (`line N.pref_id`); nothing of the body stored: give the row a new id or none",
    422: KEY_REUSED}), summary="Import a user's comparisons (a preference file, JSONL)",
      response_description="Acknowledged once on disk: `stored` lists the new rows' ids, `already_stored` those the user held already")
async def import_preferences(
    request: Request,
    user_id: FromPath[str],
    idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=255)] = None,
) -> Response[Imported]:
    """The body is JSON lines in any TRL preference form (what `GET .../export?format=preferences`
    writes, or a TRL dataset); rows without `user_id` are this user's, rows naming another are a
    400. Stored like comparison feedback: durable on reply, the user's weights refit behind it.

    Send `Idempotency-Key` (per tenant and user, as for feedback) to retry safely: a body already
    stored under the key stores nothing and answers 201 with the first receipt and
    `Idempotent-Replayed: true` (`pluralign data import` sends one per chunk, from its content). The key
    names the rows without a `pref_id`; rows carrying one are idempotent by those ids (a retry of a body
    holding any: 201, each id in `already_stored`, not a replay)."""
    one_idempotency_key(request)
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise bad_request("Idempotency-Key", "must be 1-255 printable ASCII characters without spaces")
    rt, tenant, user_id = _user(request, user_id)
    refuse_form_upload(request.content_type[0].strip().lower(), accept="application/x-ndjson")
    body = body_in_utf8(request.content_type[1], await request.body(), accept="application/x-ndjson")  # its charset, as a JSON route's
    # off the event loop (a 1 MB body is ~8,000 lines, 20-40 ms of Python on 2 cores: every tenant's
    # requests would wait it out), and one of the tenant's imports at a time (`Runtime.import_lock`)
    async with rt.import_lock(tenant):
        records, lines, climbing = await sync_to_thread(_read_import, rt, user_id, body)
    if idempotency_key is None:
        return Response(await _store_imported(rt, tenant, user_id, records, lines, climbing=climbing), status_code=201)
    # the key names the rows that carry no pref_id of their own (the others are stored under theirs, which makes
    # them idempotent without it): checking the key's ids for every row found fewer than rows on a retry (422)
    keyed = [r for r, held in zip(records, climbing, strict=True) if r.pref_id is None and held is None]
    if not keyed:
        return Response(await _store_imported(rt, tenant, user_id, records, lines, climbing=climbing), status_code=201)
    async with rt.idempotency_lock(tenant, idempotency_key):  # two copies in flight: the second waits, then finds the first
        as_stored = lambda ids: (services.import_rows(tenant, user_id, keyed, ids),  # times the file gave none of: stamped
                                 frozenset(i for i, r in zip(ids, keyed, strict=True) if r.created_at is None))
        ids, found = await sync_to_thread(replay_of, rt, tenant, user_id, idempotency_key, len(keyed), as_stored)
        if found and len(keyed) == len(records):
            rt.metrics.inc("pluralign_feedback_replayed_total", help="feedback retries answered from what was stored")
            return Response(Imported(user=user_id, stored=found), status_code=201, headers={"Idempotent-Replayed": "true"})
        # rows carrying ids beside them: each looked up (`new_rows`), so a body that differs in those is not answered
        # from the first one's receipt (its keyed rows are found held: `already_stored`)
        given = iter(ids)
        ids = [r.pref_id or held or next(given) for r, held in zip(records, climbing, strict=True)]
        return Response(await _store_imported(rt, tenant, user_id, records, lines, ids, climbing), status_code=201)


class _GivenId(msgspec.Struct):
    pref_id: object = None


def _climbing_ids_apart(lines: list[bytes]) -> tuple[list[bytes], dict[int, str]]:
    """(the lines, each giving a well-formed `pref_id` a URL client resolves as a dot segment written without it; those
    ids by line number, from 1). An older release stored rows under such ids (`..`) and the export writes them as they
    are: the import takes one only for a row the user holds under it with the same content (`_store_imported`), which
    no `Preference` may carry (`new_pref_id_problem`). Every other line as it is: the reader says what is wrong with it."""
    found: dict[int, str] = {}
    out = list(lines)
    for n, raw in enumerate(lines, start=1):
        if b"pref_id" not in raw:
            continue
        try:
            given = _GIVEN_ID.decode(raw).pref_id
        except DECODE_ERRORS:  # not an object, or malformed: the reader names it
            continue
        if isinstance(given, str) and pref_id_problem(given) is None and pref_id_climbs(given):
            row = msgspec.json.decode(raw)
            del row["pref_id"]
            out[n - 1], found[n] = msgspec.json.encode(row), given
    return out, found


_GIVEN_ID = msgspec.json.Decoder(_GivenId)


def _refuse_new_climbing(stored: list, climbing: list[str | None], lines: list[int]) -> None:
    """The 400 naming `line N.pref_id` of the first row giving an id a URL client resolves as a dot segment
    (`_climbing_ids_apart`) that the user does not hold (`stored`: the import's new rows): no new row may carry one."""
    new = {row.pref_id for row in stored}
    for held, line in zip(climbing, lines, strict=True):
        if held is not None and held in new:
            raise bad_request(f"line {line}.pref_id", f"{new_pref_id_problem(held)}; an import takes such an id only for a row "
                              "this user holds under it with the same content (an older release's, as the export writes it)")


def _read_import(rt: Runtime, user_id: str, body: bytes) -> tuple[list, list[int], list[str | None]]:
    """The preference records of an import's body, each one's line, and the id each gives that a URL client resolves
    as a dot segment (None for the others: `_climbing_ids_apart`; its record carries no `pref_id`) (JSON lines, rows
    without `user_id` the user's). Raises a
    400 naming `body`, or `line N` and its field, for a body without rows, a line that is not a preference
    row, a row naming another user, labels past the size limits (`check_labels`), or one of TRL's extra columns,
    which the row keeps, past theirs (`pluralign.data.io.extra_column_problem`: `line N.<column>`). Run in a thread."""
    from pluralign.data.io import extra_column_problem, json_lines, read_preference_lines
    from pluralign.data.record import PreferenceError

    lines = json_lines(body)  # as the `pluralign` commands split a file: an error names the same line
    if body.count(b"[") + body.count(b"{") > MAX_JSON_CONTAINERS:  # a line of 240,000 `[]` took ~200 ms to decode, holding the GIL
        for n, raw in enumerate(lines, start=1):
            if (opened := too_many_containers(raw)) is not None:
                raise bad_request(f"line {n}", f"opens {opened} JSON objects and arrays; a line may open at most {MAX_JSON_CONTAINERS}")
    numbers = [n for n, raw in enumerate(lines, start=1) if raw.strip()]  # each record's line (blank lines are skipped)
    if not numbers:
        raise bad_request("body", "holds no preference rows: send JSON lines, one comparison a line")
    lines, climbing = _climbing_ids_apart(lines)
    try:
        records, _ = read_preference_lines(lines, default_user=user_id)
    except PreferenceError as exc:
        malformed = (exc.field is None and exc.problem.startswith("malformed JSON")) or "surrogate escape" in exc.problem
        code = "invalid_json" if malformed else "invalid_value"
        raise bad_request(f"line {exc.line}" + (f".{exc.field}" if exc.field else ""), exc.problem, code) from None
    for i, record in zip(numbers, records, strict=True):
        if record.user_id != user_id:
            raise bad_request(f"line {i}.user_id", f"names user {shown(record.user_id)}; this import is for {user_id!r}")
        if record.source is not None or record.attributes:  # most rows have no labels to check
            check_labels(rt, record.source, record.attributes, where=f"line {i}.")
        if record.trl is not None and record.trl.extra and (over := extra_column_problem(record.trl.extra)) is not None:
            raise bad_request(f"line {i}.{over[0]}", over[1])
    return records, numbers, [climbing.get(n) for n in numbers]


async def _store_imported(rt: Runtime, tenant: str, user_id: str, records: list, lines: list[int], ids: list[str] | None = None,
                          climbing: list[str | None] | None = None) -> Imported:
    """Stores the rows of an import (`lines`: each record's line in the body). A row under a `pref_id` the user
    holds with the same content is not stored again (`already_stored`); with other content the import is a 409
    naming `line N.pref_id` (code `pref_id_conflict`), nothing of it stored (`services.new_rows`). `climbing`: each
    record's id that a URL client resolves as a dot segment (`_read_import`), taken only for a row held so (a 400
    naming its line's `pref_id` otherwise, nothing stored)."""
    await _finish_unfinished_delete(rt, tenant, user_id)
    climbing = climbing if climbing is not None and any(climbing) else None
    if climbing is not None and ids is None:
        ids = [held or uuid.uuid4().hex for held in climbing]
    rows = await sync_to_thread(services.import_rows, tenant, user_id, records, ids)  # 8,000 rows: tens of ms
    if climbing is not None:  # an exported row comes back as it was stored, its source too (as one carrying its id)
        rows = [msgspec.structs.replace(row, source=r.source) if held else row for row, r, held in zip(rows, records, climbing, strict=True)]
    # the check of the ids and their append to the log under one hold of the tenant's import lock: two imports
    # of one new id with other content each passed the check before either was logged, both were acknowledged,
    # and the mover dropped the second's whole request (logged only)
    async with rt.import_lock(tenant):
        try:
            stamped = frozenset(row.pref_id for row, r in zip(rows, records, strict=True) if r.created_at is None)  # times given now
            stored, held = await sync_to_thread(services.new_rows, rt, tenant, user_id, rows, stamped)
        except PrefIdConflict as exc:
            field = f"line {lines[exc.index]}.pref_id"
            if exc.earlier is not None:
                problem = f"{exc.pref_id!r} is also line {lines[exc.earlier]}'s, whose {_field_words(exc.field)} differs (a pref_id names one preference)"
            else:
                problem = (f"{exc.pref_id!r} is already stored for this user with another {_field_words(exc.field)} "
                           "(a pref_id names one preference: give this row a new id, or none)")
            raise _pref_id_conflict(field, problem) from None
        if climbing is not None:
            _refuse_new_climbing(stored, climbing, lines)
        if stored:
            remember([s.pref_id for s in stored])  # their refit logs this request's id (service.requestid)
        await sync_to_thread(_claim_and_log, rt, tenant, user_id, rows, stored, held, records, lines, stamped)
    if stored:
        rt.metrics.inc("pluralign_feedback_rows_total", len(stored), help="preference rows written", kind="import")
    return Imported(user=user_id, stored=[s.pref_id for s in stored], already_stored=held)


def _claim_and_log(rt: Runtime, tenant: str, user_id: str, rows: list, stored: list, held: list[str], records: list,
                   lines: list[int], stamped: frozenset[str]) -> None:
    """An import's last steps, once its `rows` are checked (`stored` the new ones, `held` the ids of those the user
    holds): with replicas each id the file gave is claimed on the store, but those of rows held in the table
    (`_claim_ids`: another replica's import of it with other content, acknowledged and not yet moved, is in no table
    or log this replica reads), the `held` rows count as received again, and the new rows go to the feedback log.
    With claims, all under the user's lock: a DELETE of the user, which removes their claims with their rows, runs
    wholly before or after (one between the claims and the log append would remove the claims, the
    rows be logged and acknowledged, and another replica then acknowledge their ids with other content). Then, the
    lock let go and before the answer, the rows and claims another replica's DELETE applied here meanwhile took are
    forgotten (`forget_if_deleted_since`: the store's maintenance turn comes before a user's lock, `service.runtime`).
    With claims the rows' arrival time is taken under that lock, and their claims and their copies in the log carry
    it alike: were the claims to carry the request's arrival and the log its later stamp (a new row's at
    its append, a held row's logged again at that step), a DELETE on another replica begun between the two would remove
    the claims and keep the rows (the log's copies, received after it), so the ids would take other content there.
    A refusal or failure gives the claims back. Raises the 409 and 503 of `_claim_ids`, a 503 when held rows
    were deleted meanwhile, and TenantBacklog (a 503 `feedback_backlog`) past the tenant's bound on waiting rows. Run in a thread, under the tenant's import lock."""
    # TenantBacklog (a 503) before any claim is made or any held row received again: nothing half done. The held rows
    # still waiting in the log count too, each logged again as received now (`received_again`): counting only
    # new rows, the same file sent again and again while its rows waited would log a copy of them
    # all each time, past any bound
    if adding := len(stored) + services.held_in_log(rt, tenant, user_id, held):
        rt.ingest.log.check_room(tenant, adding, stored)  # their size too: one refused for it after a held row was logged again
    with rt.user_lock(tenant, user_id) if rt.store.claims is not None else contextlib.nullcontext():
        arrived = None
        if rt.store.claims is not None:  # one time for the claims and the log (a DELETE here waits for this lock)
            arrived = time.time()
            fresh = {id(r): msgspec.structs.replace(r, received_at=arrived) for r in rows}
            rows, stored = [fresh[id(r)] for r in rows], [fresh[id(r)] for r in stored]
        claimed, moved = _claim_ids(rt, tenant, user_id, rows, stored, records, lines, stamped) if stored or held else ({}, {})
        try:
            if held:  # sent again: received again (a DELETE begun before, finished later on any replica, keeps them)
                try:
                    services.received_again(rt, tenant, user_id, held, received_at=arrived)
                except services.HeldRowsGone:
                    raise ServiceUnavailableException(detail="rows of this import that the user held were deleted while it was "
                                                      "stored (a DELETE of the user): nothing was imported; send the import again",
                                                      headers={"Retry-After": "1"}) from None
            if stored:
                rt.ingest.submit(stored, received_at=arrived)
        except BaseException:  # refused or failed: not acknowledged
            if claimed or moved:
                rt.store.claims.release(tenant, user_id, claimed, moved)
            raise
    # another replica's DELETE begun after `arrived`, applied here meanwhile, takes them too: after the user's lock is let
    # go, since its store step takes the store's maintenance turn, which a DELETE here takes before the user's lock
    # (under it, an import, such a record and a local DELETE of the user at once would wait for each other)
    if arrived is not None:
        forget_if_deleted_since(rt, tenant, user_id, arrived)


def _claim_ids(rt: Runtime, tenant: str, user_id: str, rows: list, stored: list, records: list, lines: list[int],
               stamped: frozenset[str]) -> tuple[dict[str, Claim], dict[str, tuple[Claim, Claim]]]:
    """Claim on the store (`pluralign.store.claims`, with replicas only) the ids of `rows` (an import's rows, `stored`
    the new ones) that its file gave, but those of rows held in the table (their row is there: the mover removes
    a claim once its row is, and a claim made again for them nobody would remove). A held row's claim takes its later time (a DELETE begun before keeps it, as it keeps the row); one found with
    other content refuses only a new row. Returns (the claims made now, those moved on: `PrefIdClaims.claim`'s
    `moved`), for `release` on a later refusal. An id claimed afresh is then looked for in the table's newest version
    (`Store.check_newest`): another replica's row of it may have been committed, and its claim removed, after
    this import's check of the table (a cached history). Raises a 409 naming `line N.pref_id` (code `pref_id_conflict`)
    when another import claimed one with other content (through another replica: it may not have reached the
    table yet, or never will, its replica killed before it answered) or the table's newest version holds it with other
    content, and a 503 with Retry-After when the claims cannot be written (the table's StoreUnavailable when it cannot
    be read); nothing claimed stays either way. Run in a thread."""
    claims = rt.store.claims
    if claims is None:
        return {}, {}
    given = {r.pref_id for r in records if r.pref_id is not None}
    new = {r.pref_id for r in stored}
    # ids the file gave that are not new are held: in the table (not claimed) or in this replica's log (claimed: their
    # time moves on). Looked for whenever the file gave ids that are not new: new rows
    # counted against ids would count rows without an id too, and a held row sent beside new rows keep its claim's first time
    logged = {r.pref_id for e in rt.ingest.log.pending_for(tenant, user_id) for r in e.rows} if given - new else set()
    wanted = {row.pref_id: claim_of(row, row.pref_id in stamped) for row in rows
              if row.pref_id in given and (row.pref_id in new or row.pref_id in logged)}
    if not wanted:
        return {}, {}
    moved: dict[str, tuple[Claim, Claim]] = {}
    try:
        made, taken = claims.claim(tenant, user_id, wanted, moved, _earlier_contents(rows, wanted))
    except Exception as exc:  # an object store down or refusing the keys, a full disk
        log.error("pref_id claims of an import of tenant %s could not be written: %s", tenant, exc)
        raise ServiceUnavailableException(detail="the store's claims on this import's pref_ids could not be written: "
                                          "nothing was imported; send the import again", headers={"Retry-After": "5"}) from None
    made = {pref_id: wanted[pref_id] for pref_id in made}
    taken = {pref_id: claim for pref_id, claim in taken.items() if pref_id in new}
    try:
        if taken:
            raise _claimed_elsewhere(records, lines, taken)
        _refuse_if_stored_otherwise(rt, [r for r in stored if r.pref_id in made], records, lines, stamped)
    except BaseException:
        claims.release(tenant, user_id, made, moved)
        raise
    return made, moved


def _earlier_contents(rows: list, wanted: Mapping[str, Claim]) -> dict[str, frozenset[str]]:
    """{id: the contents earlier releases' claims give its row} of the rows of `wanted` (`earlier_contents`), with the
    TRL extra columns of every row of the import (a `datasets` rewrite gives each row all of them, null where absent)."""
    columns = sorted({name for r in rows if r.trl is not None for name in r.trl.extra})
    return {r.pref_id: earlier_contents(r, columns) for r in rows if r.pref_id in wanted}


def _claimed_elsewhere(records: list, lines: list[int], taken: Mapping[str, Claim]) -> HTTPException:
    """The 409 of an import whose ids in `taken` another import claimed with other content: names the first one's line."""
    line = min(lines[i] for i, r in enumerate(records) if r.pref_id in taken)
    pref_id = next(r.pref_id for r, n in zip(records, lines, strict=True) if n == line)
    # the claim says nothing of whether its row will come: another replica's import, acknowledged and not yet
    # moved, or one whose replica was killed before it answered (a claim with no row: kept until a DELETE)
    problem = (f"{pref_id!r} is claimed for this user with other content, by an import through another replica that "
               "is not in the store yet, or by one that was never answered (its replica stopped first); a pref_id "
               "names one preference: give this row a new id (or none), or send the same content that import had; "
               "a DELETE of the user frees the ids it claimed")
    return _pref_id_conflict(f"line {line}.pref_id", problem)


def _refuse_if_stored_otherwise(rt: Runtime, claimed: list, records: list, lines: list[int], stamped: frozenset[str]) -> None:
    """Raises the 409 of `_store_imported` naming the first row of `claimed` (new rows whose ids this import claimed
    afresh) that the table's newest version holds with other content (`Store.check_newest`; a table that cannot
    be read raises its StoreUnavailable, answered as the import's own check's, `services.new_rows`)."""
    try:
        rt.store.check_newest(claimed, untimed=stamped)
    except PrefIdConflict as exc:
        line = min(lines[i] for i, r in enumerate(records) if r.pref_id == exc.pref_id)
        problem = (f"{exc.pref_id!r} is already stored for this user with another {_field_words(exc.field)}, through another replica "
                   "(a pref_id names one preference: give this row a new id, or none)")
        raise _pref_id_conflict(f"line {line}.pref_id", problem) from None


def _field_words(field: str) -> str:
    """A field in which a row differs from the one held under its `pref_id`, as a file's author knows it: `trl`, the
    stored TRL form, is the form the row's TRL columns came in."""
    if field.startswith("trl."):  # the row's TRL form is the same but for this column's value (`pluralign.data.io.trl_difference`)
        return f"`{field.removeprefix('trl.')}` (one of TRL's columns)"
    if field != "trl":
        return f"`{field}`"
    return ("form of its TRL columns (`trl`: `prompt`, `chosen` and `rejected` as text or as message lists, with or without a "
            "`prompt` column, and TRL's other columns; a conversation an older version stored with a message role imports "
            "now refuse is held as its text, as its export writes it)")


def _pref_id_conflict(field: str, problem: str) -> HTTPException:
    """The 409 of an import's row under a `pref_id` held (or claimed, or given by an earlier line) with other
    content: `field` names it (`line N.pref_id`), `problem` says why, code `pref_id_conflict`."""
    return HTTPException(status_code=409, detail=f"`{field}`: {problem}",
                         extra=[{"key": field, "message": problem, "code": "pref_id_conflict"}])


async def _finish_unfinished_delete(rt: Runtime, tenant: str, user_id: str) -> None:
    """A DELETE of the user stopped part way is finished first, on the DELETEs' threads, and the import
    stored after it: what the user sees once the import is acknowledged is what they imported, never
    rows the DELETE was to remove beside it. (Finished later, the DELETE would keep the import too: it
    tells what came after it began by when the rows were received, `StoredPreference.received`.)
    429 or 503 with Retry-After when it cannot be finished now (nothing of the import stored)."""
    entry = rt.delete_journal.unfinished(tenant, user_id)
    if entry is None:
        return
    try:
        future = rt.deletes.submit(tenant, partial(services.delete, rt, tenant, user_id, entry))
        await asyncio.shield(asyncio.wrap_future(future))
    except Busy as exc:
        raise TooManyRequestsException(detail=f"deletes are busy: {exc}", headers={"Retry-After": str(exc.retry_after)}) from None
    except Exception as exc:  # Stopping, the lease's TimeoutError, a population file it could not rewrite (ForgetIncomplete)
        log.error("an import waits for the unfinished DELETE of a user of tenant %s: %s", tenant, exc)
        raise ServiceUnavailableException(detail="a DELETE of this user begun earlier is still being finished: nothing "
                                          "was imported; send the import again", headers={"Retry-After": str(NOT_RECORDED_RETRY_AFTER)}) from None


NOT_RECORDED_RETRY_AFTER = 30  # seconds: `Retry-After` of a DELETE refused because its journal entry could not be written
STOPPING_RETRY_AFTER = 5  # seconds: `Retry-After` of a DELETE refused as the service stops (another replica, or this one restarted)


def _delete_storage_failure(request: Request, rt: Runtime, tenant: str, user_id: str, exc: OSError) -> Response:
    """The 507 or 503 of a DELETE that met stored data it cannot read or write, saying whether the
    DELETE began (recorded: the journal's pass finishes it) or not (send it again); `exc` re-raised
    when it is no storage failure."""
    failure = unavailable(exc, "the data folder", str(rt.settings.data_path), "written")
    if failure is None:
        raise exc
    if failure is not exc:  # a file the service writes itself
        rt.store.problems.failed(failure, watched=False)
    if rt.delete_journal.unfinished(tenant, user_id) is not None:  # begun: the journal's pass finishes it
        done = "the DELETE is recorded and the service finishes it by itself once the store is fixed (sending it again is safe)"
    else:  # it never began (the store's turn failed first): nothing of the user was deleted
        done = "nothing of the user was deleted; send the DELETE again later"
    return storage_response(request, failure, done)


async def _answer_after_the_slack(rt: Runtime, began: list[float]) -> None:
    """With replicas, a DELETE is answered no sooner than twice `store_sync_ms` after it began. Another
    replica takes the user's rows it received before `began_at` + `store_sync_ms` (the slack for a clock
    ahead: `pluralign.store.deletions.Forget`), so a DELETE answered sooner (one whose user had few rows)
    lost feedback the user sent through another replica right after its 200; the second `store_sync_ms`
    keeps that true for a clock behind by as much (deploy/README.md, "Replica clocks must agree")."""
    if rt.deletion_sweep is not None and began and rt.settings.sync_seconds:
        await asyncio.sleep(max(0.0, began[0] + 2 * rt.settings.sync_seconds - time.time()))


@delete("/v1/users/{user_id:str}", status_code=200, responses=error_responses(404, 429, 503, 507), summary="Delete every trace of a user")
async def delete_user(request: Request, user_id: FromPath[str]) -> Deleted:
    """Runs on the DELETEs' own threads, one of a tenant at a time, tenants in turn (`rt.deletes`): waiting for it holds no request
    thread, so one tenant's DELETEs waiting for the store's lease never stall another tenant's
    requests. 429 with Retry-After past `tenant_deletes` of the tenant's (or `delete_queue` of
    everyone's) waiting. 503 with Retry-After when, with replicas, the store's maintenance lease stays with another
    replica past its wait (`pluralign.store.lease`): their rows are still in the store; the DELETE sent again finishes
(one that lost the lease part way is also finished by the service's journal, `service.users.journal`).
    A DELETE once queued runs even if its client goes away. 503 with Retry-After when the service is told to
    stop (SIGTERM) while the DELETE waits for its turn (`service.app.stop_taking_deletes`): it never began.
    503 (`delete_not_recorded`) with Retry-After when its journal entry cannot be written (a read-only or
    full disk): it never began either. 503 (`clocks_disagree`) with Retry-After when, with replicas, their
    clocks were seen further apart than `store_sync_ms`, or two processes run as one replica index
    (`pluralign.store.clocks`): a DELETE then cannot
    tell the user's feedback held by another replica from before it and after it; it never began."""
    rt, tenant, user_id = _user(request, user_id)
    if rt.deletion_sweep is not None and (problem := rt.deletion_sweep.clocks_problem()) is not None:
        return error_response(503, f"the replicas' clocks disagree or cannot be compared ({problem}; at most "
                              f"PLURALIGN_STORE_SYNC_MS, {rt.settings.sync_seconds:g} s, is allowed): a DELETE now could keep "
                              "feedback sent before it or remove feedback sent after it, so nothing of the user was deleted; "
                              "send the DELETE again once the operator has fixed the clocks (NTP) or the replicas' indexes",
                              code="clocks_disagree", headers={"Retry-After": str(NOT_RECORDED_RETRY_AFTER)})
    try:
        began: list[float] = []
        future = rt.deletes.submit(tenant, lambda: services.delete(rt, tenant, user_id, began=began))
        counts = await asyncio.shield(asyncio.wrap_future(future))
        await _answer_after_the_slack(rt, began)
    except Busy as exc:
        raise TooManyRequestsException(detail=f"deletes are busy: {exc}", headers={"Retry-After": str(exc.retry_after)}) from None
    except Stopping as exc:  # waiting when the service was told to stop: it never began
        raise ServiceUnavailableException(detail=f"{exc}: nothing of the user was deleted; send the DELETE again",
                                          headers={"Retry-After": str(STOPPING_RETRY_AFTER)}) from None
    except DeleteNotRecorded:  # the journal's folder cannot be written (its path and cause are in the log)
        return error_response(503, "the DELETE could not be recorded before it began (the service cannot write to its data "
                              "folder; the operator's log says why): nothing of the user was deleted; send the DELETE again",
                              code="delete_not_recorded", headers={"Retry-After": str(NOT_RECORDED_RETRY_AFTER)})
    except TimeoutError as exc:
        raise ServiceUnavailableException(detail=f"the store is busy with another replica's maintenance: {exc}; "
                                          "send the DELETE again", headers={"Retry-After": "30"}) from None
    except OSError as exc:  # a table or file it reads or writes: no room, read-only, damaged
        return _delete_storage_failure(request, rt, tenant, user_id, exc)
    except ForgetIncomplete as exc:  # every other step ran; its journal entry stays for the next pass
        log.error("DELETE of a user of tenant %s: %s; the journal's pass tries again", tenant, exc)
        files = f"{len(exc.failures)} population file{'s' if len(exc.failures) > 1 else ''}"
        return error_response(500, f"the user's rows are deleted, but {files} could not be rewritten without them (damaged or "
                              "unreadable; the operator's log names them): the DELETE is recorded and the service tries again "
                              "until they are mended or removed", code="population_not_rewritten")
    except services.EmbeddingsNotForgotten as exc:  # the user is gone: a 200 that says what stays (the log names the files)
        counts = exc.counts
        warnings = [f"the vectors of their texts stay in {name}, which could not be looked into or rewritten (the operator's "
                    "log says why; /health shows it; sending the DELETE again cannot remove them)" for name in exc.left]
    else:
        warnings = []
    if not any(counts.values()):
        raise NotFoundException(f"no user {user_id!r} in this tenant")
    rt.metrics.inc("pluralign_users_deleted_total", help="users deleted")
    return Deleted(user=user_id, deleted=counts, warnings=warnings)


_RETRACT_RESPONSES = {
    **error_responses(404, 429, 503, 507),
    202: ResponseSpec(data_container=retractions.RetractionPending, generate_examples=False,
                      description='With replicas: the row is in no table yet (it may wait in another replica\'s feedback log); '
                                  'the retraction is recorded and the row dropped when it comes ("pending": true)'),
}


@delete("/v1/users/{user_id:str}/preferences/{pref_id:str}", status_code=200, responses=_RETRACT_RESPONSES,
        summary="Take back one stored preference (a misclicked answer)")
async def retract_preference(request: Request, user_id: FromPath[str], pref_id: FromPath[str]) -> Response[retractions.Retracted | retractions.RetractionPending]:
    """The row leaves the store and the feedback log's files, the user's model is fitted again without it, and their
    adapter, when it may have been trained on it, is no longer served (`service.users.retractions`). 404 when the
    user holds no row under that id (whether another user or tenant does is not told), also for one retracted already:
    sending it again is a 404 once it was done. With replicas, a 202 (`"pending": true`) for a row in no table yet
    (it may wait in another replica's feedback log): recorded, the row is dropped when it comes. Runs on the DELETEs'
    threads, as the user's DELETE (429, 503 as it).
    `retract_preference_by_query` is the same with the id outside the path (safe for any id)."""
    rt, tenant, user_id = _user(request, user_id)
    pref_id = last_segment_sent(request.scope, pref_id)  # an id holding a `/`, sent as `%2F` (docs/api.md)
    return await _retract(rt, tenant, user_id, pref_id)


@delete("/v1/users/{user_id:str}/preferences", status_code=200, responses=_RETRACT_RESPONSES,
        summary="Take back one stored preference, its id in the query (safe for any id)")
async def retract_preference_by_query(request: Request, user_id: FromPath[str],
                                      pref_id: Annotated[str | None, QueryParameter(name="pref_id")] = None) -> Response[retractions.Retracted | retractions.RetractionPending]:
    """`DELETE /v1/users/{user_id}/preferences?pref_id=...`: `retract_preference` (the same answers and 404s) with the
    id in the query, which no URL client or proxy resolves as a dot segment (`..` in the path, even as `%2E%2E`, may
    reach the service as the user's DELETE). A 400 naming `pref_id` when it is absent or malformed."""
    rt, tenant, user_id = _user(request, user_id)
    if pref_id is None:
        raise bad_request("pref_id", "required: the id of the preference to take back (`?pref_id=`, percent-encoded)")
    return await _retract(rt, tenant, user_id, pref_id)


async def _retract(rt: Runtime, tenant: str, user_id: str, pref_id: str) -> Response[retractions.Retracted | retractions.RetractionPending]:
    """Both retraction routes past reading the id: a 400 naming `pref_id` for a malformed one, the retraction on the
    DELETEs' threads (429 busy, 503 stopping or the store's lease held), a 404 when the user holds no such row, a 202
    when it was recorded for a row not stored yet (with replicas: `retractions.RetractionPending`)."""
    if (problem := pref_id_problem(pref_id)) is not None:
        raise bad_request("pref_id", problem)
    try:
        future = rt.deletes.submit(tenant, partial(retractions.retract, rt, tenant, user_id, pref_id))
        done = await asyncio.shield(asyncio.wrap_future(future))
    except Busy as exc:
        raise TooManyRequestsException(detail=f"deletes are busy: {exc}", headers={"Retry-After": str(exc.retry_after)}) from None
    except Stopping as exc:  # waiting when the service was told to stop: it never began
        raise ServiceUnavailableException(detail=f"{exc}: nothing was retracted; send it again",
                                          headers={"Retry-After": str(STOPPING_RETRY_AFTER)}) from None
    except TimeoutError as exc:
        raise ServiceUnavailableException(detail=f"the store is busy with another replica's maintenance: {exc}; "
                                          "send it again", headers={"Retry-After": "30"}) from None
    except TooManyPending as exc:  # with replicas, an id in no table: the bound on such records (docs/api.md)
        problem = (f"user {user_id!r} holds no stored preference {pref_id!r}, and {exc}: nothing recorded (a row stored "
                   "is taken back at once; send this one again once .../preferences lists it)")
        raise TooManyRequestsException(detail=f"`pref_id`: {problem}", headers={"Retry-After": str(math.ceil(exc.retry_after))},
                                       extra=[{"key": "pref_id", "message": problem, "code": "too_many_pending_retractions"}]) from None
    if done is None:
        raise NotFoundException(f"user {user_id!r} holds no preference {pref_id!r} in this tenant")
    if isinstance(done, retractions.RetractionPending):
        # the record takes back what arrived before its time plus the replicas' skew (`Store.retracted_before`): answered
        # past it, holding no lock, a row sent again after the 202 (a keyed feedback's, its id the same) is the user's
        # new word, kept
        await asyncio.sleep(rt.store.sync_seconds or 0.0)
        rt.metrics.inc("pluralign_preferences_retractions_pending_total", help="retractions recorded for rows in no table yet, with replicas (a 202: "
                       "dropped when they come)")
        return Response(done, status_code=202)
    rt.metrics.inc("pluralign_preferences_retracted_total", help="stored preferences taken back by their users")
    return Response(done, status_code=200)


@post("/v1/rewards/score", sync_to_thread=True, status_code=200, responses=error_responses(413, 429, 503, 507), summary="Score responses with a user's reward")
def score_responses(request: Request, data: JSONBody[ScoreRequest]) -> ScoreResponse:
    rt: Runtime = request.app.state.runtime
    user = check_user_id(data.user)
    routed_to(user_header_lines(request), user, "user")
    if len(data.responses) < 1:
        raise bad_request("responses", "must hold at least one response")
    refuse_blank("prompt", data.prompt)  # as a comparison's texts and a next-comparison pool's
    for i, response in enumerate(data.responses):
        refuse_blank(f"responses[{i}]", response)
    weights = services.user_weights(rt, request.user.tenant, user)
    fields = {"prompt": data.prompt} | {f"responses[{i}]": r for i, r in enumerate(data.responses)}
    # from the tenant's text vectors in memory (`Runtime.score_vectors`), as a next-comparison pool's are kept
    # (`_supplied_pairs` says why not the disk cache), in a cache of their own, not embedded again
    # at each call. A text the embeddings server refuses is told
    # apart from the server's own trouble by `refused_text` (the 400 naming its field, or the 503)
    try:
        vectors = rt.score_vectors.encode(rt.encoder, request.user.tenant, list(fields.values()))  # (1 + N, d)
    except RemoteTextsRefused as exc:
        raise refused_text(rt.encoder, fields, exc) from None
    rewards = weights.rewards or rt.rewards
    if weights.state is not None:  # the user's own model, as chat reranking uses it
        model = rewards.user_model
        ranked = ranked_by(model.score(weights.logits, weights.state, model.candidates(vectors[0], vectors[1:], data.responses)))
    else:
        ranked = rerank(lambda p, r: rewards.score(weights.logits, p, r), vectors[0], vectors[1:])
    return ScoreResponse(user=user, scores=ranked.scores, best_index=ranked.best, prior=weights.prior)


# ---- stated preferences and onboarding (issue 16) -------------------------------------------------


class StatedPatch(Base):
    """Set (`more` / `less`) or clear (null) stated preferences, one named feature each, as one version."""

    preferences: Annotated[dict[str, Literal["more", "less"] | None], msgspec.Meta(min_length=1, max_length=16)]

    @staticmethod
    def unknown_problem(field: str, body: bytes = b"") -> str | None:
        """The problem of an unknown top-level field that names a feature (`{"length": "less"}`, the statement sent
        without its `preferences` object), read by the strict decode (`service.strict`) with the request's `body`; None
        for any other field. The example repeats the statement sent (`"less"` stays `"less"`), or `"more"` for a value
        that is none. Not worded "unknown field", which `service.errors` words as any unknown field's."""
        if field not in FEATURE_NAMES:
            return None
        try:
            sent = msgspec.json.decode(body).get(field, "more") if body else "more"
        except (msgspec.DecodeError, UnicodeDecodeError, AttributeError):
            sent = "more"
        example = msgspec.json.encode(sent if sent in ("more", "less", None) else "more").decode()
        return (f'is a feature\'s name, whose statement goes in `preferences`, {{"preferences": {{"{field}": {example}}}}} '
                "(`more`, `less`, or null to clear it)")


# a GET whose `If-None-Match` names the current version; declared, so a client (or a schema fuzzer
# sending the header) knows it
NOT_MODIFIED = ResponseSpec(data_container=None, generate_examples=False,
                            description="Not modified: `If-None-Match` names the current version (or is `*`); no body, its `ETag`")


@get("/v1/users/{user_id:str}/stated-preferences", sync_to_thread=True, responses={**error_responses(429), 304: NOT_MODIFIED},
     summary="A user's stated preferences and a page of their history")
def get_stated(
    request: Request,
    user_id: FromPath[str],
    limit: Annotated[int, Parameter(ge=1, le=services.MAX_STATED_PAGE)] = 20,
    before: Annotated[int | None, Parameter(ge=1, le=services.MAX_STATED_VERSION)] = None,
    if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match", description='Entity tags (from an ETag) or *: 304 if the record is still the one they name')] = None,
) -> Response[services.StatedPage]:
    """The current stated preferences and the changes of the `limit` (1-100) newest versions below
    `before` (1 to 2^63-1, the stored version's range; default: from the current version), oldest first; `next_before` pages back, null at
    version 1. The whole history is in GET .../export. `ETag` is the current record's entity tag, `"<epoch>.<version>"`
    (`"0"` at version 0; never given again for the user, even after a DELETE), for a PATCH's `If-Match`. With
    `If-None-Match` naming it (or `*`), a 304 with the `ETag` and no body."""
    rt, tenant, user_id = _user(request, user_id)
    unchanged = _if_none_match(_field_lines(request, "if-none-match"))
    page, tag = services.tagged_stated_page(rt, tenant, user_id, limit, before)
    if unchanged is not None and services.tag_matches(tag, unchanged):
        return Response(None, status_code=304, headers={"ETag": f'"{tag}"'})
    return _tagged(services.TaggedPage(page, tag))


def _tagged(tagged: services.TaggedPage) -> Response[services.StatedPage]:
    """The page with `ETag: "<epoch>.<version>"` (`StatedPreferences.tag`), for a later PATCH's `If-Match`."""
    return Response(tagged.page, headers={"ETag": f'"{tagged.tag}"'})


# one element of an If-Match list and what ends it (RFC 9110, 5.6.1 and 8.8.3): an entity-tag (opaque: any visible
# character but `"` between the quotes, commas included; W/ before a weak one), or else a run of other characters (a bare
# 3, `*`, or something malformed); then a comma or the end. This service's tags ("5f0c9e1a2b3c4d5e.3", "0") are compared
# as strings: another well-formed tag ("…3-gzip" from a proxy, "03", "a,b", an old-form "3") names none of them
_ELEMENT = re.compile(r'[ \t]*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)"|([^\s,]*))[ \t]*(?:,|\Z)')
_BARE = re.compile(r"\d{1,18}")  # a bare number: the tag of that text (only 0 is one this service gives now)
_MALFORMED = 'must be entity tags such as "5f0c9e1a2b3c4d5e.3" (from the ETag of a GET or PATCH) or *'


def _if_match(value: str | None, header: str = "If-Match") -> list[str | None] | None:
    """An `If-Match` header: a list of entity tags (`"5f0c9e1a2b3c4d5e.3"`, `W/"…"`, or a bare number) or `*` alone,
    as the tags they name (None for `*`). If-Match compares strongly (RFC 9110, 13.1.1), so a weak tag never matches:
    it is left out; any other well-formed tag is compared as an opaque string (`"3-gzip"`, `"abc"`, `"03"`, `"a,b"`
    and an old-form `"3"`, the tag of version 3 in releases before versions52, name no record), so a list of such tags only
    is a 412. Empty list
    elements (`"5" ,`) are ignored (RFC 9110, 5.6.1). Raises a 400 naming `If-Match` when an element is none
    of these (`"3` or `3"`: a quote without its pair; `abc`; `"2" "2"`: two tags without a comma), when `*`
    comes with tags, or when there is no element at all. `header` names another header of the same grammar in
    the 400 (`If-None-Match`, `_if_none_match`)."""
    return _version_tags(value, header, weak_matches=False)


def _field_lines(request: Request, name: str) -> str | None:
    """The header `name`'s field lines as one comma-separated list (RFC 9110, 5.3), None when it is not sent."""
    lines = request.headers.getall(name, [])
    return ", ".join(lines) if lines else None


def _if_none_match(value: str | None) -> list[str | None] | None:
    """An `If-None-Match` header, of `If-Match`'s grammar (`_if_match`), compared weakly (RFC 9110, 13.1.2): `W/"t"`
    names what `"t"` does. Raises a 400 naming `If-None-Match` where `_if_match` raises one."""
    return _version_tags(value, "If-None-Match", weak_matches=True)


def _version_tags(value: str | None, header: str, weak_matches: bool) -> list[str | None] | None:
    """The opaque tags a conditional header names (None for `*`), `_if_match`'s grammar; a weak tag names its tag only
    when `weak_matches`."""
    if value is None:
        return None
    wanted: list[str | None] = []
    elements, at = 0, 0
    while at < len(value):
        found = _ELEMENT.match(value, at)
        if found is None or found.end() == at:  # a tag followed by something other than a comma
            raise bad_request(header, _MALFORMED)
        at = found.end()
        weak, tag, bare = found.groups()
        if tag is None and not bare:
            continue  # an empty element
        elements += 1
        if bare == "*":
            wanted.append(None)
        elif bare is not None and not _BARE.fullmatch(bare):
            raise bad_request(header, _MALFORMED)
        elif bare is not None or weak is None or weak_matches:
            wanted.append(bare if bare is not None else tag)  # a weak tag matches nothing under the strong comparison
    if None in wanted and elements > 1:
        raise bad_request(header, "is either * or a list of entity tags, not both")
    if not elements:
        raise bad_request(header, _MALFORMED)
    return wanted


@patch("/v1/users/{user_id:str}/stated-preferences", sync_to_thread=True, responses=error_responses(412, 429, 503, 507), summary="Set or clear a user's stated preferences")
def patch_stated(
    request: Request,
    user_id: FromPath[str],
    data: JSONBody[StatedPatch],
    if_match: Annotated[str | None, HeaderParameter(name="If-Match", description='Entity tags (from an ETag) or *: change only if the record is still one they name')] = None,
    if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match", description='Entity tags (from an ETag) or *: change only if the record is none they name (* never holds: every user has a record)')] = None,
) -> Response[services.StatedPage]:
    """Each named feature (`length`, `list_items`, `exclamations`, `contractions`, `word_length`,
    `second_person`, `affirmation`) set to `more` or `less` becomes a strong prior on the user's weight for it (the
    next ranking follows it; enough contrary feedback still moves it); null clears it. Every call
    that changes something is one new version, recorded with its time, shown in the profile and
    exported with the user; the answer carries that version's changes. A call that changes
    nothing (clearing what is not set) writes nothing: for an unknown user it creates no user.
    With `If-Match` (tags from the `ETag` of a GET or PATCH: `"<epoch>.<version>"`, never given again for the user,
    even after a DELETE), the change is made only if the preferences are still the record one of them names;
    otherwise a 412 changes nothing and its `ETag` is the current record's. With `If-None-Match` (compared weakly),
    only if they are none of those (`*` never: every user has a record, version 0 at first); otherwise the same 412."""
    rt, tenant, user_id = _user(request, user_id)
    # If-Match and If-None-Match are lists: their field lines are one list (RFC 9110, 5.3), as a proxy in front may
    # join them; with only the first read, `"5"` then `"0"` would be a 412 at version 0
    if_match, if_none_match = _field_lines(request, "if-match"), _field_lines(request, "if-none-match")
    wanted, unwanted = _if_match(if_match), _if_none_match(if_none_match)
    unknown = [name for name in data.preferences if name not in FEATURE_NAMES]
    if unknown:  # named, but not echoed whole: a name may be most of a megabyte body
        name = shorten(unknown[0], 67, "...")  # cut between graphemes
        raise bad_request(f"preferences.{name}", f"is not a named feature{did_you_mean(unknown[0], FEATURE_NAMES)}; known: "
                                                 f"{', '.join(FEATURE_NAMES)}")
    try:
        return _tagged(services.set_stated(rt, tenant, user_id, data.preferences, wanted, unwanted))
    except services.VersionMismatch as exc:
        said = f"not {if_match[:64]}" if exc.header == "If-Match" else f"which {if_none_match[:64]} names"
        return error_response(412, f"`{exc.header}`: {exc}, {said}: read them again, then PATCH",
                              exc.header, headers={"ETag": f'"{exc.tag}"'})
    except Busy as exc:  # other replicas' writes of the user's row kept coming between this one's read and write
        raise ServiceUnavailableException(detail=str(exc), headers={"Retry-After": str(exc.retry_after)}) from None


MAX_POOL_ANSWERS = 64  # answers over the whole pool (64 x 8 of 2 KB took ~60 s of encoding on two loaded cores)
MAX_POOL_ITEMS = 64  # prompts of a pool


class PoolItem(Base):
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    answers: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]], msgspec.Meta(min_length=2, max_length=8)]


def checked_pool(items: list[PoolItem]) -> list[tuple[str, list[str]]]:
    """A request's calibration pool (next-comparison's `pool`, the tenant's stored one) as (prompt, answers) items,
    after the checks its decoding cannot make: at most MAX_POOL_ANSWERS answers in all (each is encoded: one request's
    CPU bounded like /v1/rewards/score's), a 400 naming `pool`; no blank prompt or answer (the pair must be one
    `comparison` feedback accepts), a 400 naming `pool[i].prompt` or `pool[i].answers[j]`."""
    total = sum(len(item.answers) for item in items)
    if total > MAX_POOL_ANSWERS:
        raise bad_request("pool", f"holds {total} answers in all; at most {MAX_POOL_ANSWERS} per request")
    for i, item in enumerate(items):
        refuse_blank(f"pool[{i}].prompt", item.prompt)
        for j, answer in enumerate(item.answers):
            refuse_blank(f"pool[{i}].answers[{j}]", answer)
    return [(item.prompt, item.answers) for item in items]


class NextComparisonRequest(NullMeansDefault):
    """A tenant-supplied calibration pool; without one (`{}`), pairs of the tenant's stored comparisons are used.
    `target`: what the answer should teach, the user's coefficients (BALD, the default), which of the
    tenant's fitted users the user is like (`population`, for cold starts in a tenant with distinct groups),
    or the user's answers to the pool's other pairs (`predictive`, EPIG)."""

    pool: Annotated[list[PoolItem], msgspec.Meta(min_length=1, max_length=MAX_POOL_ITEMS)] | None = None
    target: Literal["coefficients", "population", "predictive"] | None = "coefficients"  # null: not given (NullMeansDefault)


@post("/v1/users/{user_id:str}/next-comparison", sync_to_thread=True, status_code=200, responses=error_responses(429, 503, 507), summary="The most informative comparison to ask a user next")
def next_comparison(request: Request, user_id: FromPath[str], data: JSONBody[NextComparisonRequest]) -> services.NextComparison:
    """For onboarding questionnaires: the pair of answers (to one prompt) whose comparison would
    teach the user's model most, chosen by expected information gain on their posterior (the same
    criterion as chat's `pluralign.compare`). The client shows it and sends the user's pick as a
    `comparison` feedback; ask again for the next one. `worth_asking` turns false once no pair carries
    `compare_min_bits` bits about which answer of its prompt is best for the user (chat's rule for
    `pluralign.compare`, whatever the target). With `target` `population` the pair is the one whose
    answer tells most about which of the tenant's fitted users this user is like (their models only,
    never their texts); `criterion` says which criterion chose."""
    rt, tenant, user_id = _user(request, user_id)
    pool, source = (None, "stored") if data.pool is None else (checked_pool(data.pool), "supplied")
    stored = None
    if pool is None and (stored := read_pool(rt.settings.calibration_pools_path, tenant)) is not None:
        pool, source = stored.items(), "calibration"
    elif pool is None and rt.settings.next_comparison_pool == "calibration":  # other users' texts are not asked
        raise bad_request("pool", "this tenant stored no calibration pool, and other users' stored comparisons are not "
                                  "asked (PLURALIGN_NEXT_COMPARISON_POOL=calibration): store one with PUT "
                                  "/v1/calibration-pool (prompts with 2-8 answers each), or send `pool`")
    return services.next_comparison(rt, tenant, user_id, pool, data.target, source, calibration=stored)
