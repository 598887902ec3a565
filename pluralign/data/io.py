"""Read and write preference files: JSONL and Parquet in TRL's prompt/chosen/rejected forms.

Every TRL preference form loads into `Preference`: standard (strings) or conversational (message
lists), with an explicit `prompt` or an implicit one (the prefix chosen and rejected share). A
record keeps the row's own form (`Preference.trl`), so a file written back has the form it came in.
A file with bad rows loads nothing (the first error names line and field) unless `skip_bad=True`,
which skips them and reports how many.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import gzip
import io
import itertools
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import regex

from pluralign.data.decode_words import in_our_words
from pluralign.data.json_keys import keys_kept, repeated_key
from pluralign.data.record import (
    MAX_CREATED_AT,
    MAX_MARGIN,
    Base,
    Message,
    Preference,
    PreferenceError,
    TrlRow,
    created_at_problem,
    margin_problem,
    new_pref_id_problem,
)
from pluralign.data.text import (
    closest_name,
    controls_escaped,
    is_blank,
    lone_surrogate_escape,
    lone_surrogate_problem,
    look_key,
    nfc,
    shorten,
    surrogate_problem,
)
from pluralign.files import DECODE_ERRORS, atomic_writer

_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


class LoadReport(Base):
    """What a load read: records kept, rows skipped, the first few errors, and where each record
    came from: `lines[i]` is the line (JSON lines; blank lines counted) or row (Parquet), from 1, of
    `records[i]`, so a later error about a record can name its place in the file: `f"{unit} {lines[i]}"`."""

    loaded: int
    skipped: int = 0
    errors: list[str] = []
    lines: list[int] = []
    unit: Literal["line", "row"] = "line"  # what `lines` counts: JSON lines, or a Parquet file's (a table's) rows


# TRL's own columns besides prompt/chosen/rejected that are kept with a row and written back
TRL_EXTRA_COLUMNS = (
    "id", "prompt_id", "score_chosen", "score_rejected", "chosen_rating", "rejected_rating", "chosen_model", "rejected_model",
)


# bounds on each of TRL's extra columns of a row a store keeps (the service's import: `extra_column_problem`);
# TRL's are numbers, ids and model names. At most len(TRL_EXTRA_COLUMNS) columns (any other key is refused)
MAX_EXTRA_BYTES = 1024  # a column's value as JSON (msgspec-encoded), in bytes
MAX_EXTRA_DEPTH = 2  # lists and objects inside one another: 0 a number or string, 1 a list of them, 2 a list of lists


def extra_column_problem(extra: Mapping[str, Any]) -> tuple[str, str] | None:
    """(column, problem) of the first of TRL's extra columns (`TrlRow.extra`) past MAX_EXTRA_BYTES encoded,
    nested past MAX_EXTRA_DEPTH, or holding an integer past 64 bits (the service's feedback log, msgpack, and
    Arrow refuse it); None when every one is kept as it came."""
    for column, value in extra.items():
        kind = type(value)  # most are numbers and short strings, surely within the bounds: not encoded
        if kind is float or kind is str and len(value) <= _SURELY_SHORT or kind is int and _INT_MIN <= value < _INT_END or value is None:
            continue
        if (problem := _kept_value_problem(value, MAX_EXTRA_DEPTH)) is not None:
            if problem == _PAST_64_BITS:
                problem += f": {_past_64_bits_way_out(column)}"
            return column, f"{problem} (TRL's extra columns are kept with the row)"
        size = len(_json_encoder.encode(value))
        if size > MAX_EXTRA_BYTES:
            return column, f"{size} bytes as JSON; at most {MAX_EXTRA_BYTES} (TRL's extra columns are kept with the row)"
    return None


# TRL's extra columns that hold numbers: the score a dataset gives each answer (UltraFeedback's `score_chosen`,
# `score_rejected`, which trainers filter and sort by) and its rating, which may be a list of them (one per aspect).
# `datasets.load_dataset("json")` reads a column holding text beside numbers as Arrow's JSON type, not float64
SCORE_COLUMNS = ("score_chosen", "score_rejected")
RATING_COLUMNS = ("chosen_rating", "rejected_rating")


def extra_type_problem(extra: Mapping[str, Any]) -> tuple[str, str] | None:
    """(column, problem) of the first of TRL's extra columns (`TrlRow.extra`) holding a value of another type than
    its own: a score (SCORE_COLUMNS) that is not a number, a rating (RATING_COLUMNS) that is neither a number nor a
    list of numbers (lists in it too, each holding numbers at any depth: one holding text past MAX_EXTRA_DEPTH is refused too; its
    depth is `extra_column_problem`'s). A null is absent and a boolean no number. None
    when every one holds its type. What `row_to_preference` refuses, naming the column."""
    for column in SCORE_COLUMNS:
        if (value := extra.get(column)) is not None and not _number(value):
            return column, (f"must be a number (the answer's score, as UltraFeedback's `score_chosen` and `score_rejected`), got {shorten(repr(value), 64, '...')}: "
                            "leave it out (or null) for none")
    for column in RATING_COLUMNS:
        if (value := extra.get(column)) is not None and not _numbers(value):
            return column, (f"must be a number or a list of numbers (one per aspect), got {shorten(repr(value), 64, '...')}: "
                            "leave it out (or null) for none")
    return None


def _numbers(value: Any) -> bool:
    """Whether `value` is a number or a list of numbers and such lists, however deep (without recursion: a JSON line
    nests lists up to msgspec's limit, a Python row any depth), a list's numbers finite: a NaN in a list (a Parquet
    file's, pandas' missing aspect) is written `null` there, which no reader takes (read, `data export` would write
    a file its own reader refuses); a NaN alone is absent, as a score's. Looked at one depth
    of lists at a time, each told by its items' types at C speed (`set(map(type, ...))`, `sum`, the next depth's items
    by `itertools.chain`), only items of other types one by one: a 1 MB import line of a rating of 450,000 numbers is
    checked in ~15 ms, not ~275 ms of Python holding the interpreter lock, and one of 200,000 lists of
    a number alike (not ~130 ms of Python a list)."""
    if type(value) is not list:
        return _number(value)
    level = value
    while level:
        kinds = set(map(type, level))
        if not kinds <= _NUMBERS_OR_LISTS and not all(type(v) in _NUMBERS_OR_LISTS or _number(v) for v in level):
            return False
        if (float in kinds or not kinds <= _NUMBERS_OR_LISTS) and not _finite(level, kinds):
            return False
        if list not in kinds:
            return True
        level = list(itertools.chain.from_iterable(filter(list.__instancecheck__, level)))
    return True


def _finite(items: list, kinds: set[type]) -> bool:
    """Whether the floats of `items` (np.float64's too) are finite: their sum, at C speed, else one by one (a sum past
    float's range, or an integer past it, makes no NaN)."""
    try:
        if math.isfinite(sum(items if kinds <= _PLAIN_NUMBERS else filter(float.__instancecheck__, items))):
            return True
    except OverflowError:
        pass
    return all(map(math.isfinite, filter(float.__instancecheck__, items)))


_PLAIN_NUMBERS = frozenset({int, float})  # the types of a decoded JSON number (a bool's is `bool`: no number)
_NUMBERS_OR_LISTS = _PLAIN_NUMBERS | {list}


_PAST_64_BITS = "an integer past 64 bits"


def _past_64_bits_way_out(column: str) -> str:
    """How to give an integer past 64 bits (`_PAST_64_BITS`) in TRL's extra `column`: as a string, but in a column of
    numbers (SCORE_COLUMNS, RATING_COLUMNS: `extra_type_problem` refuses a string there) as a float."""
    if column in SCORE_COLUMNS or column in RATING_COLUMNS:
        return "give it as a float, with an exponent (1.2e21): TRL's scores and ratings are numbers"
    return "give it as a string"


_INT_MIN, _INT_END = -(1 << 63), 1 << 64  # the integers msgpack (the feedback log) and Arrow keep: int64 and uint64
_SURELY_SHORT = (MAX_EXTRA_BYTES - 2) // 6  # characters of a string within MAX_EXTRA_BYTES however JSON spells them (`\\u0000`)


def _kept_value_problem(value: Any, depth_left: int) -> str | None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        return None if _INT_MIN <= value < _INT_END else _PAST_64_BITS  # the way out: `_past_64_bits_way_out`
    if isinstance(value, float):  # finite: JSON lines hold no NaN or infinity (msgspec refuses 1e999)
        return None
    if depth_left <= 0:
        return f"nested more than {MAX_EXTRA_DEPTH} deep (lists and objects inside one another); at most {MAX_EXTRA_DEPTH}"
    for item in value.values() if isinstance(value, dict) else value:
        if (problem := _kept_value_problem(item, depth_left - 1)) is not None:
            return problem
    return None


# the `type` of each line of the service's full export of a user (`GET /v1/users/{id}/export`)
EXPORT_LINE_TYPES = ("user", "preference", "interaction")


# the keys a TRL message takes: any other is refused, as a row's own unknown key (`UNKNOWN_FIELD`)
MESSAGE_KEYS = ("role", "content")
# the roles a message of a preference row takes: the chat route's (`service.chat.schemas.Message.role`), so a stored
# conversation reads as one the service could have been sent, but its deprecated `function` (a function's result needs
# its `name`, a key a row's message does not take); an absent or null role is `user`
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
UNKNOWN_MESSAGE_KEY = "unknown field (a message takes `role` and `content`; README, 'Preference files')"
CONTENT_PARTS = "a list of content parts (text, images) is not taken: give the message's text as one string"


def messages_to_text(value: Any, field: str, line: int) -> str:
    """Flatten a TRL conversational field (a list of {role, content}) into plain text.

    Raises PreferenceError naming a key the message does not take (`chosen[1].foo`, `chosen[1].tool_calls`,
    cut to 64 characters) as a row's unknown key is: never silently dropped; then its `content` when that is a
    list of parts (`chosen[1].content`), the message (`chosen[1]`) for one without a string `content`, and
    its `role` (`chosen[1].role`) when that is not one of MESSAGE_ROLES. A key whose value is null is absent."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise PreferenceError(line, field, "expected a string or a non-empty list of messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise PreferenceError(line, f"{field}[{i}]", "expected a message object with a string `content`")
        for key in message:  # first: a tool call's `content` is null, its `tool_calls` what to name
            if key not in MESSAGE_KEYS and message[key] is not None:
                raise PreferenceError(line, f"{field}[{i}].{shorten(str(key), 64, '...')}", UNKNOWN_MESSAGE_KEY)
        if isinstance(message.get("content"), list):  # TRL's vision form, OpenAI's content parts
            raise PreferenceError(line, f"{field}[{i}].content", CONTENT_PARTS)
        if not isinstance(message.get("content"), str):
            raise PreferenceError(line, f"{field}[{i}]", "expected a message object with a string `content`")
        if message.get("role") is not None and not isinstance(message["role"], str):
            raise PreferenceError(line, f"{field}[{i}].role", "expected a string (`user`, `assistant`, ...)")
        if message.get("role") is not None and message["role"] not in _ROLE_SET:
            raise PreferenceError(line, f"{field}[{i}].role", f"must be one of {', '.join(f'`{r}`' for r in MESSAGE_ROLES)} "
                                                              f"(the chat route's roles), got {shorten(repr(message['role']), 64, '...')}")
    return _joined(value)


def _joined(messages: str | list[Message]) -> str:
    """The text of a field `messages_to_text` found sound: a string itself, one message its content,
    more each as `role: content` on its own line (the role `user` when absent or null)."""
    if isinstance(messages, str):
        return messages
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{'user' if m.get('role') is None else m['role']}: {m['content']}" for m in messages)


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """TRL's implicit-prompt rule (`trl.data_utils.extract_prompt`): the prompt is the longest common
    prefix of `chosen` and `rejected` (messages, or text less a trailing space).
    Returns (prompt, chosen rest, rejected rest), the prompt as `chosen` spells it.

    Unlike TRL's character-by-character rule, text is compared in whole grapheme clusters (the
    `regex` module's \\X), each in NFC, and messages with their texts in NFC: a prefix never ends
    inside an emoji's ZWJ sequence or between a letter and its combining marks ("👨‍👩‍👧" and "👨‍👩‍👦"
    share no prompt ending in a zero-width joiner), and a prompt one side spells in NFD is still shared."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _extract_text_prompt(chosen, rejected)
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):  # as TRL: no difference leaves the last message out
        if chosen[idx] != rejected[idx] and _message_key(chosen[idx]) != _message_key(rejected[idx]):  # the same message: the same key
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _message_key(message: Any) -> Any:
    if isinstance(message, dict):
        return {k: nfc(v) if isinstance(v, str) else v for k, v in message.items()}
    return message


