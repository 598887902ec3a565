"""The preference record: one format for files, the wire and training."""

from __future__ import annotations

import datetime
import math
import re
import time
from typing import Any

import msgspec

from pluralign.data.text import is_blank, shorten

# a user id as the service takes it (it is a URL path segment and names the user's rows), checked with
# `fullmatch`: a `$` also matches before a final newline, so "alice\n" was a user id
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+\-]{0,127}")
USER_ID_RULE = "a user id is 1-128 characters: ASCII letters, digits and . _ @ : + - (starting with a letter or digit)"
# tenant names (from API keys, chosen by operators) name folders of the admin area's job data
# (`jobs/data/<tenant>/`), beside its population snapshots (`jobs/data/population/`): an id, not a path
RESERVED_TENANTS = frozenset({"population"})
# a preference's id as a file carries it (what the service's export writes, `StoredPreference.pref_id`): it
# names one preference of its user, so an import of the same file again stores nothing twice
PREF_ID = re.compile(r"[\x21-\x7e]{1,128}")
PREF_ID_RULE = "must be 1-128 printable ASCII characters without spaces"


def pref_id_problem(pref_id: Any) -> str | None:
    """Why `pref_id` is not a well-formed id (None: it is one, or None): the rule of an id to look up, which a row
    stored by an older release meets (`..`: the export writes it, a retraction takes it). A new row's id also meets
    `new_pref_id_problem`."""
    if pref_id is None or (isinstance(pref_id, str) and PREF_ID.fullmatch(pref_id)):
        return None
    return f"{PREF_ID_RULE}, got {shorten(repr(pref_id), 64, '...')}"


# A pref_id is sent as the last segment of DELETE /v1/users/{user_id}/preferences/{pref_id}. URL clients remove dot
# segments (RFC 3986 section 5.2.4) before sending: `..` as curl, httpx and requests send it, percent-encoded by
# `urllib.parse.quote(pref_id, safe="")` or not, is DELETE /v1/users/{user_id}, the user's own DELETE (every row gone);
# `a/../..` sent as it is, too. They cut the path at `?` and `#` first (`..#x` is the same DELETE), and a WHATWG URL
# parser (fetch in browsers and Node) also reads `\` as `/` and `%2e` as `.` (`%2E%2E`, `a\..\..`): an import's `..`
# would make a documented retraction delete its user. The server cannot tell such a DELETE
# from the user's own, so no new row may carry such an id.
_URL_CUT = re.compile(r"[?#]")
_URL_SEGMENT_END = re.compile(r"[/\\]")
_ENCODED_DOT = re.compile("%2e", re.IGNORECASE)
PREF_ID_DOT_RULE = ("may not hold a path segment `.` or `..` (between `/` or `\\`, before any `?` or `#`, `%2e` read as "
                    "`.`): a URL client resolves it, and a retraction of the row, DELETE /v1/users/{user_id}/preferences/"
                    "{pref_id}, would be sent as the DELETE of the user or another of their rows")


def pref_id_climbs(pref_id: str) -> bool:
    """Whether a URL client sending `pref_id` as a path segment would resolve part of it as a dot segment
    (`..`, `.`, `a/../..`, `..#x`, `%2E%2E`, `a\\..`): RFC 3986 section 5.2.4, and the WHATWG URL standard's
    "single-dot" and "double-dot path segments"."""
    path = _URL_CUT.split(pref_id, maxsplit=1)[0]
    return any(_ENCODED_DOT.sub(".", segment) in (".", "..") for segment in _URL_SEGMENT_END.split(path))


def new_pref_id_problem(pref_id: Any) -> str | None:
    """Why a new row may not carry `pref_id` (None: it may, or None): `pref_id_problem`, and no dot segment a URL
    client resolves (`pref_id_climbs`). Applied where a row with an id enters: preference files (the CLI and
    POST /v1/users/{user_id}/import) and `Preference`; rows an older release stored keep theirs."""
    if (problem := pref_id_problem(pref_id)) is not None or pref_id is None:
        return problem
    if pref_id_climbs(pref_id):
        return f"{PREF_ID_DOT_RULE}, got {shorten(repr(pref_id), 64, '...')}"
    return None


