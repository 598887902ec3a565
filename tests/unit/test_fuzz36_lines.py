"""Session fuzz36: the typed fast path that reads an import's JSON lines (`io._line_record`) never
accepts a line that `row_to_preference` (after `_decode_line`), the reader every line went through
before, would refuse or read otherwise. Lines are drawn by `hypothesis` (derandomized: the same lines
every run) from adversarial pieces: every field given every JSON type, repeated keys, numbers at the
edges of float and int, unicode that renders as nothing or is no text at all, TRL's message lists
with odd keys and roles, its implicit-prompt form and extra columns, keys in another case, and
whitespace, a BOM or garbage around the object.

A line the fast path leaves (None) is read by `row_to_preference` itself, so only a line it accepts
can differ from the reference: such a line must give the reference's record, every field and the
same JSON (1 and 1.0 differ there), `trl` included. Each line is also tried with a lone `\\r` after every
comma and with U+2028 / U+0085 in its answers (fidelity37: an import's body, like a file, ends lines at `\\n` only)."""

from __future__ import annotations

import json
from collections import Counter

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pluralign.data.io import TRL_EXTRA_COLUMNS, _decode_line, _line_record, read_preference_lines, row_to_preference
from pluralign.data.record import Preference, PreferenceError

# texts: ordinary, blank in every way, the same answer in another spelling, no text at all
TEXTS = [
    "Tea?", "Yes.", "No.", "Tea? Yes.", "Tea? No.", "", " ", "\t", "\u00a0", "\u200b", "\u200d", "\u2060", "\ufeff", "\u3164",
    "\u2800", "\u00ad", "\u034f", "\u0301", "e\u0301", "\u00e9", "Caf\u00e9", "Cafe\u0301", "Caf\u00ad\u00e9", " Yes. ", "yes.",
    "Yes.\u200b", "\u200bYes.", "Yes.\u00a0", "\u05e9\u05dc\u05d5\u05dd", "\u202eYes.", "\u200fNo.", "\x00", "a\x00", "\x7f",
    "\U0001F469\u200d\U0001F4BB", "\U0001F469\u200d\U0001F467", "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
    "\ud800", "\udfff", "\ud83d\ude00", "\ud83d", "bob", "alice", "user", "assistant", "system", "1", "0",
]
# numbers as written: the JSON reader's edges (out of range, negative zero, past 2**64, exponents)
NUMBERS = [
    "0", "-0", "1", "-1", "0.5", "-0.0", "0.0", "1.0", "1e2", "1E2", "1e6", "1000000", "1000001", "1e6.0", "1000000.0000000001",
    "1000000.0000001", "1e309", "-1e309", "1e-400", "1e308", "18446744073709551615", "18446744073709551616",
    "-9223372036854775809", "1" + "0" * 30, "1" + "0" * 400, "3.14", "-5", "1726000000", "1726000000.5", "NaN", "Infinity",
    "01", "1.", ".5", "+1", "9007199254740993", "18446744073709551617", "123456789012345678901234567", "1" + "0" * 308,
    "1" + "0" * 309, "1726000000.999999999999999999999", "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308",
    "1.7976931348623159e308", "123456789012345678901234567890e-20", "0.1e-999", "-1e-400",
]
# keys as written: escapes for letters (the same key), NUL, case; JSON text, not Python strings
RAW_KEYS = [b'"pr\\u006fmpt"', b'"us\\u0065r_id"', b'"\\u0063hosen"', b'"chosen\\u0000"', b'"rejected\\u200b"', b'"m\\u0061rgin"',
            b'"attributes\\ud800"', b'"tie" ', b' "source"']
# answers a good row can hold, two of them rarely the same answer (an implicit prompt shared by some)
ANSWERS = ["Yes.", "No.", "Tea? Yes.", "Tea? No.", "Tea?\u00a0Yes.", "Caf\u00e9.", "Cafe\u0301 au lait.", "\u05e9\u05dc\u05d5\u05dd",
           "\U0001F469\u200d\U0001F4BB", "\U0001F469\u200d\U0001F467", "Yes.\u200b", "a\x00b", "\u202eNo."]
KEYS = ["prompt", "chosen", "rejected", "user_id", "margin", "tie", "source", "created_at", "attributes", *TRL_EXTRA_COLUMNS,
        "trl", "type", "tenant", "Prompt", "CHOSEN", "User_id", "foo", "", "prompt ", "\u200bprompt", "pr\u006fmpt"]
MESSAGE_KEYS = ["role", "content", "name", "Content", "tool_calls", ""]
ROLES = ["user", "assistant", "system", "", " ", "User", "\u200b", "tool"]


def _rarely(draw, n: int) -> bool:
    """True about once in `n` draws (hypothesis favours the ends of a range: the middle is the rare one)."""
    return draw(st.integers(1, n)) == (n + 1) // 2