def _extract_text_prompt(chosen: str, rejected: str) -> tuple[str, str, str]:
    ends: list[tuple[int, int]] = [(0, 0)]  # (end in chosen, end in rejected) after each common grapheme cluster
    for a, b in zip(_GRAPHEME.finditer(chosen), _GRAPHEME.finditer(rejected), strict=False):  # up to the shorter
        if nfc(a.group()) != nfc(b.group()):
            if len(ends) > 1 and chosen[ends[-1][0] - 1] == " ":  # the space belongs to the answer
                ends.pop()
            break
        ends.append((a.end(), b.end()))
    else:  # one is a prefix of the other: as TRL, the last common cluster is left to the answers
        ends = ends[:-1] or ends
    end_c, end_r = ends[-1]
    return chosen[:end_c], chosen[end_c:], rejected[end_r:]


_GRAPHEME = regex.compile(r"\X")


def _attribute_labels(value: Any, line: int) -> dict[str, str]:
    """Attributes are labels: strings kept, numbers and booleans as their JSON text (4 -> "4"), a
    null is no label (Hugging Face `datasets` gives every row every key some row has, null where absent). A list of
    `{"key", "value"}` objects is the same labels: this module's Parquet form, which `datasets` writes back so to JSON."""
    if isinstance(value, list):
        value = _key_value_labels(value, line)
    if not isinstance(value, dict):
        raise PreferenceError(line, "attributes", "expected an object of labels")
    labels = {}
    for key, item in value.items():
        if is_blank(key):
            raise PreferenceError(line, "attributes", "an attribute name must hold a visible character")
        if problem := surrogate_problem(key) or (surrogate_problem(item) if isinstance(item, str) else None):
            raise PreferenceError(line, "attributes", f"an attribute name or label {problem}")
        if item is None:
            continue
        if isinstance(item, str):
            labels[key] = item
        elif isinstance(item, (bool, int, float)):
            labels[key] = _json_encoder.encode(item).decode()
        else:
            raise PreferenceError(line, f"attributes.{key}", "expected a string, number or boolean label")
    return labels


def _key_value_labels(pairs: list[Any], line: int) -> dict[str, Any] | list[Any]:
    """Key/value pairs as an object of labels; `pairs` as they are when any is not such a pair (refused by the caller)."""
    if not all(isinstance(p, dict) and p.keys() == {"key", "value"} and isinstance(p["key"], str) for p in pairs):
        return pairs
    labels: dict[str, Any] = {}
    for pair in pairs:
        if pair["key"] in labels:
            raise PreferenceError(line, "attributes", f"`{shorten(pair['key'], 64, '...')}` given 2 times among its key/value pairs; give it once")
        labels[pair["key"]] = pair["value"]
    return labels


def row_to_preference(row: Any, line: int, default_user: str | None = None, *,
                      unit: Literal["line", "row"] = "line") -> Preference:
    """Validate one decoded row in any TRL preference form; raises PreferenceError naming the line and field.

    Standard (strings) or conversational (message lists); explicit (`prompt`) or implicit prompt
    (chosen and rejected share it as a prefix; a null `prompt` too, as `datasets` writes an implicit row
    beside explicit ones). TRL's extra columns (TRL_EXTRA_COLUMNS) are kept.
    A row without `user_id` (or with a null one, as `datasets`' to_json writes it) belongs to `default_user` when
    given; a null `tie` is no tie. Rows of a
    Hugging Face `Dataset` (nulls for absent values): `read_rows`. `unit`: where the row came from, a JSON line
    ("line") or a table's row ("row": Parquet, a DataFrame, a `Dataset`), which an error's hint fits (a float
    `user_id`: a JSON string to write, or pandas' int column made floats by a missing value)."""
    _check_is_a_preference_row(row, line)
    given, row = row, dict(row)  # `given`: the row's own columns (the default user's `user_id` is none of them)
    if "prompt" in row and row["prompt"] is None:  # `datasets` writes the implicit-prompt rows of a mixed file so
        del row["prompt"]
    implicit = "prompt" not in row
    original = _take_texts(row, line, implicit)  # row's prompt/chosen/rejected: now plain text
    _take_other_fields(row, line, default_user, unit)
    if "trl" in row:  # `Preference`'s own field, never a file's column: a row does not give its record's TRL form
        raise PreferenceError(line, "trl", UNKNOWN_FIELD)
    try:
        record = msgspec.convert(row, Preference)
    except msgspec.ValidationError as exc:
        problem = str(exc).split(" - at ")[0]
        if problem.startswith("Object contains unknown field `"):  # a key of any length: named once, cut (PreferenceError)
            name = problem.split('`')[1]
            problem = (f"unknown field `{shorten(name, 64, '...')}`" if " - at " in str(exc)
                       else _other_type_column(name) if name in _OTHER_TYPE_COLUMNS else _unknown_field(name, given))
        else:  # msgspec's words (`Expected `str`, got `int``) in ours
            problem = in_our_words(problem)
        raise PreferenceError(line, _field_of(str(exc)), problem) from None
    plain = not implicit and isinstance(original.chosen, str) and isinstance(original.prompt, str) and not original.extra
    return record if plain else msgspec.structs.replace(record, trl=original)


UNKNOWN_FIELD = "unknown field (README, 'Preference files', names the fields a row takes)"


def _row_fields() -> tuple[str, ...]:
    """The columns a preference row takes: TRL's and pluralign's."""
    return (*(name for name in Preference.__struct_fields__ if name != "trl"), *TRL_EXTRA_COLUMNS)  # `trl`: never a column


def _unknown_field(name: str, given: Mapping[str, Any]) -> str:
    """UNKNOWN_FIELD, with the column `name` most likely means (`closest_name`: `chosen-rating`: `chosen_rating`;
    `user`: `user_id`; `chosen_score`: `score_chosen`) among those the row does not hold (`given`: a `user` beside a
    `user_id` is no misspelt `user_id`)."""
    close = closest_name(name, (field for field in _row_fields() if field not in given)) if len(name) <= 64 else None
    return UNKNOWN_FIELD.replace("unknown field", f"unknown field (did you mean `{close}`?)") if close else UNKNOWN_FIELD


def _missing(row: Mapping[str, Any], field: str) -> str:
    """"missing required field", naming a key of `row` no row takes that is close to `field` (`choosen`, `user`)."""
    return f"missing required field{_typed_instead(row, field)}"


def _typed_instead(row: Mapping[str, Any], field: str) -> str:
    """`; the row has `choosen` (did you mean `chosen`?)` for the key of `row` no row takes that most likely means the
    missing `field` (`closest_name`), its control and bidi characters escaped (`controls_escaped`: a key is the
    client's text), else ''."""
    takes = _row_fields()
    typed = [key for key in row if isinstance(key, str) and key not in takes and len(key) <= 64]
    close = closest_name(field, typed)
    return f"; the row has `{controls_escaped(close)}` (did you mean `{field}`?)" if close else ""


def _unread_columns(row: Mapping[str, Any]) -> str:
    """`; the row's `system`, `question` are columns no row takes: ...` for a row without `prompt` whose other keys no row
    takes (Intel/orca_dpo_pairs' `question`, Alpaca's `instruction`): its prompt is likely one of them, under a name
    `closest_name` cannot tell (`_typed_instead`). At most 3 named, each escaped and cut as a key is; else ''. The
    `ds.rename_column` shown names the first that holds text (not a question's id, `qid`: 3, nor Alpaca's empty `input`),
    orca's `system` (the system turn beside the prompt) last, as Python reads the name; none for a name cut short."""
    takes = _row_fields()
    unread = [key for key in row if isinstance(key, str) and key not in takes and key not in _OTHER_TYPE_COLUMNS]
    if not unread:
        return ""
    named = ", ".join(f"`{controls_escaped(shorten(key, 64, '...'))}`" for key in unread[:3]) + (", ..." if len(unread) > 3 else "")
    texts = [key for key in unread if len(key) <= 64 and _holds_text(row[key])]
    likely = next((key for key in texts if key != "system"), texts[0] if texts else None)
    rename = f" (`datasets`: ds.rename_column({likely!r}, 'prompt'))" if likely is not None else ""
    one = len(unread) == 1
    return (f"; the row's {named} {'is a column' if one else 'are columns'} no row takes: if "
            f"{'it holds' if one else 'one holds'} the prompt, name it `prompt`{rename}")


def _holds_text(value: Any) -> bool:
    """Whether a column's `value` could be a prompt: visible text, or a list (of messages)."""
    return (isinstance(value, str) and not is_blank(value)) or (isinstance(value, list) and bool(value))