TENANT_RULE = "a tenant name is 1-128 characters: ASCII letters, digits and . _ @ : + - (starting with a letter or digit)"


def tenant_problem(value: str) -> str | None:
    """Why `value` cannot be a tenant name (None: it can): 1-128 characters of a user id's set, not
    `RESERVED_TENANTS`. The one rule the service's keys and every CLI option naming a tenant apply."""
    if not USER_ID.fullmatch(value):
        return TENANT_RULE
    if value in RESERVED_TENANTS:
        return f"{value!r} is reserved (the admin area's population snapshots are stored under that name)"
    return None


MAX_MARGIN = 1e6  # the largest margin the importers and the API take


def margin_problem(margin: Any) -> str | None:
    """Why `margin` cannot be a comparison's margin (None: it can): a number in [0, MAX_MARGIN], or None."""
    if margin is None:
        return None
    number = isinstance(margin, int | float) and not isinstance(margin, bool)
    if not number or not 0 <= margin <= MAX_MARGIN:  # NaN fails the comparison
        # an int is finite at any size (a JSON integer of 400 digits: math.isfinite would raise OverflowError)
        hint = ": leave it out (or null) for a comparison with no margin" if isinstance(margin, float) and not math.isfinite(margin) else ""
        return f"must be a number >= 0 (how much better `chosen` is) and at most 1e6 (MAX_MARGIN), got {margin!r}{hint}"
    return None


def time_problem(created_at: Any) -> str | None:
    """Why `created_at` cannot be a time (None: it can): a finite number of seconds since the epoch, or None."""
    if created_at is None:
        return None
    number = isinstance(created_at, int | float) and not isinstance(created_at, bool)
    if not number or not math.isfinite(created_at):
        return f"must be a finite time (seconds since the epoch), got {created_at!r}"
    return None


# the latest `created_at` a preference file (or a row read in Python) may give: the end of year 9999, UTC, the last
# second Python's `datetime` (and so `datetime.fromtimestamp`, pandas' readers of Unix seconds, ...) can show. The
# service's export writes `time.time()`'s seconds; a file in epoch milliseconds (1.7e12 for 2023) falls past it
MAX_CREATED_AT = 253402300799.0  # 9999-12-31T23:59:59Z
CREATED_AT_RULE = (f"must be a Unix time in seconds (as the service's export writes it), a number from 0 (1970-01-01) "
                   f"to {MAX_CREATED_AT:.0f} (9999-12-31 UTC)")


# the units a time an older release stored may be in, recognizable by its range (`time_unit`): per a second, and the name
UNITS = ((1000, "milliseconds"), (1_000_000, "microseconds"), (1_000_000_000, "nanoseconds"))


def time_unit(created_at: Any) -> tuple[int, str] | None:
    """The unit of `UNITS` (per a second, name) that `created_at` can only be in: a number past MAX_CREATED_AT (no date
    in seconds) and at most the end of year 9999 in that unit, the first that holds it (1.7e12: milliseconds, JavaScript's
    `Date.now()`; 1.7e15: microseconds; 1.7e18: nanoseconds, `time.time_ns()`, pandas' int64 datetimes). None for one in
    seconds' range, or in none of them (-5, 1e300, inf, NaN). A time in milliseconds before 1978-01-12 falls within the
    seconds' range and cannot be told from one, nor a microsecond time before then from milliseconds."""
    if not isinstance(created_at, int | float) or isinstance(created_at, bool) or not created_at > MAX_CREATED_AT:
        return None
    return next((unit for unit in UNITS if created_at <= MAX_CREATED_AT * unit[0]), None)


# what the hint of a date outside [0, MAX_CREATED_AT] says after "a date before 1970-01-01 UTC, ": an import's `created_at`
_CREATED_AT_OUTSIDE = "outside the times a created_at takes: give none to have the row stamped on receipt"


