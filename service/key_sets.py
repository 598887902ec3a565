"""Small sets of keys kept in the data folder across a crash, one format for all three: the users whose background
refits wait (`service.waiting_refits`, keys (tenant, user_id)), those whose refits a stop dropped
(`service.dropped_refits`, the same keys) and the rows owed a retraction (`service.owed_retractions`, keys (tenant,
user_id, pref_id)).

The format: JSON lines, each a JSON list of keys, each key a list of strings (`[["acme","ann"],["acme","bob"]]`), encoded
by msgspec. A set written whole is one line (`write_keys`: a temp file beside it, fsynced, renamed over it, its folder
fsynced: `pluralign.files.atomic_writer`), removed when the set is empty. The waiting refits also append a line at a
time (`encode_line`, `WaitingRefits._append`: the ingest worker names the users of every move, and writing the whole
set, up to 100,000 users, with an fsync at each move would cost the move more than its commit); the owed retractions,
rare, and the dropped refits, written at a stop, are only ever written whole. What the previous release wrote reads as
it is: its owed and dropped refits' files were one such list without the line's end, its waiting file these lines.

Read by `read_keys`: each line decoded whole, and one that does not decode (cut short by a crash or a full disk, a byte
damaged) gives the keys it still holds whole (`salvage`) and a count of its other bytes, never its text, so that a log
line can say how much was lost without naming ids. Our own code: msgspec decodes a whole document or raises, and a
damaged line's whole keys are found with a pattern of the JSON string as msgspec writes one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import msgspec

from pluralign.files import DECODE_ERRORS, atomic_writer

Key = tuple[str, ...]

_STRING = rb'"(?:[^"\\]|\\.)*"'  # a JSON string, as msgspec writes one (a `"` in it escaped)
_LIST = re.compile(rb"[\s\[\],]")  # a list's own brackets, commas and spaces
_PATTERNS: dict[int, re.Pattern[bytes]] = {}  # arity -> `["t","u"]`'s pattern
_DECODERS: dict[int, msgspec.json.Decoder] = {}  # arity -> a line's decoder


def _pattern(arity: int) -> re.Pattern[bytes]:
    if arity not in _PATTERNS:
        _PATTERNS[arity] = re.compile(rb"\[\s*" + rb"\s*,\s*".join([rb"(%s)" % _STRING] * arity) + rb"\s*\]")
    return _PATTERNS[arity]


def _decoder(arity: int) -> msgspec.json.Decoder:
    if arity not in _DECODERS:
        _DECODERS[arity] = msgspec.json.Decoder(list[tuple[(str,) * arity]])  # type: ignore[misc]
    return _DECODERS[arity]


def encode_line(keys: Iterable[Key]) -> bytes:
    """One line of the format: `keys` sorted, as a JSON list, and the line's end."""
    return msgspec.json.encode(sorted(keys)) + b"\n"


def write_keys(path: Path, keys: Iterable[Key]) -> None:
    """The file at `path` holds `keys` (one line), written whole in one rename; removed when there are none. Raises
    OSError naming `path` when it cannot be written (the file as it was)."""
    keys = list(keys)
    if not keys:
        path.unlink(missing_ok=True)
        return
    with atomic_writer(path) as f:
        f.write(encode_line(keys))


def read_keys(data: bytes, arity: int) -> tuple[list[Key], int, int]:
    """The keys of a file's bytes `data`, each once, in the order first named; how many lines did not decode (their
    whole keys kept: `salvage`); and how many of those lines' other bytes, besides brackets, commas and spaces, named no
    whole key (0: nothing they named was lost)."""
    decode = _decoder(arity).decode
    keys: dict[Key, None] = {}
    damaged = unread = 0
    for line in data.splitlines():
        try:
            keys.update(dict.fromkeys(decode(line)))
        except DECODE_ERRORS:
            found, cut = salvage(line, arity)
            keys.update(dict.fromkeys(found))
            damaged, unread = damaged + 1, unread + cut
    return list(keys), damaged, unread


def salvage(data: bytes, arity: int) -> tuple[list[Key], int]:
    """The keys of `arity` strings damaged bytes still hold whole (`["acme","ann","p-1"]`, each part a JSON string that
    decodes), in the order they hold them, and how many of their other bytes, besides the lists' brackets, commas and
    spaces, are not in them (a key cut short, bytes the damage changed): 0 when nothing they named was lost."""
    keys, rest, pos = [], [], 0
    for match in _pattern(arity).finditer(data):
        key = tuple(_text(part) for part in match.groups())
        if None not in key:
            keys.append(key)
            rest.append(data[pos:match.start()])
            pos = match.end()
    rest.append(data[pos:])
    return keys, len(_LIST.sub(b"", b"".join(rest)))


def _text(data: bytes) -> str | None:
    try:
        return msgspec.json.decode(data, type=str)
    except DECODE_ERRORS:
        return None