# the columns of TRL's other dataset types (`_OTHER_TRL_TYPES`) that preference datasets carry beside their own
_OTHER_TYPE_COLUMNS = {
    "messages": "SFT's conversation to imitate (HuggingFaceH4/ultrafeedback_binarized's is the chosen one again)",
    "text": "SFT's language-modeling text",
    "completion": "a prompt-completion (SFT) or unpaired preference (KTO) column",
    "label": "KTO's unpaired preference label",
}


def _other_type_column(name: str) -> str:
    return (f"unknown field: {_OTHER_TYPE_COLUMNS[name]}, which no preference row takes: drop it "
            f"(with `datasets`: ds.remove_columns(['{name}']))")

_Messages = list[dict[str, str]]


class _Line(Base):
    """A JSON line of a preference file decoded in one step (msgspec, typed): TRL's columns as text or
    messages, TRL's extra columns as they are, pluralign's in the types `Preference` takes. A line it
    refuses (not an object, a wrong type, a key no row takes) is left to `row_to_preference`."""

    chosen: str | _Messages
    rejected: str | _Messages
    prompt: str | _Messages | msgspec.UnsetType = msgspec.UNSET  # unset: the implicit-prompt form
    user_id: str | int | None | msgspec.UnsetType = msgspec.UNSET  # null: as unset (`_take_user_id`)
    margin: float | None = None
    tie: bool | None = None
    source: str | None = None
    created_at: float | None = None
    attributes: dict[str, str] = {}
    pref_id: str | None = None
    id: Any = msgspec.UNSET
    prompt_id: Any = msgspec.UNSET
    score_chosen: Any = msgspec.UNSET
    score_rejected: Any = msgspec.UNSET
    chosen_rating: Any = msgspec.UNSET
    rejected_rating: Any = msgspec.UNSET
    chosen_model: Any = msgspec.UNSET
    rejected_model: Any = msgspec.UNSET


_LINE_DECODER = msgspec.json.Decoder(_Line)
_TRL_EXTRA_SET = frozenset(TRL_EXTRA_COLUMNS)
_MESSAGE_KEY_SET = frozenset(MESSAGE_KEYS)
_ROLE_SET = frozenset(MESSAGE_ROLES)


def _line_record(raw: bytes, default_user: str | None) -> Preference | None:
    """The record `row_to_preference` reads from the JSON line `raw`, read in one typed decoding, its
    texts looked at by `look_key` and `Preference`'s blank test only (an import's 8,000 lines are
    read holding the interpreter lock; for ASCII text each is one `str.strip`); None for any
    line that is not a good row as it stands (malformed, another type, a blank or repeated answer, ...):
    `row_to_preference` then reads it and names the problem, so every error stays its own."""
    try:
        row = _LINE_DECODER.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    if repeated_key(raw, _line_keys(row)) is not None:  # msgspec kept the last value: `_decode_line` names the key
        return None
    user_id = row.user_id
    if user_id is msgspec.UNSET or user_id is None:  # a null one as datasets' to_json writes a missing user
        user_id = default_user
    elif isinstance(user_id, int):  # never a bool: the typed decoding refuses one
        user_id = str(user_id)
    if user_id is None or not _line_fields_sound(row):
        return None
    prompt, chosen, rejected, trl = row.prompt, row.chosen, row.rejected, None
    if not (isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str)) or _has_extra(row):
        texts = _line_texts(row)
        if texts is None:
            return None
        prompt, chosen, rejected, trl = texts
    if look_key(chosen) == look_key(rejected):  # as feedback reads a pair (docs/api.md "The same answer")
        return None
    try:  # Preference refuses a blank user_id, prompt, chosen or rejected
        return Preference(user_id=user_id, prompt=prompt, chosen=chosen, rejected=rejected, margin=row.margin, tie=bool(row.tie),
                          source=row.source, created_at=row.created_at, attributes=row.attributes, trl=trl, pref_id=row.pref_id)
    except ValueError:
        return None


def _line_fields_sound(row: _Line) -> bool:
    """Whether the line's margin, time and attribute labels are as `row_to_preference` takes them."""
    margin, created_at = row.margin, row.created_at
    if (margin is not None and not 0 <= margin <= MAX_MARGIN) or (created_at is not None and not 0 <= created_at <= MAX_CREATED_AT):
        return False
    if new_pref_id_problem(row.pref_id) is not None:
        return False
    for key in row.attributes:
        if is_blank(key):
            return False
    return True


def _line_texts(row: _Line) -> tuple[str, str, str, TrlRow | None] | None:
    """The prompt, chosen and rejected as text of a line not in the plain form (three strings, no TRL
    extra column), and its TRL form when a plain export would not give it back (messages, the implicit
    prompt, TRL's extra columns); None for a form left to `row_to_preference` (mixed forms, a message with
    another key, no shared prompt, ...). msgspec decodes no lone surrogate (it refuses the escape), so no
    text needs `surrogate_problem`."""
    prompt, chosen, rejected = row.prompt, row.chosen, row.rejected
    has_extra = _has_extra(row)
    # a text prompt beside message answers may be read from them (`prompt_from_answers`); a message prompt beside text never
    from_answers = isinstance(prompt, str) and not isinstance(chosen, str)
    if isinstance(chosen, str) != isinstance(rejected, str) or (isinstance(prompt, list) and isinstance(chosen, str)):
        return None
    for messages in (prompt, chosen, rejected):
        if isinstance(messages, list) and not (messages and all("content" in m and m.keys() <= _MESSAGE_KEY_SET and m.get("role", "user") in _ROLE_SET
                                                                for m in messages)):
            return None
    extra = {k: v for k in TRL_EXTRA_COLUMNS if (v := getattr(row, k)) is not msgspec.UNSET} if has_extra else {}
    if extra and extra_type_problem(extra) is not None:
        return None
    implicit = prompt is msgspec.UNSET
    plain = not implicit and isinstance(chosen, str) and isinstance(prompt, str) and not extra
    trl = None if plain else TrlRow(prompt=None if implicit else prompt, chosen=chosen, rejected=rejected, extra=extra)
    if implicit or from_answers:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
        if not prompt or not chosen or not rejected:
            return None
    return _joined(prompt), _joined(chosen), _joined(rejected), trl


def _line_keys(row: _Line) -> int:
    """The keys of the JSON line `row` was decoded from that are surely there (`repeated_key`'s `kept`):
    each field holding other than its default, the keys of its messages, attributes and TRL columns. A
    key given with its default value (`"margin": null`) is not counted: fewer, never more, than the line
    holds, so such a line only goes to the exact check."""
    unset = msgspec.UNSET
    count = (2 + (row.prompt is not unset) + (row.user_id is not unset)  # chosen and rejected are required
             + (row.margin is not None) + (row.tie is not None) + (row.source is not None) + (row.created_at is not None)
             + (row.pref_id is not None))
    if not (isinstance(row.chosen, str) and isinstance(row.prompt, str)):  # messages (both answers are of one form)
        count += sum(len(message) for texts in (row.prompt, row.chosen, row.rejected) if isinstance(texts, list) for message in texts)
    if row.attributes:
        count += 1 + len(row.attributes)
    if _has_extra(row):
        count += sum(1 + keys_kept(value) for name in TRL_EXTRA_COLUMNS if (value := getattr(row, name)) is not unset)
    return count


def _has_extra(row: _Line) -> bool:
    """Whether the line holds any of TRL's extra columns (TRL_EXTRA_COLUMNS): its TRL form is then kept."""
    unset = msgspec.UNSET
    return not (row.id is unset and row.prompt_id is unset and row.score_chosen is unset and row.score_rejected is unset
                and row.chosen_rating is unset and row.rejected_rating is unset and row.chosen_model is unset and row.rejected_model is unset)


def _check_is_a_preference_row(row: Any, line: int) -> None:
    """A JSON object that is not a line of a user's full export; else PreferenceError."""
    if isinstance(row, list) and all(isinstance(item, dict) for item in row):
        raise _json_array(line, "expected a JSON object, got a ")
    if not isinstance(row, dict):
        raise PreferenceError(line, None, "expected a JSON object")
    if (orient := _pandas_orient(row)) is not None:
        error = PreferenceError(line, None, f"one JSON object holding a whole table, as pandas' DataFrame.to_json writes it "
                                            f"with orient='{orient}': {_PANDAS_LINES}")
        error.skippable = False
        raise error
    if row.get("type") in EXPORT_LINE_TYPES and "tenant" in row:
        raise PreferenceError(line, "type", f"a {row['type']!r} line of a user's full export, which does not import: export "
                                            "the user's preference file instead (`GET /v1/users/{id}/export?format=preferences`)")


_PANDAS_LINES = ("the rows go one JSON object a line (JSON lines): pandas writes them with "
                 "df.to_json(FILE, orient='records', lines=True), or a Parquet file with df.to_parquet(FILE)")


def _pandas_orient(row: dict[str, Any]) -> str | None:
    """The `orient` with which pandas' DataFrame.to_json wrote `row`, a whole table in one object, told by its shape;
    None for another object. `columns` is told from a row whose answers are one message object each (a slip for a
    list of them, a bad row naming `chosen`): every value of a table of columns is an object keyed by the same row
    labels, none of them a message's key."""
    if _table_of_columns(row):
        return "columns"  # to_json's default: {"chosen": {"0": ..., "1": ...}, ...}
    if isinstance(row.get("data"), list) and isinstance(row.get("columns"), list) and "chosen" in row["columns"]:
        return "split"
    if isinstance(row.get("data"), list) and isinstance(row.get("schema"), dict):
        return "table"
    if row and "chosen" not in row and all(isinstance(value, dict) and "chosen" in value for value in row.values()):
        return "index"  # {"0": {"prompt": ..., "chosen": ...}, ...}
    return None


def _table_of_columns(row: dict[str, Any]) -> bool:
    """Whether `row` is pandas' `orient='columns'` JSON of a preference table: {"chosen": {"0": ...}, "rejected":
    {"0": ...}, ...}, every column an object keyed by the same row labels, which are not a message's keys."""
    chosen = row.get("chosen")
    if not isinstance(chosen, dict) or not isinstance(row.get("rejected"), dict) or not _MESSAGE_KEY_SET.isdisjoint(chosen):
        return False
    return all(isinstance(column, dict) and column.keys() == chosen.keys() for column in row.values())


# TRL's dataset types that are not paired preferences, told by their columns (TRL's "Dataset formats"), first match
# wins: a file of one of them sent as preferences is named for what it is rather than as a row missing `chosen`
_OTHER_TRL_TYPES = (
    (("completion", "label"), "TRL's unpaired preference form (prompt, completion, label: KTO's)"),
    (("messages",), "a conversational language-modeling row (SFT's `messages`)"),
    (("completion",), "a prompt-completion row (SFT's)"),
    (("text",), "a language-modeling row (SFT's `text`)"),
)