def _date_hint(created_at: str | datetime.date, outside: str = _CREATED_AT_OUTSIDE) -> str:
    """The hint of a date given as `created_at` (ISO text, or a Parquet timestamp column's value): its Unix seconds,
    a date that names no UTC offset read as UTC, so the hint says the same on every machine, whatever its time zone
    (`datetime.timestamp()` reads a naive one in the machine's). `outside` ends the hint of a date outside
    [0, MAX_CREATED_AT] (an import's advice by default)."""
    utc = "`datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()`"
    try:
        when = datetime.datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
        if not isinstance(when, datetime.datetime):  # a day: its midnight
            when = datetime.datetime.combine(when, datetime.time())
        naive = when.tzinfo is None
        seconds = (when.replace(tzinfo=datetime.UTC) if naive else when).timestamp()
    except (ValueError, OverflowError):  # not ISO text; pandas' NaT
        number = _number_hint(created_at) if isinstance(created_at, str) else None
        return number or f" (a date? give its Unix time: for ISO text without a UTC offset, read as UTC, Python's {utc})"
    if not 0 <= seconds <= MAX_CREATED_AT:  # its seconds would be refused too
        edge = "before 1970-01-01" if seconds < 0 else "after 9999-12-31T23:59:59"
        return f" (a date {edge} UTC, {outside})"
    if not naive:
        return f" (a date: give its Unix time, {seconds!r} for this one: Python's `datetime.fromisoformat(text).timestamp()`)"
    return (f" (a date: give its Unix time, {seconds!r} for this one read as UTC, as it names no UTC offset: "
            f"Python's {utc}; `.timestamp()` alone reads it in the machine's time zone)")


def _number_hint(text: str) -> str | None:
    """The hint of a number given as text (`"1700000000"`: a CSV's column made JSON, a Parquet string column), whose
    value a created_at takes as a number; None for text that is no finite number."""
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    unit = time_unit(number)
    other = f", in seconds: {unit[1]}? divide by {unit[0]}: {number / unit[0]!r}" if unit else ""
    return f" (a number as text? give it as a number ({shorten(text.strip(), 32, '...')} without quotes in JSON){other})"


# the end of the hint of a date outside the times a time parameter (an audit's `since`) takes: no row is stamped there
_TIME_OUTSIDE = (f"outside the times taken: Unix seconds from 0 (1970-01-01) to {MAX_CREATED_AT:.0f} "
                 "(9999-12-31T23:59:59 UTC)")


# the forms of a date written in digits alone (`date +%Y%m%d`, `+%Y%m%d%H%M`, `+%Y%m%d%H%M%S`), by their count of digits:
# such a number is taken for a date, not a Unix time (`digits_date`)
DIGIT_DATE_FORMS = {8: "YYYYMMDD", 12: "YYYYMMDDhhmm", 14: "YYYYMMDDhhmmss"}


def digits_date(number: Any) -> tuple[datetime.datetime, str] | None:
    """The date (naive, as written) a whole number spells in digits alone, and its form (`DIGIT_DATE_FORMS`):
    (2026-01-01 00:00, "YYYYMMDD") for 20260101, 202601011230 and 20260101123000 likewise. None for any other number
    (a fraction, a bool, another count of digits, a year before 1970, 20261301: no 13th month). In Unix seconds the
    8-digit ones are times in 1970-08 to 1973-03 and the 12-digit ones after the year 8200: times no feedback is from;
    the 14-digit ones are past the end of year 9999."""
    if not isinstance(number, int | float) or isinstance(number, bool) or not math.isfinite(number) or number != int(number):
        return None
    digits = str(int(number))
    if len(digits) not in DIGIT_DATE_FORMS or digits < "1970":
        return None
    fields = [int(digits[i:i + 2]) for i in range(4, len(digits), 2)]  # month, day[, hour, minute[, second]]
    try:
        return datetime.datetime(int(digits[:4]), *fields), DIGIT_DATE_FORMS[len(digits)]
    except ValueError:  # no such month, day, hour, ...
        return None


def digits_date_hint(number: Any) -> str:
    """The hint of a time given as a date written in digits (`digits_date`): the date, and its Unix seconds read as
    UTC; "" for a number that spells no date."""
    if (found := digits_date(number)) is None:
        return ""
    when, form = found
    shown = when.isoformat(sep=" ") if when.time() != datetime.time() else when.date().isoformat()
    seconds = when.replace(tzinfo=datetime.UTC).timestamp()
    return f" (the date {shown} written {form}? give its Unix time, {seconds!r} for this one read as UTC)"


