"""Read and write preference files: JSONL and Parquet in TRL's prompt/chosen/rejected form.

TRL rows are either plain strings or conversational message lists; both load into `Preference`.
A file with bad rows loads nothing (the first error names line and field) unless `skip_bad=True`,
which skips them and reports how many.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from pluralign.data.record import Base, Preference, PreferenceError
from pluralign.files import atomic_writer

_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


class LoadReport(Base):
    """What a load read: records kept, rows skipped, and the first few errors."""

    loaded: int
    skipped: int = 0
    errors: list[str] = []


def messages_to_text(value: Any, field: str, line: int) -> str:
    """Flatten a TRL conversational field (a list of {role, content}) into plain text."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise PreferenceError(line, field, "expected a string or a non-empty list of messages")
    parts = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise PreferenceError(line, f"{field}[{i}]", "expected a message object with a string `content`")
        parts.append(message["content"])
    if len(value) == 1:
        return parts[0]
    roles = [m.get("role", "user") for m in value]
    return "\n".join(f"{role}: {text}" for role, text in zip(roles, parts))


def row_to_preference(row: Any, line: int) -> Preference:
    """Validate one decoded row; raises PreferenceError naming the line and the field."""
    if not isinstance(row, dict):
        raise PreferenceError(line, None, "expected a JSON object")
    row = dict(row)
    for field in ("prompt", "chosen", "rejected"):
        if field not in row:
            raise PreferenceError(line, field, "missing required field")
        row[field] = messages_to_text(row[field], field, line)
    if "user_id" not in row:
        raise PreferenceError(line, "user_id", "missing required field")
    if isinstance(row.get("user_id"), int) and not isinstance(row["user_id"], bool):
        row["user_id"] = str(row["user_id"])
    try:
        return msgspec.convert(row, Preference)
    except msgspec.ValidationError as exc:
        raise PreferenceError(line, _field_of(str(exc)), str(exc).split(" - at ")[0]) from None


def _field_of(message: str) -> str | None:
    if " - at `$." in message:
        return message.split(" - at `$.")[1].rstrip("`")
    if "Object contains unknown field `" in message:
        return message.split("`")[1]
    if "Object missing required field `" in message:
        return message.split("`")[1]
    return None


def _collect(rows: Iterable[tuple[int, Any]], skip_bad: bool) -> tuple[list[Preference], LoadReport]:
    records: list[Preference] = []
    errors: list[str] = []
    skipped = 0
    for line, row in rows:
        try:
            records.append(row_to_preference(row, line))
        except PreferenceError as exc:
            if not skip_bad:
                raise
            skipped += 1
            if len(errors) < 20:
                errors.append(str(exc))
    return records, LoadReport(loaded=len(records), skipped=skipped, errors=errors)


def _jsonl_rows(path: Path) -> Iterable[tuple[int, Any]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield number, _json_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                yield number, _Malformed(str(exc))


def _parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in row.items() if v is not None}
    if isinstance(row.get("attributes"), list):
        row["attributes"] = dict(row["attributes"])
    return row


class _Malformed:
    def __init__(self, why: str):
        self.why = why


def read_preferences(path: str | os.PathLike, *, skip_bad: bool = False) -> tuple[list[Preference], LoadReport]:
    """Load a `.jsonl` or `.parquet` preference file. Raises PreferenceError on the first bad row."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no preference file at {path}")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        rows: Iterable[tuple[int, Any]] = (
            (i, _parquet_row(row)) for i, row in enumerate(table.to_pylist(), start=1)
        )
    else:
        rows = _jsonl_rows(path)

    def checked() -> Iterable[tuple[int, Any]]:
        for line, row in rows:
            if isinstance(row, _Malformed):
                if not skip_bad:
                    raise PreferenceError(line, None, f"malformed JSON ({row.why})")
                yield line, None
            else:
                yield line, row

    records, report = _collect(checked(), skip_bad)
    if not records and not report.skipped:
        raise PreferenceError(0, None, f"{path} holds no preference rows")
    return records, report


def write_jsonl(records: Iterable[Preference], path: str | os.PathLike) -> int:
    """Write records atomically (temp file + rename), so a crash never leaves half a file."""
    count = 0
    with atomic_writer(path) as f:
        for record in records:
            f.write(_json_encoder.encode(record))
            f.write(b"\n")
            count += 1
    return count


def write_parquet(records: Sequence[Preference], path: str | os.PathLike) -> int:
    rows = [msgspec.to_builtins(r) for r in records]
    for row in rows:
        row["attributes"] = list(row.get("attributes", {}).items()) or None
    table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
    with atomic_writer(path) as f:
        pq.write_table(table, f)
    return len(rows)


PARQUET_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("margin", pa.float64()),
        ("tie", pa.bool_()),
        ("source", pa.string()),
        ("created_at", pa.float64()),
        ("attributes", pa.map_(pa.string(), pa.string())),
    ]
)