def _missing_answer(row: dict[str, Any], line: int, field: str) -> PreferenceError:
    """The error for a row without `field` (prompt, chosen or rejected), saying which other TRL type the row
    is when its columns tell."""
    for columns, kind in _OTHER_TRL_TYPES:
        if field != "prompt" and all(c in row for c in columns):
            return PreferenceError(line, field, f"missing required field: the row is {kind}, not a preference; pluralign "
                                                "learns from paired comparisons, a `chosen` and a `rejected` answer to one prompt")
    return PreferenceError(line, field, _missing(row, field))


# a row's prompt in another of TRL's forms than its answers (by whether the prompt is text): TRL judges a row's form by
# any one of its columns (`trl.data_utils.is_conversational` pops one from a set) and joins `prompt + chosen`
# (`apply_chat_template`, the DPO trainer's tokenizing), which fails for text beside a message list; but for a text
# prompt beside conversations that share their opening turns, which `maybe_extract_prompt` reads as implicit
# (`prompt_from_answers`)
_ONE_FORM = ("TRL reads a row in one form, `prompt`, `chosen` and `rejected` all text (standard) or all message lists "
             "(conversational): its trainers join `prompt + chosen` (trl.data_utils.apply_chat_template)")
_MIXED_PROMPT = {
    True: f"is text and `chosen` and `rejected` are message lists that share no opening turn: {_ONE_FORM}, or take the "
          "prompt from the answers' shared opening turns (maybe_extract_prompt), which these have none of; give the prompt "
          'as messages too, [{"role": "user", "content": "..."}]',
    False: f"is a message list and `chosen` and `rejected` are text: {_ONE_FORM}; give each answer as messages too, "
           '[{"role": "assistant", "content": "..."}]',
}


def _check_forms(row: dict[str, Any], line: int, implicit: bool) -> None:
    """PreferenceError unless `row`'s prompt (explicit), chosen and rejected are each there, text or a message list
    `messages_to_text` takes (their null keys dropped), all of one of TRL's forms (a text prompt beside conversations
    sharing opening turns too, `prompt_from_answers`, that prompt UTF-8 text), neither answer only the turns the
    other opens with (`_refuse_only_shared_turns`)."""
    for field in ("chosen", "rejected") if implicit else ("prompt", "chosen", "rejected"):
        if field not in row:
            raise _missing_answer(row, line, field)
        row[field] = _without_null_keys(row[field])
        messages_to_text(row[field], field, line)  # validates the form
    if isinstance(row["chosen"], str) != isinstance(row["rejected"], str):
        raise PreferenceError(line, "rejected", "`chosen` and `rejected` must both be strings or both message lists")
    if not implicit and isinstance(row["prompt"], str) != isinstance(row["chosen"], str) and not prompt_from_answers(row):
        _refuse_only_shared_turns(row, line)
        raise PreferenceError(line, "prompt", _MIXED_PROMPT[isinstance(row["prompt"], str)])
    # the text prompt set aside (`prompt_from_answers`): its record keeps it for the export, which writes it as UTF-8
    if not implicit and isinstance(row["prompt"], str) and isinstance(row["chosen"], list) and (problem := surrogate_problem(row["prompt"])):
        raise PreferenceError(line, "prompt", problem)


def _refuse_only_shared_turns(row: dict[str, Any], line: int) -> None:
    """PreferenceError naming `chosen` or `rejected` when it is a message list of only the turns the other opens with:
    no answer follows the prompt they share (TRL's `extract_prompt` reads an empty prompt and that answer whole)."""
    chosen, rejected = row["chosen"], row["rejected"]
    if not (isinstance(chosen, list) and isinstance(rejected, list)) or len(chosen) == len(rejected):
        return
    field, other = ("chosen", "rejected") if len(chosen) < len(rejected) else ("rejected", "chosen")
    short, longer = row[field], row[other]
    if all(a == b or _message_key(a) == _message_key(b) for a, b in zip(short, longer, strict=False)):
        raise PreferenceError(line, field, f"holds only the turns `{other}` opens with, and no answer after them: a comparison "
                                           "is of two answers that follow the turns they share (the prompt)")


def prompt_from_answers(row: Mapping[str, Any]) -> bool:
    """Whether TRL takes the prompt of `row` (sound message lists, its `prompt` present) from its answers: a text
    `prompt` beside `chosen` and `rejected` conversations that share opening turns, as HuggingFaceH4/ultrafeedback_binarized
    writes them (the prompt as a user turn in each answer); `trl.data_utils.maybe_extract_prompt` sets the text aside
    and extracts the prompt (`extract_prompt`), so the row reads as the implicit form."""
    chosen, rejected = row["chosen"], row["rejected"]
    return isinstance(row["prompt"], str) and isinstance(chosen, list) and isinstance(rejected, list) and bool(extract_prompt(chosen, rejected)[0])


def _take_texts(row: dict[str, Any], line: int, implicit: bool) -> TrlRow:
    """Sets `row`'s prompt, chosen and rejected to their text (the prompt found as the shared prefix in the
    implicit form) and pops TRL's extra columns; returns the row's TRL form as it came (`TrlRow`).
    PreferenceError for a missing, blank or mixed-form text (an explicit prompt of another form than the answers
    too: `_MIXED_PROMPT`), one of TRL's extra columns of another type (`extra_type_problem`), or two answers that
    are the same one."""
    _check_forms(row, line, implicit)
    extra = {k: row.pop(k) for k in TRL_EXTRA_COLUMNS if k in row}
    if (wrong := extra_type_problem(extra)) is not None:
        raise PreferenceError(line, *wrong)
    original = TrlRow(prompt=row.get("prompt"), chosen=row["chosen"], rejected=row["rejected"], extra=extra)
    if implicit or prompt_from_answers(row):
        prompt, chosen, rejected = extract_prompt(row["chosen"], row["rejected"])
        if not prompt:
            _refuse_only_shared_turns(row, line)
            raise PreferenceError(line, "prompt", "missing, and `chosen` and `rejected` share no prompt (implicit-prompt form)"
                                                  + (_typed_instead(row, "prompt") or _unread_columns(row)))
        if not chosen or not rejected:
            raise PreferenceError(line, "rejected", "`chosen` and `rejected` are identical")
    else:
        prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    row["prompt"] = messages_to_text(prompt, "prompt", line)
    row["chosen"] = messages_to_text(chosen, "chosen", line)
    row["rejected"] = messages_to_text(rejected, "rejected", line)
    for field in ("prompt", "chosen", "rejected"):
        if is_blank(row[field]):
            raise PreferenceError(line, field, "has no visible character (only whitespace or zero-width characters)")
        if problem := surrogate_problem(row[field]):
            raise PreferenceError(line, field, problem)
    if look_key(row["chosen"]) == look_key(row["rejected"]):  # one rule with feedback's (docs/api.md "The same answer")
        raise PreferenceError(line, "rejected", "is the same answer as `chosen`: a comparison needs two different answers")
    return original


def _take_other_fields(row: dict[str, Any], line: int, default_user: str | None, unit: Literal["line", "row"]) -> None:
    """Checks `row`'s margin and created_at, and puts its user_id (`default_user` when it has none, a number
    as a string), tie and attributes in the form `Preference` takes; PreferenceError naming the field (`unit`: a
    JSON line's or a table row's, `row_to_preference`)."""
    margin = row.get("margin")
    if isinstance(margin, (int, float)) and not isinstance(margin, bool) and (problem := margin_problem(margin)) is not None:
        raise PreferenceError(line, "margin", problem)
    if (problem := created_at_problem(row.get("created_at"))) is not None:  # Parquet's NaN, JSON's 1e999, -5, 1e300, "2024-05-01"
        raise PreferenceError(line, "created_at", problem)
    if (problem := new_pref_id_problem(row.get("pref_id"))) is not None:
        raise PreferenceError(line, "pref_id", problem)
    _take_user_id(row, line, default_user, unit)
    for field in ("user_id", "source"):
        if isinstance(row.get(field), str) and (problem := surrogate_problem(row[field])):
            raise PreferenceError(line, field, problem)
    for field in ("tie", "attributes"):  # null as `datasets` writes an absent value (margin, source, created_at take it)
        if field in row and row[field] is None:
            del row[field]
    if "attributes" in row:
        row["attributes"] = _attribute_labels(row["attributes"], line)


def _take_user_id(row: dict[str, Any], line: int, default_user: str | None, unit: Literal["line", "row"]) -> None:
    """Puts `row`'s user_id in the form `Preference` takes: `default_user` for none or a null one (`datasets`' to_json
    writes a row's missing user_id so, as to_parquet writes a null), a number as
    a string; PreferenceError naming `user_id` when it has none and `default_user` is None, and when it is a float
    (pandas' NaN, its missing value, named as that), its hint fitting where it came from (`unit`: a JSON line is
    told to write a string, a table's row, whose float ids pandas makes, how to keep them whole)."""
    if row.get("user_id", 0) is None:
        del row["user_id"]
    if "user_id" not in row:
        if default_user is None:
            raise PreferenceError(line, "user_id", _missing(row, "user_id"))
        row["user_id"] = default_user
    if isinstance(row.get("user_id"), int) and not isinstance(row["user_id"], bool):
        row["user_id"] = str(row["user_id"])
    elif isinstance(row.get("user_id"), float) and math.isnan(row["user_id"]):  # a frame's records: read_rows(df) reads it as null
        raise PreferenceError(line, "user_id", "NaN, pandas' missing value, where a user id is text or a whole number: read "
                                               "the DataFrame itself, read_rows(df), which reads it as no user_id (the "
                                               "default user's), or give None")
    elif isinstance(row.get("user_id"), float):  # not read as text: 1.0 may be user 1, or "1.0"
        user_id = row["user_id"]
        whole = user_id.is_integer() and abs(user_id) < 1e16
        meant = f"{user_id:.0f}" if whole else repr(user_id)
        hint = (f"write it as a JSON string, \"{meant}\"" + (f", or a whole number, {meant}" if whole else "") if unit == "line" else
                "pandas makes a column of int ids holding a missing one floats; keep them whole with "
                "df['user_id'].astype('Int64'), or give them as text")
        raise PreferenceError(line, "user_id", f"a float, {user_id!r}, where a user id is text or a whole number: {hint}")