def digits_date_problem(seconds: Any) -> str | None:
    """Why a time parameter in Unix seconds (an audit's `since`) within the times taken is refused: it spells a date
    in digits (`digits_date`: 20260101), which read as seconds would be a time no feedback is from (1970-08-23), so
    that an audit since it would silently cover every comparison; None for any other value (one outside
    [0, MAX_CREATED_AT] is refused by its range)."""
    if not (hint := digits_date_hint(seconds)) or not 0 <= seconds <= MAX_CREATED_AT:
        return None
    read = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"must be a Unix time in seconds, not a date written in digits: {int(seconds)} as seconds is {read} UTC{hint}"


def time_text_hint(text: str, quoted: bool = False) -> str:
    """The hint a refused time given as text gets (a query parameter, a command-line option in Unix seconds, as
    `created_at`): for ISO date text its Unix seconds (`_date_hint`: read as UTC where it names no offset; for one
    outside 1970 to 9999 UTC, the range of times taken: no import's advice), for a number past the end of year 9999 in
    seconds and within it in milli-, micro- or nanoseconds (`time_unit`) the division; "" for any other text (its own
    error says what a time is). A whole number that spells a date in digits (`digits_date`: 20260101, in quotes or
    not) is told the date's seconds. `quoted`: the text was a JSON string where a number goes (an audit job's
    `params.since`), and another number in it is told to lose its quotes (`_number_hint`, as a `created_at` is)."""
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and (dated := digits_date_hint(number)):  # 20260101123000: a date, not milliseconds; and
        return dated  # "20260101" told to lose its quotes would be refused again, as that date
    if quoted and (number_hint := _number_hint(text)) is not None:
        return number_hint
    if number is None:
        try:
            datetime.datetime.fromisoformat(text)
        except ValueError:
            return ""
        return _date_hint(text, _TIME_OUTSIDE)
    unit = time_unit(number)
    return f" ({unit[1]}? divide by {unit[0]}: {number / unit[0]!r})" if unit else ""


def created_at_problem(created_at: Any) -> str | None:
    """Why `created_at` cannot be a preference file's time (None: it can): a number of Unix seconds in
    [0, MAX_CREATED_AT], or None (stamped on receipt). What the readers of files and rows (`pluralign.data.io`)
    and the service's import take, and `Preference` (a record made in Python); stored rows need only a finite time
    (`time_problem`: older releases stored any number).
    The problem gives a hint for a time in milli-, micro- or nanoseconds (`time_unit`) and for a date (its seconds, read as UTC where it names no
    offset: the same on every machine, whatever its time zone). A date written in digits (20260101: `digits_date`) is
    refused as an audit's `since` is (`digits_date_problem`: as seconds, 1970-08-23), and past the end of year 9999
    (20260101123000) told its date, not a division into milliseconds."""
    if created_at is None:
        return None
    number = isinstance(created_at, int | float) and not isinstance(created_at, bool)
    if number and 0 <= created_at <= MAX_CREATED_AT:  # NaN fails the comparison
        return digits_date_problem(created_at)
    hint = ""
    if dated := digits_date_hint(created_at):
        hint = dated
    elif unit := time_unit(created_at):
        hint = f" ({unit[1]}? divide by {unit[0]}: {created_at / unit[0]!r})"
    elif isinstance(created_at, str | datetime.date):  # ISO text, or a Parquet timestamp column (pandas' datetimes)
        hint = _date_hint(created_at)
    return f"{CREATED_AT_RULE}, got {shorten(repr(created_at), 64, '...')}{hint}"


def seconds_meant(created_at: float) -> float:
    """A stored `created_at` as the Unix seconds it meant: a time in milli-, micro- or nanoseconds (`time_unit`:
    recognizable by its range, past the end of year 9999 in seconds; imports of earlier releases stored it as it came)
    divided into seconds, any other as it is (-5 and 1e300 too: they mean no time, `stand_in_received`)."""
    unit = time_unit(created_at)
    return created_at / unit[0] if unit else created_at