def _string(text: str, ascii_only: bool) -> bytes:
    """`text` as a JSON string: escaped (`\\ud800` for a lone surrogate) or as UTF-8 (a lone surrogate
    then as the three bytes no UTF-8 decoder takes)."""
    return json.dumps(text, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def text_values(draw) -> bytes:
    text = draw(st.one_of(st.sampled_from(TEXTS), st.lists(st.sampled_from(TEXTS), min_size=1, max_size=3).map("".join),
                          st.text(max_size=6)))
    return _string(text, draw(st.booleans()))


def _object(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(k + b":" + v for k, v in pairs) + b"}"


def _key(name: str) -> bytes:
    return json.dumps(name).encode()


@st.composite
def keys(draw) -> bytes:
    return draw(st.sampled_from(RAW_KEYS)) if _rarely(draw, 4) else _key(draw(st.sampled_from(KEYS)))


@st.composite
def messages(draw) -> bytes:
    """A TRL message list: mostly sound (`role`, `content`), sometimes with odd keys, roles, nulls, repeats."""
    items = []
    for _ in range(0 if _rarely(draw, 10) else draw(st.integers(1, 3))):
        pairs = []
        if not _rarely(draw, 10):
            pairs.append((_key("role"), draw(st.one_of(st.sampled_from(ROLES).map(lambda r: _string(r, True)), scalars()))))
        if not _rarely(draw, 10):
            pairs.append((_key("content"), draw(st.one_of(text_values(), text_values(), scalars()))))
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            pairs.append((_key(draw(st.sampled_from(MESSAGE_KEYS))), draw(st.one_of(text_values(), scalars()))))
        items.append(_object(draw(st.permutations(pairs))))
    if _rarely(draw, 20):
        items.append(draw(st.one_of(text_values(), scalars())))  # not a message
    return b"[" + b",".join(items) + b"]"


def scalars() -> st.SearchStrategy[bytes]:
    return st.one_of(st.sampled_from([b"null", b"true", b"false"]), st.sampled_from(NUMBERS).map(str.encode), text_values())


@st.composite
def attributes(draw) -> bytes:
    keys = st.one_of(st.sampled_from(["group", "lang", "", " ", "\u200b", "\u00a0x", "e\u0301", "\u00e9", "g"]), st.text(max_size=3))
    pairs = [(_string(draw(keys), draw(st.booleans())), draw(values(depth=0) if _rarely(draw, 6) else scalars()))
             for _ in range(draw(st.integers(0, 3)))]
    return _object(pairs)


@st.composite
def values(draw, depth: int = 1) -> bytes:
    """Any JSON value (at most one level of nesting beyond messages and attributes)."""
    kinds = [scalars(), st.just(b"[]"), st.just(b"{}")]
    if depth:
        kinds += [messages(), attributes(), st.lists(scalars(), max_size=2).map(lambda v: b"[" + b",".join(v) + b"]")]
    return draw(st.one_of(kinds))


def _answers(draw) -> tuple[str, str]:
    """Two answers: mostly two different good ones, else any two texts."""
    if _rarely(draw, 5):
        return draw(st.sampled_from(TEXTS)), draw(st.sampled_from(TEXTS))
    i, step = draw(st.integers(0, len(ANSWERS) - 1)), draw(st.integers(1, len(ANSWERS) - 1))
    return ANSWERS[i], ANSWERS[(i + step) % len(ANSWERS)]


def _text_or_messages(draw) -> bytes:
    return draw(st.one_of(text_values(), text_values(), messages()))


@st.composite
def lines(draw) -> bytes:
    """A JSON line: a row in one of TRL's forms (so a fair share are good rows), then any other keys
    with any values, keys repeated, and what can go around a JSON object."""
    conversational = draw(st.booleans())
    if conversational:
        prefix = [{"role": "user", "content": draw(st.sampled_from(TEXTS[:5]))}]
        chosen, rejected = (json.dumps([*prefix, {"role": "assistant", "content": a}]).encode() for a in _answers(draw))
    else:
        chosen, rejected = (_string(a, draw(st.booleans())) for a in _answers(draw))
    pairs = [(_key("chosen"), chosen), (_key("rejected"), rejected)]
    if not _rarely(draw, 4):  # explicit prompt, else the implicit form
        # of the answers' form (session trl55: TRL reads a row in one form; another is a bad row, as `_text_or_messages` draws)
        ask = draw(st.sampled_from(TEXTS[:5])) if not _rarely(draw, 3) else None
        prompt = _text_or_messages(draw) if ask is None else json.dumps([{"role": "user", "content": ask}]).encode() if conversational else _string(ask, True)
        pairs.append((_key("prompt"), prompt))
    for field in ("prompt", "chosen", "rejected"):  # a field replaced by anything
        if _rarely(draw, 12):
            pairs.append((_key(field), _text_or_messages(draw) if draw(st.booleans()) else draw(values())))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2, 3, 5]))):  # other fields, any value
        raw_key = draw(keys())
        key = json.loads(raw_key) if b"\\ud800" not in raw_key else ""
        if key in ("margin", "created_at", "score_chosen", "score_rejected", "chosen_rating", "rejected_rating") and draw(st.booleans()):
            value = draw(st.sampled_from(NUMBERS)).encode()
        elif key == "attributes" and not _rarely(draw, 4):
            value = draw(attributes())
        elif key == "user_id" and draw(st.booleans()):
            value = draw(st.sampled_from([*(_string(t, True) for t in ("bob", "alice", " bob", "", "\u200b", "\ud800")), b"7", b"-0",
                                          b"7.0", b"1e2", b"true", b"1" + b"0" * 30, b"18446744073709551616"]))
        elif key == "tie" and draw(st.booleans()):
            value = draw(st.sampled_from([b"true", b"false", b"null", b"0", b"1", b'"true"']))
        else:
            value = draw(values())
        pairs.append((raw_key, value))
    pairs = draw(st.permutations(pairs))
    raw = _object(pairs)
    if not _rarely(draw, 4):
        return raw
    before = draw(st.sampled_from([b"", b" ", b"\t", b"\xef\xbb\xbf", b"\r", b"\x00", b"\xc2\xa0"]))
    after = draw(st.sampled_from([b"", b" ", b"\r", b"\n", b" \t", b",", b"}", b"x", b" {}", b"\x00", b"//"]))
    return before + raw + after