def file_trl(trl: TrlRow | None, chosen: str | None = None) -> TrlRow | None:
    """A stored row's TRL form as a preference file is written with it, so that what the service writes reads again:
    None (the row's own text, TRL's standard form) for one whose messages a reader refuses (`messages_to_text`: a role
    outside MESSAGE_ROLES, which imports of earlier releases stored); one mixing TRL's forms, an explicit prompt of
    another form than its answers (imports of earlier releases stored it), in the conversational form with the same
    text (a text prompt as one `user` message, a text answer as one `assistant` message: one message reads as its
    content, `_joined`), but for a text prompt beside answers it was read from (`prompt_from_answers`: the row's
    `chosen` text, the stored record's, is what follows their shared turns), kept as it came; and with a score or rating held as the text of a number as that number (`"8.5"` as 8.5, not left
    out), without the extra columns a reader still refuses for their type (`extra_type_problem`: a `score_chosen` of
    "high", which earlier releases stored), the rest kept."""
    if trl is None:
        return None
    try:
        for field in ("prompt", "chosen", "rejected"):
            if (messages := getattr(trl, field)) is not None:
                messages_to_text(messages, field, 0)
    except PreferenceError:
        return None
    if trl.prompt is not None and isinstance(trl.prompt, str) != isinstance(trl.chosen, str) and not _read_from_answers(trl, chosen):
        trl = msgspec.structs.replace(trl, prompt=_as_messages(trl.prompt, "user"), chosen=_as_messages(trl.chosen, "assistant"),
                                      rejected=_as_messages(trl.rejected, "assistant"))
    if extra_type_problem(trl.extra) is not None:  # text of a number as that number, then what is still no number left out
        extra = {k: _spelled_number(v) if k in SCORE_COLUMNS or k in RATING_COLUMNS else v for k, v in trl.extra.items()}
        while (wrong := extra_type_problem(extra)) is not None:
            extra = {k: v for k, v in extra.items() if k != wrong[0]}
        trl = msgspec.structs.replace(trl, extra=extra)
    return trl


def _read_from_answers(trl: TrlRow, chosen: str | None) -> bool:
    """Whether `trl`'s prompt was read from its answers (`prompt_from_answers`) when its record, whose chosen text is
    `chosen`, was stored: an older release read such a row's whole conversation as the answer."""
    row = {"prompt": trl.prompt, "chosen": trl.chosen, "rejected": trl.rejected}
    return chosen is not None and prompt_from_answers(row) and _joined(extract_prompt(trl.chosen, trl.rejected)[1]) == chosen


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # RFC 8259's `number`


def _spelled_number(value: Any) -> Any:
    """`value` with the text of a JSON number (`"8.5"`, `" -2 "`: spaces around it dropped) as that number, in lists too
    (as JSON reads it: an int or a float); text spelling none, or a number a file does not hold (`"1e999"`, an integer
    past 64 bits), as it is. What `file_trl` makes of a score an older release stored as text (a CSV's column)."""
    if isinstance(value, list):
        return [_spelled_number(item) for item in value]
    if not isinstance(value, str) or not _JSON_NUMBER.fullmatch(text := value.strip()):
        return value
    try:
        number = _json_decoder.decode(text)
    except msgspec.DecodeError:  # past float's range
        return value
    return number if _kept_value_problem(number, 0) is None else value


def _as_messages(text: str | list[Message], role: str) -> list[Message]:
    """`text` as a one-message list of `role` (whose text is `text`, `_joined`); a message list as it is."""
    return [{"role": role, "content": text}] if isinstance(text, str) else text


def trl_as_compared(trl: TrlRow | None) -> TrlRow | None:
    """A row's TRL form as two rows under one `pref_id` are compared (`trl_difference`), as Hugging Face `datasets`
    writes it back with `to_json`: TRL's extra columns holding null left out, as absent (`datasets` gives every row of
    a file every column some row has, null where the row had none: a user's export with `score_chosen` in one row
    gives it to the others as null), and a form then left plain (a text prompt, text answers, no extra column) as
    None, the plain form's, so such a file imported into its user again finds its rows already stored, not a
    409 naming `line 1.pref_id` ("another form of its TRL columns")."""
    if trl is None or not trl.extra:
        return trl
    extra = {k: v for k, v in trl.extra.items() if v is not None}
    if not extra and isinstance(trl.prompt, str) and isinstance(trl.chosen, str):
        return None
    return msgspec.structs.replace(trl, extra=extra)


def trl_difference(held: TrlRow | None, row: TrlRow | None) -> str | None:
    """How `row`'s TRL form differs from `held`'s, as a file rewritten by `datasets` gives it (`trl_as_compared`, and
    numbers by `same_as_written`): None when it does not; `trl.<column>` (the first by name) when only the value of
    one of TRL's extra columns does, present on one side only counted (`trl.score_chosen`); else `trl` (the prompt,
    the answers or their form). Source: pandas' JSON writer (`Buffer_AppendDoubleUnchecked` in its vendored
    ujson), which `datasets.Dataset.to_json` writes with."""
    held, row = trl_as_compared(held), trl_as_compared(row)
    if held is None and row is None:
        return None
    held, row = held or _plain_like(row), row or _plain_like(held)  # a plain form is a form without extra columns
    if held is None or row is None or (held.prompt, held.chosen, held.rejected) != (row.prompt, row.chosen, row.rejected):
        return "trl"
    absent = object()
    return next((f"trl.{name}" for name in sorted(held.extra.keys() | row.extra.keys())
                 if not same_as_written(held.extra.get(name, absent), row.extra.get(name, absent))), None)


def _plain_like(trl: TrlRow) -> TrlRow | None:
    """`trl` without its extra columns when that is the plain form (a text prompt and answers), else None."""
    plain = isinstance(trl.prompt, str) and isinstance(trl.chosen, str)
    return msgspec.structs.replace(trl, extra={}) if plain else None


def same_as_written(a: Any, b: Any) -> bool:
    """Whether two values of one of TRL's extra columns are the same once `to_json` has written one: equal, or
    numbers no further apart than it rounds (`TRL_FLOAT_DECIMALS` decimals, 0.12345678915 as 0.1234567892 by its own
    floating-point rounding; 10 significant digits past 1e16: 1.2345678912345e20 as 1.234567891e+20; an integer
    column with a null read back as floats: 3 as 3.0), in lists and objects item by item. Two scores really apart
    by less than 1e-10 are the same so."""
    if _number(a) and _number(b) and (isinstance(a, float) or isinstance(b, float)):
        largest = max(abs(a), abs(b))
        if not math.isfinite(largest):
            return a == b
        # what writing loses: half the last decimal written, plus the float read back (its ulp; ujson's arithmetic)
        return abs(a - b) <= (1e-9 * largest if largest > 1e16 else 10.0 ** -TRL_FLOAT_DECIMALS + 2 * math.ulp(largest))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_as_written, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_as_written(a[k], b[k]) for k in a)
    return a == b


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


TRL_FLOAT_DECIMALS = 10  # pandas' to_json default `double_precision`, which `datasets.Dataset.to_json` writes with


def preference_row(record: Preference) -> dict[str, Any]:
    """The row a file gets: TRL's columns in the form the record came in (see `TrlRow`), TRL's
    extra columns, then pluralign's (`user_id`, `margin`, `tie`, `source`, `created_at`, `attributes`, and `pref_id`
    when the record has one)."""
    trl = record.trl
    row: dict[str, Any] = {"user_id": record.user_id}
    if trl is None:
        row.update(prompt=record.prompt, chosen=record.chosen, rejected=record.rejected)
    else:
        if trl.prompt is not None:
            row["prompt"] = trl.prompt
        row.update(chosen=trl.chosen, rejected=trl.rejected, **trl.extra)
    row.update(margin=record.margin, tie=record.tie, source=record.source, created_at=record.created_at, attributes=dict(record.attributes))
    if record.pref_id is not None:
        row["pref_id"] = record.pref_id
    return row


def _field_of(message: str) -> str | None:
    if " - at `$." in message:
        return message.split(" - at `$.")[1].rstrip("`")
    if "Object contains unknown field `" in message:
        return message.split("`")[1]
    if "Object missing required field `" in message:
        return message.split("`")[1]
    return None


def _collect(rows: Iterable[tuple[int, Any]], skip_bad: bool, default_user: str | None = None,
             unit: Literal["line", "row"] = "line", records_ready: bool = False) -> tuple[list[Preference], LoadReport]:
    """The records of numbered `rows` (`unit`: what the numbers count, named by each error);
    `records_ready`: rows may be records already read (`_numbered_rows`'s; never a caller's own rows)."""
    records: list[Preference] = []
    errors: list[str] = []
    lines: list[int] = []
    skipped = 0
    for line, row in rows:
        if records_ready and type(row) is Preference:
            records.append(row)
            lines.append(line)
            continue
        try:
            if isinstance(row, _Malformed):
                raise row.error
            records.append(row_to_preference(row, line, default_user, unit=unit))
            lines.append(line)
        except PreferenceError as exc:
            exc.unit = unit
            if not skip_bad:
                raise
            skipped += 1
            if len(errors) < 20:
                errors.append(str(exc))
    return records, LoadReport(loaded=len(records), skipped=skipped, errors=errors, lines=lines, unit=unit)


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> tuple[str | None, str]:
    """(the top-level field holding the bad bytes, if the line parses without them; the problem)."""
    try:  # msgspec's position is within one string value: the line's own first bad byte is wanted
        raw.decode("utf-8")
    except UnicodeDecodeError as whole:
        exc = whole
    problem = f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)"
    try:  # lone surrogates stand for the bad bytes: find the field whose value holds one
        row = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None, problem
    bad = lambda text: any("\udc80" <= c <= "\udcff" for c in text)  # noqa: E731
    if isinstance(row, dict):
        for key, value in row.items():
            if bad(key) or bad(json.dumps(value, ensure_ascii=False)):
                return (None if bad(key) else key), problem
    return None, problem