def stand_in_received(created_at: float, now: float | None = None) -> float:
    """When a row stored before `received_at` was kept counts as received, by its `created_at`: the seconds it meant
    (`seconds_meant`), or 0.0, before any DELETE began, for a time that means none in any unit (-5, 1e300, inf, NaN: imports
    of earlier releases stored any number) or one still to come (after `now`, unix seconds; None: the clock's now:
    2100-01-01 in seconds or milliseconds, which those imports took too, and which would otherwise count as
    received then, after every DELETE), whose row must not outlive its user's DELETE as sent after it (no release that
    stored such a row without `received_at` is still receiving, and none received a row later than now). Unix seconds."""
    seconds = seconds_meant(created_at)
    latest = min(time.time() if now is None else now, MAX_CREATED_AT)
    return seconds if 0 <= seconds <= latest else 0.0  # NaN fails the comparison


def seconds_meant_of(created_at):
    """`seconds_meant` of each stored `created_at` in a column of them: (N,) float64 Unix times in, (N,) float64 out (a
    reader of a whole table by time: an audit's `since` and its order of each user's comparisons, the store's order of
    a user's rows)."""
    import numpy as np

    times = np.asarray(created_at, np.float64)
    seconds = times.copy()
    for past, up_to, per_second in unit_ranges():
        held = (times > past) & (times <= up_to)
        seconds[held] = times[held] / per_second
    return seconds


def unit_ranges() -> list[tuple[float, float, int]]:
    """The stored times `time_unit` reads as each of UNITS: (past, up to and with, per a second) of each, in order; a
    unit's range starts where the one before it ends (MAX_CREATED_AT, the end of year 9999, in that unit)."""
    ends = [MAX_CREATED_AT * per_second for per_second, _ in UNITS]
    return [(past, end, per_second) for past, end, (per_second, _) in zip([MAX_CREATED_AT, *ends[:-1]], ends, UNITS, strict=True)]


