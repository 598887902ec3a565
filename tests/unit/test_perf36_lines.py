"""Session perf36: reading JSON lines (an import's body, `pluralign data import`'s files) costs less
Python per row, so one tenant's 1 MB import holds the interpreter lock less while other tenants'
requests wait; and reads exactly as before: every line gives the record, or the error (line, field,
words), that `row_to_preference` gives it."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from pluralign.data import text
from pluralign.data.io import _decode_line, read_preference_lines, read_preferences, row_to_preference
from pluralign.data.record import PreferenceError


def _by_the_row(raw: bytes, default_user: str | None, number: int = 1):
    """What a line read as a row dict gives: the record, or the error's words. A UTF-8 byte order mark opening
    line 1 (`_as_read` reads each line so) is the file's, not the row's (review 40)."""
    try:
        return row_to_preference(_decode_line(1, raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw), 1, default_user)
    except PreferenceError as exc:
        return str(exc)


def _as_read(raw: bytes, default_user: str | None):
    try:
        records, _ = read_preference_lines([raw], default_user=default_user)
    except PreferenceError as exc:
        return str(exc)
    return records[0]


def _same(a, b) -> bool:
    """The same record (field by field, and the same JSON: 1 and 1.0 differ there) or the same error."""
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a == b and msgspec.json.encode(a) == msgspec.json.encode(b)


TEXTS = ["Tea?", "Yes.", "No.", "", " ", "\u200b", "\u3164", "e\u0301", "\u00e9", "\u0301", "Caf\u00e9", "Cafe\u0301", "Caf\u00ad\u00e9",
         " Yes. ", "yes.", "\U0001F469\u200d\U0001F4BB", "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F", "\t\n",
         "\x7f", "\x00a", "a\u2800"]
MESSAGES = [[{"role": "user", "content": "Tea?"}], [{"content": "Tea?"}], [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}],
            [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "No."}], [], [{"role": "user"}], [{"role": 1, "content": "x"}],
            [{"role": "user", "content": "x", "name": "bob"}], [{"content": "\u200b"}], ["Tea?"], [{"role": None, "content": "x"}],
            [{"content": "Cafe\u0301"}], [{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "More?"}]]
VALUES = [None, True, False, 0, 1, -1, 1.5, 1e6, 1e6 + 1, 10**30, "1", "alice", "", " ", [], {}, {"g": "a"}, 3.0]
ATTRIBUTES = [{}, {"g": "a"}, {"g": 1}, {"g": True}, {"g": 1.5}, {"g": None}, {" ": "x"}, {"\u200b": "x"}, {"g": ["x"]}, {"g": "a", "h": "b"}]
KEYS = ["user_id", "margin", "tie", "source", "created_at", "attributes", "id", "prompt_id", "score_chosen", "score_rejected",
        "chosen_rating", "rejected_rating", "chosen_model", "rejected_model", "foo", "trl", "type", "tenant"]

LINES = [
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "prompt": "Coffee?"}',  # the last of a repeated key, as a dict
    b'{"prompt": 1, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "attributes": {"g": "a", "h": "b", "g": "c"}}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": "\\ud83d"}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "created_at": 1e400}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "created_at": 100000000000000000000000000000}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": 100000000000000000000000000000}',
    b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": -3}',
    b'{"type": "preference", "tenant": "acme", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}',
    b'[{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}]', b'["x"]', b'3', b'"text"', b'null', b'{', b'{"prompt": "Tea?"} {"a": 1}',
    b'\xef\xbb\xbf{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}', b'{"prompt": "Caf\xe9", "chosen": "Yes.", "rejected": "No."}',
    b'[' * 2000 + b']' * 2000, b'{"chosen": "Tea? Yes.", "rejected": "Tea? No."}', b'{"chosen": "Tea?", "rejected": "Tea?"}',
    b'{"chosen": "Yes.", "rejected": "No."}', b'{"chosen": "Tea? Yes.", "rejected": "Tea? Yes!"}',
]


def _lines() -> list[bytes]:
    lines = list(LINES)
    for a in TEXTS:  # every text in every place
        for b in TEXTS[:8]:
            lines.append(json.dumps({"prompt": a, "chosen": b, "rejected": "No."}).encode())
            lines.append(json.dumps({"prompt": "Tea?", "chosen": a, "rejected": b}).encode())
            lines.append(json.dumps({"prompt": b, "chosen": "Yes.", "rejected": a}, ensure_ascii=False).encode())
    for key in KEYS:  # every value in every other field
        for value in [*VALUES, *ATTRIBUTES, *TEXTS[:6]]:
            lines.append(json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", key: value}).encode())
    forms = [*MESSAGES, *TEXTS[:3], None, 3]
    for chosen in forms:  # the forms of TRL: conversational, implicit, mixed
        for rejected in forms:
            lines.append(json.dumps({"chosen": chosen, "rejected": rejected}).encode())
            lines.append(json.dumps({"prompt": MESSAGES[0], "chosen": chosen, "rejected": rejected}).encode())
            lines.append(json.dumps({"prompt": "Tea?", "chosen": chosen, "rejected": rejected, "id": 7}).encode())
    pick = random.Random(36)
    for _ in range(3000):  # and rows drawn at random from all of these
        row = {"user_id": "bob"} if pick.random() < 0.5 else {}
        for field in ("prompt", "chosen", "rejected"):
            if pick.random() < 0.9:
                row[field] = pick.choice(TEXTS + MESSAGES if pick.random() < 0.3 else TEXTS[:3] + ["Tea? Yes.", "Tea? No."])
        for key in pick.sample(KEYS, pick.choice([0, 0, 1, 2, 3])):
            row[key] = pick.choice(ATTRIBUTES if key == "attributes" and pick.random() < 0.7 else VALUES)
        lines.append(json.dumps(dict(pick.sample(list(row.items()), len(row))), ensure_ascii=pick.random() < 0.5).encode())
    return lines


@pytest.mark.parametrize("default_user", [None, "alice"])
def test_every_line_reads_as_row_to_preference_reads_it(default_user):
    """Good lines give the record (the same fields, the same JSON), bad ones the same error, whatever
    the line holds: texts blank, invisible or the same answer in another spelling, TRL's forms and
    extra columns, every field given each kind of value, repeated keys, malformed lines."""
    lines = _lines()
    differ = [(raw, old, new) for raw in lines if not _same(old := _by_the_row(raw, default_user), new := _as_read(raw, default_user))]
    assert not differ, differ[:3]
    read = sum(not isinstance(_as_read(raw, default_user), str) for raw in lines)
    assert read > 300 and len(lines) - read > 300  # both good and bad lines were tried


def test_a_file_reads_its_good_and_bad_lines_as_before(tmp_path):
    """`pluralign data import`'s reading: a file of good lines, blank lines and bad ones, skipped and
    counted; the records and their line numbers as row by row."""
    lines = [raw for raw in _lines() if b"\n" not in raw]
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(b"\n".join(lines[:200] + [b""] + lines[200:]) + b"\n")
    records, report = read_preferences(path, skip_bad=True, default_user="alice")
    expected = [(i if i <= 200 else i + 1, r) for i, raw in enumerate(lines, start=1) if not isinstance(r := _by_the_row(raw, "alice", i), str)]
    assert report.lines == [i for i, _ in expected]
    assert all(_same(a, b) for a, (_, b) in zip(records, expected, strict=True))
    assert report.skipped == len(lines) - len(expected)


@pytest.mark.parametrize("char", [chr(i) for i in range(128)])
def test_ascii_texts_are_blank_and_visible_by_the_character_rule(char):
    """The ASCII shortcut of `visible`, `is_blank` and `answer_key` keeps the per-character rule
    (`_invisible`): only ! to ~ are seen."""
    seen = not text._invisible(char)
    assert text.is_blank(char) is not seen and text.is_blank(char * 3) is not seen
    assert text.visible(f"{char}a{char}") == (f"{char}a{char}" if seen else "a")
    assert text.answer_key(f"{char}a{char}") == text.visible(f"{char}a{char}")
    assert text.is_blank(f"{char}a") is False


def _plain_lines(rows: int) -> list[bytes]:
    return [json.dumps({"prompt": f"Which reply to question {i} is kinder?", "chosen": f"The gentle reply {i}.",
                        "rejected": f"The curt reply {i}."}).encode() for i in range(rows)]


def test_plain_lines_read_as_row_by_row_reads_them():
    """8,000 plain lines (a 1 MB import) read by the typed path give the records that decoding each line
    and reading it with `row_to_preference` gives (how every line was read before). How much faster it is
    lives in `benchmarks/import_parse.py` and BENCHMARKS.md, not in a timed test."""
    lines = _plain_lines(8000)
    user = "alice"
    records, _ = read_preference_lines(lines, default_user=user)
    row_by_row = [row_to_preference(_decode_line(n, raw), n, user) for n, raw in enumerate(lines, start=1)]
    assert len(records) == 8000 and all(_same(a, b) for a, b in zip(records, row_by_row, strict=True))