def utf16_like(raw: bytes) -> bool:
    """Whether bytes read as UTF-16 (or UTF-32) text of mostly ASCII: a UTF-16 byte order mark opens them, or
    every other byte of their start is NUL. How an import's line and a JSON route's body sent without their
    charset are told from bytes that are merely not JSON (`service.strict`), so the error says to send UTF-8."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    sample = raw[:64].rstrip(b"\n")
    return len(sample) >= 4 and any(half and half.count(0) >= 0.9 * len(half) for half in (sample[0::2], sample[1::2]))


def _decode_line(number: int, raw: bytes) -> Any:
    """One JSON line; a line that is not JSON (or nested too deeply to decode) or not UTF-8 raises
    PreferenceError naming it (and the field), and so does a key given twice in one object of it: msgspec keeps
    the last value, another reader (a gateway's log, jq, a first-wins library) may keep the first."""
    try:
        row = _json_decoder.decode(raw)
        if (field := repeated_key(raw, keys_kept(row))) is not None:
            raise PreferenceError(number, field, "given 2 times in one JSON object; give it once")
        return row
    except msgspec.DecodeError as exc:
        if (hint := _malformed_hint(raw, str(exc))) is None:
            raise _json_array(number, f"malformed JSON ({exc}); it opens a ") from None
        if not hint and (constant := _non_json_constant(raw)) is not None:
            raise PreferenceError(number, constant[0], f"`{constant[1]}` is not JSON (Python's json.dumps writes a float NaN or "
                                  "infinity so; pandas' to_json writes null): write null, or leave the field out, for no value") from None
        if not hint and (lone := lone_surrogate_escape(raw)) is not None:
            raise PreferenceError(number, _top_field_at(raw, lone[0]), lone_surrogate_problem(lone[1], lone[0] + 1)) from None
        if not hint and str(exc).startswith("Number out of range") and (far := _out_of_range_number(raw)) is not None:
            raise PreferenceError(number, far[0], f"{far[1]} is out of range: no 64-bit float holds it (at most about "
                                                  "1.8e308 either side of 0)") from None
        error = PreferenceError(number, None, f"malformed JSON ({exc}){hint}")
        error.skippable = not hint.startswith("; a CSV file")  # skipped, the header leaves rows of CSV: none would read
        raise error from None
    except UnicodeDecodeError as exc:
        field, problem = _not_utf8(raw, exc)
        raise PreferenceError(number, field, problem) from None
    except RecursionError:  # nested deeper than the untyped decoder goes: a malformed line like any other
        raise PreferenceError(number, None, "malformed JSON (nested too deeply)") from None


def _malformed_hint(raw: bytes, problem: str) -> str | None:
    """What a line that is not JSON (`problem`: msgspec's words) most likely is, said after the error
    ("; it starts with a byte order mark ..."), "" when nothing is recognised, None for a JSON array
    (`_json_array` says that)."""
    if raw.startswith(b"PAR1"):  # a Parquet body: files are told by this magic, a body is JSON lines only
        return "; a Parquet file: `pluralign data import --source parquet --path FILE` sends its rows"
    if raw.startswith(b"\x1f\x8b"):  # a `.jsonl.gz` body (HH-RLHF's form): a file is decompressed by this magic, a body is not
        return ("; gzip-compressed (it starts with gzip's magic bytes): send the JSON lines uncompressed (`gunzip -c FILE`), "
                "or let `pluralign data import --source jsonl --path FILE` send its rows")
    if utf16_like(raw):
        return "; it looks UTF-16 encoded (NUL bytes between characters): save the file as UTF-8"
    if b"\0" in raw:
        return "; it holds NUL bytes: a binary file, not JSON lines"
    if raw.strip() == b"{":
        return "; a JSON object spread over several lines: JSON lines keep each row on one line (`jq -c . FILE` writes them so)"
    if raw.lstrip().startswith(b"["):
        return None
    if _csv_header(raw):
        return ("; a CSV file (its header row names `chosen` and `rejected`): pluralign reads JSON lines or Parquet; "
                "pandas.read_csv(FILE).to_json(OUT, orient='records', lines=True) writes JSON lines")
    if "trailing characters" in problem and _JOINED_BY_CR.search(raw):
        return ("; several JSON objects on one line, separated by a lone carriage return (`\\r`, old Mac line ends): "
                "JSON lines end each row with `\\n` (`tr '\\r' '\\n' < FILE` rewrites them so)")
    if "trailing characters" in problem and _JOINED_OBJECTS.search(raw):
        return ("; several JSON objects on one line: each row goes on its own line (`curl -d @FILE` drops a file's "
                "newlines: send it with `--data-binary @FILE`)")
    if raw.startswith(b"\xef\xbb\xbf"):
        return "; it starts with a byte order mark (U+FEFF): save the file as UTF-8 without one"
    return ""


def _csv_header(raw: bytes) -> bool:
    """Whether the line is a CSV (or TSV) header naming the `chosen` and `rejected` columns (pandas' to_csv, a
    spreadsheet's export), as a preference table saved as CSV starts. A JSON object is none, whatever its text lists
    between commas ("good, chosen, rejected"): its own problem (a NaN, rows joined on one line) is named."""
    head = raw[:4096].removeprefix(codecs.BOM_UTF8)
    if head.lstrip().startswith(b"{"):
        return False
    cells = {cell.strip().strip(b'"').strip() for cell in re.split(rb"[,;\t]", head)}
    return {b"chosen", b"rejected"} <= cells


_JOINED_OBJECTS = re.compile(rb"}\s*{")
_JOINED_BY_CR = re.compile(rb"}[ \t]*\r[ \t\r]*{")  # rows ended by a lone `\r`: one JSON line to a `\n` splitter


def _non_json_constant(raw: bytes) -> tuple[str | None, str] | None:
    """The top-level field holding it (None: the line is no object) and the word (`NaN`, `Infinity`, `-Infinity`)
    of the first non-JSON number in `raw` that Python's `json` reads, as its `dumps` writes one; None when the
    line holds none."""
    found: list[str] = []

    def constant(word: str) -> float:
        found.append(word)
        return float(word)

    try:
        row = json.loads(raw.decode("utf-8"), parse_constant=constant)
    except (ValueError, RecursionError):
        return None
    if not found:
        return None
    # the field holding the first constant: keys come in the line's order, and a constant may sit inside a field's
    # value (`attributes`, a message list), so the first field whose value holds any is where found[0] is
    try:
        fields = [key for key, value in row.items() if _holds_non_finite(value)] if isinstance(row, dict) else []
    except RecursionError:  # nested as deep as json reads: the field unnamed
        fields = []
    return (fields[0] if fields else None), found[0]


_OUT_OF_RANGE = object()  # where `_out_of_range_number` read a number no float holds


def _out_of_range_number(raw: bytes) -> tuple[str | None, str] | None:
    """(the dotted path of the field holding it, `attributes.age`, `chosen[0].content`: None where the line is no object;
    its text) of the first number in the JSON line `raw` that no float holds (`1e400`: JSON, whose range RFC 8259 leaves
    to the reader; msgspec refuses it, "Number out of range"); None when the line holds none or is not JSON."""
    found: list[str] = []

    def number(text: str) -> Any:
        if math.isfinite(value := float(text)):
            return value
        found.append(text)
        return _OUT_OF_RANGE

    try:
        row = json.loads(raw.decode("utf-8"), parse_float=number)
        path = _path_to(row, _OUT_OF_RANGE) if found else None
    except (ValueError, RecursionError):
        return None
    return None if path is None else (path.removeprefix(".") or None, found[0])


def _path_to(value: Any, target: object) -> str | None:
    """The dotted path (`a.b[2]`; "" for `value` itself) of the first place `target` sits in `value`, JSON's
    objects and arrays in their order; None where it is not there."""
    if value is target:
        return ""
    members = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, member in members:
        if (rest := _path_to(member, target)) is not None:
            head = f"[{key}]" if isinstance(key, int) else f".{key}"
            return head + rest
    return None


def _holds_non_finite(value: Any) -> bool:
    """Whether a value Python's `json` read holds a NaN or an infinity, at any depth."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(map(_holds_non_finite, value))


def _top_field_at(raw: bytes, offset: int) -> str | None:
    """The top-level field of the JSON object line `raw` whose value holds byte `offset` (None: none
    does, or the line is no object). Python's `json` reads lone surrogate escapes that msgspec refuses."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(row, dict):
        return None
    for key, value in row.items():
        if surrogate_problem(key):
            return None
        if surrogate_problem(json.dumps(value, ensure_ascii=False)):
            return key
    return None


def _json_array(line: int, before: str = "") -> PreferenceError:
    """A line holding (or opening) a JSON array: the file is one JSON document, not JSON lines. Not
    `skippable`: a hint at skipping bad rows would not help, every line of such a file is one."""
    error = PreferenceError(line, None, f"{before}JSON array: the rows go one JSON object a line (JSON lines); "
                                        "`jq -c '.[]' FILE.json > FILE.jsonl` writes an array's objects so")
    error.skippable = False
    return error


MAX_LINE_BYTES = 16 << 20  # a line of a preference file past this is no row (the service takes 1 MB bodies): refused unread
GZIP_MAGIC = b"\x1f\x8b"  # a gzip file's first bytes: JSON lines as Hugging Face datasets ship them (Anthropic's HH-RLHF `train.jsonl.gz`)


def _numbered_rows(lines: Iterable[bytes], default_user: str | None = None) -> Iterable[tuple[int, Any]]:
    """(line number, row) of JSON lines, blank lines skipped (still counted); a good row already its
    record (`_line_record`, for `_collect(records_ready=True)`); a line that is not a row is a
    `_Malformed` naming its number. A UTF-8 byte order mark opening line 1 (the file's first bytes: Notepad and
    PowerShell's `Out-File -Encoding utf8` write one) is read past, as RFC 8259 lets a parser and the service's
    JSON routes do; one anywhere else is a malformed line."""
    for number, raw in enumerate(lines, start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue
        if (record := _line_record(raw, default_user)) is not None:
            yield number, record
            continue
        try:
            yield number, _decode_line(number, raw)
        except PreferenceError as exc:
            yield number, _Malformed(exc)


def _source(path: Path) -> Path | bytes:
    """What a preference file is read from: its path, or for a stream read once (a pipe: `--path <(zcat f)`,
    `--path /dev/stdin`) its bytes, read now, so that telling its format by its first bytes loses none."""
    with open(path, "rb") as f:
        return path if f.seekable() else f.read()


def _open(source: Path | bytes) -> IO[bytes]:
    return open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)


def _head(source: Path | bytes, n: int) -> bytes:
    with _open(source) as f:
        return f.read(n)


def _bounded_lines(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of `f`, each read at most MAX_LINE_BYTES (and its newline) at a time: a longer line is
    a PreferenceError naming it, raised before the rest of it is read (a gzip file of a few MB can hold
    gigabytes of one line)."""
    for number in itertools.count(1):
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            error = PreferenceError(number, None, f"longer than {MAX_LINE_BYTES >> 20} MiB, past any preference row (not JSON "
                                                  "lines, or a compressed file made to fill memory); nothing past it was read")
            error.skippable = False
            raise error
        yield line


def _gzip_damage(source: Path | bytes) -> str | None:
    """Why a gzip file cannot be read to its end (cut short, a changed byte its checksum finds), or None."""
    try:
        with _open(source) as raw, gzip.open(raw, "rb") as f:  # gzip closes no file object it is given
            while f.read(1 << 20):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        return str(exc) or type(exc).__name__
    return None


def _jsonl_rows(source: Path | bytes, default_user: str | None = None) -> Iterable[tuple[int, Any]]:
    """(line number, row) of a JSON lines file (`_source`), gzip-compressed or not (told by its first bytes)."""
    number = 0
    try:
        with _open(source) as raw:  # opened once: gzip closes no file object it is given
            compressed = raw.read(2) == GZIP_MAGIC
            checked = not compressed  # whether the whole stream was found sound (once: the file may hold many bad rows)
            raw.seek(0)  # a file, or a stream's bytes (`_source`): either seeks
            with gzip.open(raw, "rb") if compressed else contextlib.nullcontext(raw) as f:
                for number, row in _numbered_rows(_bounded_lines(f), default_user):
                    if not checked and isinstance(row, _Malformed):  # garbage out of a damaged stream is no bad row to skip
                        damage = _gzip_damage(source)
                        if damage is not None:
                            raise _not_whole_gzip(number, damage)
                        checked = True
                    yield number, row
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # cut short by a crash or a copy, or damaged
        raise _not_whole_gzip(number + 1, str(exc) or type(exc).__name__) from None


def _not_whole_gzip(line: int, why: str) -> PreferenceError:
    error = PreferenceError(line, None, f"not a whole gzip file (truncated or damaged: {why}); the lines before it were read")
    error.skippable = False
    return error


def _parquet_row(line: int, row: dict[str, Any], json_columns: frozenset[str]) -> dict[str, Any] | _Malformed:
    """A Parquet row as a JSON row: nulls dropped but TRL's extra columns' (kept with the row, as a JSON
    line keeps them: a column null in every row, or in the first, stays in its place in an export); columns
    of JSON text (Arrow's `arrow.json` extension type, which Hugging Face `datasets` writes for its `Json`
    feature) decoded; attributes of an Arrow map (older files) as key/value pairs (this module's form, read as labels by `_attribute_labels`);
    messages without the null keys Arrow gives absent ones."""
    row = {k: v for k, v in row.items() if v is not None or k in _TRL_EXTRA_SET}
    for name in json_columns & row.keys():
        if row[name] is None:  # Arrow's null in a kept extra column (the row has no value there): no JSON text to decode
            continue
        try:
            row[name] = _json_decoder.decode(row[name])
        except (*DECODE_ERRORS, RecursionError):
            return _Malformed(PreferenceError(line, name, "malformed JSON text in a JSON column"))
        if row[name] is None:  # JSON's null: as absent as Arrow's
            del row[name]
    attributes = row.get("attributes")
    if isinstance(attributes, list):  # an Arrow map's entries are (key, value) tuples: read as pairs, by the same rules
        row["attributes"] = [{"key": a[0], "value": a[1]} if isinstance(a, tuple) else a for a in attributes]
    for field in ("prompt", "chosen", "rejected"):
        if field in row:
            row[field] = _without_null_keys(row[field])
    return row


def _without_null_keys(messages: Any) -> Any:
    """A message list without the keys whose value is null: absent, as Arrow gives a key some other message
    of the file has (`datasets` writes them so to JSON lines too: `"name": null`). Anything else as it is."""
    if not isinstance(messages, list):
        return messages
    return [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]


class _Malformed:
    """A line that is not JSON (or not UTF-8): its error, raised unless bad rows are skipped."""

    def __init__(self, error: PreferenceError):
        self.error = error


def read_preferences(
    path: str | os.PathLike, *, skip_bad: bool = False, default_user: str | None = None
) -> tuple[list[Preference], LoadReport]:
    """Load a `.jsonl` or `.parquet` preference file in any TRL preference form (see
    `row_to_preference`). Parquet is told by its content (the `PAR1` magic bytes), whatever the
    name, and so is an Arrow IPC file (`_arrow_file`: a `datasets` cache file or save_to_disk shard); anything else is read as JSON lines, gzip-compressed (`.jsonl.gz`) or not. A pipe (`--path <(zcat f)`,
    `/dev/stdin`) is read once, whole, before its format is told. A folder that Hugging Face `Dataset.save_to_disk`
    wrote is read as its rows (`_saved_dataset`; a `DatasetDict`'s is an error naming its splits). Raises
    FileNotFoundError when there is no file, IsADirectoryError for another folder, PreferenceError naming the file on the first bad row (unless
    `skip_bad`) or when it holds no row."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "no preference file there", str(path))
    saved = _saved_dataset(path) if path.is_dir() else None
    source = path if path.is_dir() else _source(path)  # a folder: a Parquet dataset's (pyarrow reads it), else IsADirectoryError
    unit: Literal["line", "row"] = "line"
    ready = False
    if saved is not None:
        unit, rows = "row", _table_rows(saved)
    elif path.suffix == ".parquet" or _head(source, 4) == b"PAR1":
        unit = "row"
        try:
            table = pq.read_table(source if isinstance(source, Path) else pa.BufferReader(source))
        except pa.ArrowException as exc:  # cut short by a crash or a copy, or another format under the name
            raise PreferenceError(0, None, f"not a whole Parquet file (truncated or another format): {exc}", path=str(path)) from None
        rows: Iterable[tuple[int, Any]] = _table_rows(table)
    elif path.suffix == ".arrow" or _head(source, 8).startswith(ARROW_MAGIC):
        unit, rows = "row", _table_rows(_not_indices(_arrow_file(source, path), path))
    else:
        rows, ready = _jsonl_rows(source, default_user), True

    try:
        records, report = _collect(rows, skip_bad, default_user, unit, records_ready=ready)
    except PreferenceError as exc:
        exc.path = str(path)
        raise
    if not records:
        raise PreferenceError(0, None, _nothing_read(report), path=str(path))
    return records, report


# an Arrow IPC stream opens with the continuation marker (`datasets` keeps a set in such `.arrow` files: its cache
# files, a save_to_disk folder's shards), the file format with "ARROW1"
ARROW_MAGIC = (b"\xff\xff\xff\xff", b"ARROW1")


def _arrow_file(source: Path | bytes, path: Path, name: str = "") -> pa.Table:
    """The rows of an Arrow IPC file, stream or file format (`Dataset.cache_files`, `pa.ipc.new_file`, a save_to_disk
    folder's shards: `_arrow_streams`), read with pyarrow alone; PreferenceError naming `path` (and the file `name` in
    it) for one cut short or of another format: a binary file read as JSON lines would be "malformed JSON" on every
    line, and skipping them reads nothing."""
    open_ipc = pa.ipc.open_file if _head(source, 6) == ARROW_MAGIC[1] else pa.ipc.open_stream
    try:
        with pa.memory_map(str(source)) if isinstance(source, Path) else pa.BufferReader(source) as buffer:
            return open_ipc(buffer).read_all()
    except (pa.ArrowException, OSError) as exc:  # pyarrow's IO errors (a file cut short) are OSErrors
        raise PreferenceError(0, None, f"{name}not a whole Arrow file (truncated or another format): {exc}",
                              path=str(path)) from None


def _not_indices(table: pa.Table, path: Path) -> pa.Table:
    """`table`, unless it is the indices mapping `datasets` writes beside a set it filters, selects or shuffles (one
    integer column, `indices`: which rows of the set's other `.arrow` file it keeps), whose rows, read as preference
    rows, would each be a bad row missing `chosen`: PreferenceError saying what the file is."""
    if table.column_names == ["indices"] and pa.types.is_integer(table.schema.field(0).type):
        raise PreferenceError(0, None, "an indices mapping of a filtered, selected or shuffled `datasets` set (which rows "
                              "of its other .arrow file it keeps), not preference rows: give the folder the set's "
                              "save_to_disk writes", path=str(path))
    return table


def _saved_dataset(folder: Path) -> pa.Table | None:
    """The rows of a folder Hugging Face `datasets` wrote with `Dataset.save_to_disk` (its `state.json` lists the
    Arrow stream files holding them, in order, and, as `datasets` before 2.0 wrote it, an indices mapping: the rows
    it keeps), read with pyarrow alone; None for any other folder. A
    `DatasetDict`'s folder (`dataset_dict.json`: one folder per split) raises PreferenceError naming its splits,
    a state or Arrow file that cannot be read one naming that file."""
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = [str(split) for split in json.loads((folder / "dataset_dict.json").read_text())["splits"]]
        except (ValueError, KeyError, TypeError):
            splits = []
        example = f" ({folder / splits[0]})" if splits else ""
        raise PreferenceError(0, None, f"a Hugging Face DatasetDict saved with save_to_disk (splits: {', '.join(splits) or 'none'}): "
                              f"give one split's folder{example}", path=str(folder))
    if not (folder / "state.json").is_file():
        return None
    try:
        state = json.loads((folder / "state.json").read_text())
        names = _saved_file_names(state["_data_files"])
        # datasets before 2.0 saved a filtered, selected or shuffled Dataset whole, with the rows it keeps (in its order)
        # as an indices mapping; load_from_disk gives those rows
        index_names = _saved_file_names(state.get("_indices_data_files") or [])
    except (ValueError, KeyError, TypeError) as exc:
        raise PreferenceError(0, None, f"state.json is not the state `datasets` save_to_disk writes ({exc})", path=str(folder)) from None
    table = _arrow_streams(folder, names)
    if table is None or not index_names:
        return table
    indices = _arrow_streams(folder, index_names)
    try:
        return table.take(indices.column(0))
    except (pa.ArrowException, IndexError, AttributeError) as exc:  # no column, an index past the rows, not integers
        raise PreferenceError(0, None, f"{index_names[0]}: not an indices mapping of the dataset's rows ({exc})", path=str(folder)) from None


def _saved_file_names(entries: Any) -> list[str]:
    """The file names of a save_to_disk state's `_data_files` (or `_indices_data_files`); ValueError, KeyError or
    TypeError for anything else, a path out of the folder too."""
    names = [entry["filename"] for entry in entries]
    if not all(isinstance(name, str) and name and Path(name).name == name for name in names):
        raise ValueError("a data file is not a file name in the folder")
    return names


def _arrow_streams(folder: Path, names: list[str]) -> pa.Table | None:
    """The Arrow stream files `names` in `folder`, one table (None for no file); PreferenceError naming a file that
    is not a whole Arrow file (`_arrow_file`)."""
    tables = [_arrow_file(folder / name, folder, f"{name}: ") for name in names]
    return pa.concat_tables(tables) if tables else None


def _table_rows(table: pa.Table) -> Iterator[tuple[int, Any]]:
    """(row number from 1, row as JSON) of an Arrow table, read as a Parquet file's rows are: its decimals as floats
    (`_decimals_as_floats`). A generator: what its reading raises (PreferenceError for a column's name that is not
    UTF-8, a byte of the file's schema changed) is raised where the rows are read, which names the file."""
    try:
        table.column_names  # noqa: B018 (pyarrow decodes each name here: not UTF-8, none of the rows can be read)
    except UnicodeDecodeError as exc:
        raise PreferenceError(0, None, f"a column's name is not valid UTF-8 ({_bad_byte_at(exc, 'it')}: "
                                       f"`{shorten(exc.object.decode('utf-8', 'backslashreplace'), 67, '...')}`)") from None
    json_columns = frozenset(
        f.name for f in table.schema if isinstance(f.type, pa.BaseExtensionType) and f.type.extension_name == "arrow.json"
    )
    schema = pa.schema([f.with_type(_decimals_as_floats(f.type)) for f in table.schema], metadata=table.schema.metadata)
    if not schema.equals(table.schema):
        table = table.cast(schema)
    try:
        rows = table.to_pylist()
    except UnicodeDecodeError:  # a text holding bytes that are not UTF-8 (Parquet and Arrow files keep them unchecked)
        yield from _rows_one_by_one(table, json_columns)
        return
    yield from ((i, _parquet_row(i, row, json_columns)) for i, row in enumerate(rows, start=1))


def _bad_byte_at(exc: UnicodeDecodeError, what: str) -> str:
    """Where `exc`'s first byte that is not UTF-8 is: "byte 0xff at byte 3 of `what`" (counted from 1)."""
    return f"byte 0x{exc.object[exc.start]:02x} at byte {exc.start + 1} of {what}"


def _rows_one_by_one(table: pa.Table, json_columns: frozenset[str]) -> Iterator[tuple[int, Any]]:
    """`_table_rows` of a table holding a text that is not UTF-8, one value at a time: such a row is malformed,
    naming its column (refused, or skipped with the other bad rows), the others read as they are."""
    for i in range(table.num_rows):
        row: dict[str, Any] = {}
        for j, name in enumerate(table.column_names):  # by position: a name given 2 times (an Arrow table) is no KeyError
            try:
                row[name] = table.column(j)[i].as_py()
            except UnicodeDecodeError as exc:
                yield i + 1, _Malformed(PreferenceError(i + 1, name, f"is not valid UTF-8 ({_bad_byte_at(exc, 'a text in it')})"))
                break
        else:
            yield i + 1, _parquet_row(i + 1, row, json_columns)


def _decimals_as_floats(kind: pa.DataType) -> pa.DataType:
    """`kind` with Arrow's decimals (`decimal32` to `decimal256`: a SQL `NUMERIC` column, a pandas column of
    `decimal.Decimal`) as float64, in lists and structs too, as JSON reads such a number and `datasets` reads a
    JSON file's: a row's `decimal.Decimal` is no number to `row_to_preference` (a decimal score, rating or
    `created_at` would make the row bad: "must be a number ..., got Decimal('8.50')"). Any other type as it is."""
    if pa.types.is_decimal(kind):
        return pa.float64()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        value = _decimals_as_floats(kind.value_type)
        if value == kind.value_type:
            return kind
        field = kind.value_field.with_type(value)
        if pa.types.is_fixed_size_list(kind):
            return pa.list_(field, kind.list_size)
        return pa.large_list(field) if pa.types.is_large_list(kind) else pa.list_(field)
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return pa.struct([f.with_type(_decimals_as_floats(f.type)) for f in fields])
    return kind


def read_rows(rows: Any, *, skip_bad: bool = False, default_user: str | None = None) -> tuple[list[Preference], LoadReport]:
    """`read_preferences` for rows already in memory, in any TRL preference form: a Hugging Face
    `datasets.Dataset` (one split: `dataset_dict["train"]`), a pandas DataFrame, a pyarrow Table, or
    any iterable of row dicts. Rows are read as a Parquet file's are: a null is an absent value
    (`datasets` gives every row every column some row has), attributes are labels or key/value pairs
    (pluralign's own Parquet export, read back by `datasets`). `LoadReport.lines[i]` is the row, from
    1, of `records[i]`. Raises TypeError for a path or text (read it with `read_preferences`) and for
    a mapping (a `DatasetDict`, whose iteration gives its split names), and PreferenceError naming the
    row and field of the first bad row (unless `skip_bad`) or when there is no row."""
    if isinstance(rows, str | bytes | os.PathLike):
        raise TypeError("`rows` is a path or text, not rows: read a file with read_preferences(path)")
    if isinstance(rows, Mapping):
        raise TypeError(f"`rows` is a mapping ({', '.join(map(str, list(rows)[:4]))}): a DatasetDict's splits or one row; "
                        "pass one split (rows['train']) or a list of rows")
    if hasattr(rows, "columns") and hasattr(rows, "to_dict") and not isinstance(rows, pa.Table):  # pandas: NaN and None as nulls
        rows = pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, pa.Table):
        numbered = _table_rows(rows)
    else:
        numbered = ((i, _parquet_row(i, _native(row), frozenset()) if isinstance(row, Mapping) else row) for i, row in enumerate(rows, start=1))
    records, report = _collect(numbered, skip_bad, default_user, "row")
    if not records:
        raise PreferenceError(0, None, _nothing_read(report))
    return records, report


def _native(row: Mapping) -> dict[str, Any]:
    """`row` with its numpy scalars (np.int64, np.float32, np.bool_, ...: a row built from numpy arrays) as the Python
    numbers and booleans they hold, as a DataFrame's row is read (through Arrow); other values as they are."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}


def _nothing_read(report: LoadReport) -> str:
    """Why a load kept no record: no row at all, or only bad rows (skipped, yet nothing is left to use)."""
    if not report.skipped:
        return "holds no preference rows"
    return f"no row could be read: all {report.skipped} rows are bad (first: {report.errors[0]})"


def json_lines(body: bytes) -> list[bytes]:
    """The JSON lines of `body` as the file readers see a file's (`read_preferences`): a line ends at `\\n`
    only, a `\\r` before it stays (whitespace to JSON: Windows line ends read), and a lone `\\r`, U+2028,
    U+2029 or U+0085 ends none (`bytes.splitlines` ends a line at a lone `\\r`, which JSON takes between tokens).
    A UTF-8 byte order mark opening the body is dropped (`_numbered_rows`)."""
    return body.removeprefix(codecs.BOM_UTF8).split(b"\n")


def read_preference_lines(
    lines: Iterable[bytes], *, skip_bad: bool = False, default_user: str | None = None
) -> tuple[list[Preference], LoadReport]:
    """`read_preferences` for JSON lines already in memory (an HTTP body: `json_lines` splits it as a file's)."""

    records, report = _collect(_numbered_rows(lines, default_user), skip_bad, default_user, records_ready=True)
    if not records:
        raise PreferenceError(0, None, "no preference rows" if not report.skipped else _nothing_read(report))
    return records, report


def write_jsonl(records: Iterable[Preference], path: str | os.PathLike) -> int:
    """Write `preference_row`s atomically (temp file + rename), so a crash never leaves half a file."""
    count = 0
    with atomic_writer(path) as f:
        for record in records:
            f.write(_json_encoder.encode(preference_row(record)))
            f.write(b"\n")
            count += 1
    return count


# pluralign's columns have fixed types; TRL's (strings or message lists) and its extras are inferred
PARQUET_TYPES = {
    "user_id": pa.string(),
    "margin": pa.float64(),
    "tie": pa.bool_(),
    "source": pa.string(),
    "created_at": pa.float64(),
    # key/value pairs, not an Arrow map: Hugging Face `datasets` has no feature type for maps
    "attributes": pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])),
}


def _kind(value: Any) -> str | None:
    """What a column's value is, in words (None for a missing one, which any column takes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "text" if isinstance(value, str) else "a list" if isinstance(value, list) else "an object"


def _mixed_column(name: str, values: list[Any], exc: Exception, places: Sequence[str] | None = None) -> str:
    """Why Arrow could not make one column of `values`: TRL's forms (text beside messages) for its
    text columns, else the kinds of value; either way the first record of each of two kinds, named by `places`
    (where each record came from: "line 3 of --path") or else as `record N` (from 1); JSON lines keep each row as it
    came, so they are the way out."""
    where = (lambda i: places[i - 1]) if places is not None else (lambda i: f"record {i}")
    if name in ("prompt", "chosen", "rejected"):
        text = next(i for i, value in enumerate(values, 1) if isinstance(value, str))
        messages = next(i for i, value in enumerate(values, 1) if isinstance(value, list))
        return (f"column `{name}` mixes forms across records (text and messages): text ({where(text)}) and messages "
                f"({where(messages)}); write them to separate files, or write JSON lines (`.jsonl`), which keep each row's form")
    seen: dict[str, int] = {}
    for i, value in enumerate(values, 1):
        kind = _kind(value)
        if kind is not None:
            seen.setdefault(kind, i)
        if len(seen) == 2:
            (a, i_a), (b, i_b) = seen.items()
            return (f"column `{name}` holds {a} ({where(i_a)}) and {b} ({where(i_b)}): one Parquet column has one type; "
                    "write JSON lines (`.jsonl`), which keep each value as it came")
    return f"column `{name}` holds values no one Parquet type holds ({exc}): write JSON lines (`.jsonl`), which keep each value as it came"


def write_parquet(records: Sequence[Preference], path: str | os.PathLike, places: Sequence[str] | None = None) -> int:
    """Write `preference_row`s as Parquet that Hugging Face `datasets` (and so TRL) loads.

    Raises ValueError when the records mix TRL forms (a column cannot be both text and messages), when an
    extra column holds values of different kinds (a number in one record, text in another; named with the
    records: by `places`, where each came from, as "line 3 of --path", else `record N` from 1), or when it holds
    integers no one Arrow type holds (int64, or uint64 when none is below 0)."""
    rows = [preference_row(r) for r in records]
    for row in rows:
        row["attributes"] = [{"key": k, "value": v} for k, v in row["attributes"].items()]
    names = list(dict.fromkeys(name for row in rows for name in row))
    arrays = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            try:
                arrays.append(pa.array(values, type=PARQUET_TYPES.get(name)))
            except OverflowError:  # Arrow infers int64: TRL's extra columns keep integers up to 2**64-1
                arrays.append(pa.array(values, type=pa.uint64()))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(_mixed_column(name, values, exc, places)) from None
        except OverflowError:
            numbers = name in SCORE_COLUMNS or name in RATING_COLUMNS  # a string there is a bad row (a rating is told so)
            way_out = "as floats, with an exponent (1.2e21): TRL's scores and ratings are numbers" if numbers else "as strings"
            raise ValueError(f"column `{name}` holds integers no one Arrow type holds (past 64 bits, or below 0 beside one past "
                             f"2**63-1): write JSON lines (`.jsonl`), or give them {way_out}") from None
    table = pa.Table.from_arrays(arrays, names=names)
    with atomic_writer(path) as f:
        pq.write_table(table, f)
    return len(rows)