def file_time(created_at: float | None) -> float | None:
    """`created_at` (Unix seconds) as a preference file is written with it, so that what the service writes (an
    export, a job's snapshot) reads again and keeps its date: a time in milli-, micro- or nanoseconds, which imports
    of earlier releases stored as it came, as the seconds it meant (`seconds_meant`: recognizable by its range, past
    the end of year 9999 in seconds), and None (no time; a reader stamps the row on receipt) for another one
    `created_at_problem` refuses, such as -5 or 1e300."""
    if created_at_problem(created_at) is None:
        return created_at
    return seconds_meant(created_at) if time_unit(created_at) else None


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every pluralign struct: unknown fields are an error, never silently dropped."""


class Persisted(Base, forbid_unknown_fields=False):
    """Base of a struct this release reads back from a file or a store that another release may have written (an
    artifact's description, a job record, a DELETE's journal entry, a table's rows): a field it does not know is
    skipped, not refused as if the file were damaged (and lost where this release rewrites the record from what it read;
    a DELETE's rewrite of a population model's files keeps it). A later release adds an optional field without breaking
    this one, in a rolling upgrade and after a rollback; a change this release cannot read safely bumps the format's
    schema version, which the reader refuses by its number (`pluralign.files.other_schema`). What a request or a
    user's own data file holds stays `Base`'s: an unknown field there is a mistake to name. So do files without a
    schema number where skipping a field could weaken what the file guarantees: the key file (a later field may
    restrict a key), the feedback log's rows and the dead letters holding them (acknowledged feedback stored without a
    field's meaning, as `row_numbers`), its forget notes and pref-id claims (what a DELETE must reach): a
    release refuses those, naming the file, and leaves them as they are. Every other file skips a later release's
    field: refused, a field added to meta.json (`files`) would make every older replica's start and DELETE fail."""


class PreferenceError(ValueError):
    """A preference row that cannot be read; names the line (or row) and the field, and the file
    (`path`) when it came from one: "prefs.jsonl: line 3, field `chosen`: ...". `unit` says what
    `line` counts: "line" (JSON lines: blank lines counted) or "row" (a Parquet file, rows in memory:
    "prefs.parquet: row 3, ..."). Line 0 is the whole file ("prefs.jsonl: holds no preference rows").
    `skippable` is False where skipping bad rows would not help (a file in another form, whose every
    line is one)."""

    skippable = True
    unit = "line"

    def __init__(self, line: int, field: str | None, problem: str, path: str | None = None):
        super().__init__(line, field, problem, path)
        self.line = line
        self.field = field
        self.problem = problem
        self.path = path

    def __str__(self) -> str:
        where = [self.path] if self.path else []
        if self.line:
            # a field is a row's key, which may be any length (an unknown one): named in 64 characters at most
            where.append(f"{self.unit} {self.line}" + (f", field `{shorten(self.field, 64, '...')}`" if self.field else ""))
        return ": ".join([*where, self.problem])


Message = dict[str, Any]  # a chat message as TRL stores it: {"role", "content"} (readers refuse other keys: io.MESSAGE_KEYS)


class TrlRow(Base):
    """A row of a TRL preference dataset as it came, kept so an export gives it back unchanged.

    `prompt` is None for the implicit-prompt form (`chosen` and `rejected` are whole conversations
    that share it as a prefix); strings are TRL's standard form, message lists its conversational
    form. `extra` holds TRL's other columns (`id`, `score_chosen`, `score_rejected`, ...)."""

    chosen: str | list[Message]
    rejected: str | list[Message]
    prompt: str | list[Message] | None = None
    extra: dict[str, Any] = {}

    @property
    def form(self) -> str:
        """`standard` or `conversational`, then `explicit` or `implicit` (the prompt)."""
        kind = "standard" if isinstance(self.chosen, str) else "conversational"
        return f"{kind}/{'implicit' if self.prompt is None else 'explicit'}"


class Preference(Base):
    """One user's judgment that `chosen` is better than `rejected` as an answer to `prompt`.

    `tie=True` records that the user found both equal (kept; not used for pairwise training: PAL, EM and adapters
    learn from winners; the per-user model fits a tie of two answers with Davidson's tie term, `pluralign.user.model`).
    `attributes` holds free labels such as group names used by fairness audits. `prompt`, `chosen`
    and `rejected` are always plain text (what the models read); `trl` keeps a TRL row's own form.
    """

    user_id: str
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    tie: bool = False
    source: str | None = None
    created_at: float | None = None
    attributes: dict[str, str] = {}
    trl: TrlRow | None = None  # the TRL row it was read from, when a plain export would not give it back
    # the id it was stored under, when a file carries one (the service's export does): an import keeps it, so
    # a row imported again is the same preference (stored once) and ties of `created_at` keep their order
    pref_id: str | None = None

    def __post_init__(self) -> None:
        """Raises TypeError naming a text field that is not a str, ValueError naming an empty one, a
        `margin` outside [0, MAX_MARGIN] (NaN included) or a `created_at` that is not a Unix time in seconds
        in [0, MAX_CREATED_AT] (`created_at_problem`: -5, 1e300, a time in milliseconds, NaN) or a `pref_id` no new row
        may carry (`new_pref_id_problem`: a space, `..`): the rules
        `read_rows` applies to a row, for a record made in Python. `chosen` may be `rejected`'s answer (a tie over one
        answer), which a file's row may not be: `read_preferences` refuses the line `write_jsonl` writes of such a record
        ("is the same answer as `chosen`", `look_key`)."""
        for name in ("user_id", "prompt", "chosen", "rejected"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"`{name}` must be a str, got {type(getattr(self, name)).__name__}")
        for name, problem in (("margin", margin_problem(self.margin)), ("created_at", created_at_problem(self.created_at)),
                              ("pref_id", new_pref_id_problem(self.pref_id))):
            if problem:
                raise ValueError(f"`{name}` {problem}")
        if is_blank(self.user_id) or is_blank(self.prompt) or is_blank(self.chosen) or is_blank(self.rejected):
            name = next(name for name in ("user_id", "prompt", "chosen", "rejected") if is_blank(getattr(self, name)))
            raise ValueError(f"`{name}` must not be empty (it has no visible character)")


PREFERENCE_ENCODER = msgspec.json.Encoder()