def _reference(raw: bytes, default_user: str | None) -> Preference | None:
    """The record `row_to_preference` reads from the line, None when it refuses it (PreferenceError)."""
    try:
        return row_to_preference(_decode_line(1, raw), 1, default_user)
    except PreferenceError:
        return None


def _same(a: Preference, b: Preference) -> bool:
    return a == b and msgspec.json.encode(a) == msgspec.json.encode(b)


def _check(raw: bytes, seen: Counter, variant: str = "") -> None:
    if not variant:  # and the line with what ends a line to `bytes/str.splitlines`, not to JSON lines (fidelity37): a lone
        # `\r` between tokens (JSON's whitespace) and U+2028 / U+0085 in its texts, counted apart (`variant`)
        for name, changed in (("cr", raw.replace(b",", b",\r")),
                              ("separators", raw.replace(b"Yes.", "Yes.\u2028".encode()).replace(b"No.", "No.\u0085".encode()))):
            if changed != raw:
                _check(changed, seen, name)
    for default_user in (None, "alice"):
        fast, reference = _line_record(raw, default_user), _reference(raw, default_user)
        seen["fast" if fast is not None else "left", "good" if reference is not None else "bad", *([variant] if variant else [])] += 1
        if fast is not None:
            assert reference is not None, f"the fast path accepts a line the reference refuses: {raw!r}"
            assert _same(fast, reference), f"read otherwise: {raw!r}\nfast:      {fast!r}\nreference: {reference!r}"


def _run(examples: int) -> Counter:
    seen: Counter = Counter()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(lines())
    def check(raw: bytes) -> None:
        _check(raw, seen)

    check()
    return seen


def test_the_fast_path_reads_every_line_it_accepts_as_the_reference_does():
    """400 drawn lines (the same every run, a few seconds), each with and without a default user."""
    seen = _run(400)
    assert seen["fast", "good"] > 100 and seen["left", "bad"] > 100, seen  # both good rows and bad lines were tried
    assert seen["fast", "good", "cr"] > 100 and seen["fast", "good", "separators"] > 100, seen


@pytest.mark.slow
def test_the_fast_path_reads_every_line_it_accepts_as_the_reference_does_many():
    seen = _run(20000)
    assert seen["fast", "good"] > 3000, seen  # 4,530 good rows read by the fast path (the rest left to the reference)


@pytest.mark.parametrize("raw", [
    b'{"rejected":"\\ud800","chosen":"\xed\xa0\x80","prompt":"Tea?"}',  # found by the test above: a lone escape, then no UTF-8
    b'{"prompt":"Tea?","chosen":"\\udfff Yes.","rejected":"No. \xff"}',
])
def test_a_lone_surrogate_escape_beside_bytes_not_utf8_is_an_error_naming_the_line(raw):
    """Before: UnicodeDecodeError out of `lone_surrogate_escape` (its trial decoding of the line with the
    escapes mended met the bad bytes), not a PreferenceError: a crash of the reader (the import route's 500)."""
    with pytest.raises(PreferenceError) as caught:
        read_preference_lines([b'{"prompt":"Tea?","chosen":"Yes.","rejected":"No."}', raw], default_user="alice")
    assert caught.value.line == 2, caught.value
    assert "line 2" in str(caught.value) and "malformed JSON" in str(caught.value), str(caught.value)
