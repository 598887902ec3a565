"""What of a text a reader can see: the one test of "blank" for answers, prompts and edits.

`str.strip()` keeps Unicode format characters (category Cf: U+200B zero-width space, U+200C and
U+200D joiners, U+2060 word joiner, U+FEFF byte-order mark), control characters (Cc: U+0000,
U+007F) and the other Default_Ignorable_Code_Point characters that render as nothing (U+034F
combining grapheme joiner, U+115F/U+1160 and U+3164/U+FFA0 Hangul fillers, U+FE00-U+FE0F variation
selectors, ...), and U+2800 (a blank Braille pattern), so an answer made only of them passed as
non-blank and was stored and shown. Characters inside a text are left alone: a joiner between two
emoji is part of what is shown. Combining marks (Mn, Me) are kept at the ends too (e + U+0301 is
"é"), but a text of nothing else than them and invisible characters is blank: they mark nothing.

Two spellings of one text (é as U+00E9, NFC, or as e + U+0301, NFD: macOS file names, some
keyboards and input methods write the second) are one answer: `answer_key` compares texts in NFC.
So are two texts that differ only by characters inside them that render as nothing (`comparable`):
a soft hyphen a word processor left, a zero-width space or word joiner a web page's copy brought, a
byte-order mark, bidi marks, a variation selector. Joiners that change what is drawn (ZWJ U+200D in
an emoji sequence or Indic conjunct, ZWNJ U+200C in Persian or Hindi), tag characters (subdivision
flags) and Hangul fillers (letters of old Hangul syllables) are kept.
Two answers a person cannot tell apart are one answer wherever a pair is offered to compare or taken as a
comparison (`look_key`): `answer_key`'s, with runs of whitespace (a no-break space, two spaces) drawn as one space and
the compatibility forms a font draws as their letters (the ligature U+FB01 "fi") folded. Not Unicode's NFKC, which
`unicodedata` gives: it also makes "x2" of "x²" and "1" of a circled one, which a person tells apart.
Texts are stored, served and exported as they were written, never normalised on the way (a round
trip gives back the same string); only comparisons use the key.

`shorten` cuts a text for display (an error's echo, a profile's example answers) between grapheme
clusters (Unicode's extended graphemes, the `regex` module's \\X): never inside an emoji's ZWJ
sequence, a flag, a skin tone, or between a letter and its combining marks.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Container, Iterable
from functools import lru_cache

import msgspec
import regex

# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt) that are not Cf or Cc, plus the
# Cf ranges it lists (kept here so the list reads whole), and U+2800 BRAILLE PATTERN BLANK
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)


# the ASCII characters that show nothing: whitespace and controls (U+0000-U+0020, U+007F); every other is seen
_ASCII_INVISIBLE = "".join(map(chr, range(0x21))) + "\x7f"


@lru_cache(maxsize=8192)  # per character: every record's texts are tested at both ends (UKP: 1M calls)
def _invisible(char: str) -> bool:
    """Whether `char` shows nothing: whitespace, a control or format character, a default-ignorable one."""
    if "!" <= char <= "~":  # printable ASCII
        return False
    if char.isspace() or unicodedata.category(char) in ("Cc", "Cf"):
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _IGNORABLE)


@lru_cache(maxsize=8192)
def _mark(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me")


def visible(text: str) -> str:
    """`text` without the invisible characters (whitespace, Cc, Cf, default-ignorable, U+2800) at
    either end; two texts with the same `visible` read the same. visible("\u200b Yes.\u3164") == "Yes.".
    Combining marks stay (visible("e\u0301") == "e\u0301")."""
    if text.isascii():  # most texts: one strip in C (an import reads 8,000 rows' texts holding the interpreter lock)
        return text.strip(_ASCII_INVISIBLE)
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        if _tag_sequence_ends_at(text, start, end):
            break  # a subdivision flag (U+1F3F4 and tag characters) ends the text: it is seen
        end -= 1
    return text[start:end]


def _tag_sequence_ends_at(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] ends with an emoji tag sequence: U+1F3F4 and tag characters
    (U+E0020-U+E007F; England's flag is U+1F3F4 + "gbeng" in tags + U+E007F)."""
    k = end
    while k > start and 0xE0020 <= ord(text[k - 1]) <= 0xE007F:
        k -= 1
    return k < end and k > start and text[k - 1] == "\U0001F3F4"


def is_blank(text: str) -> bool:
    """Whether `text` has no visible character: nothing, or only invisible characters (see
    `visible`) and combining marks with no base character to mark."""
    if text.isascii():
        return not text.strip(_ASCII_INVISIBLE)
    return all(_invisible(c) or _mark(c) for c in visible(text))


def nfc(text: str) -> str:
    """`text` in Unicode's composed form (NFC): one spelling of a label (a group in an audit) however
    a client's keyboard wrote it."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


# Unicode's Default_Ignorable_Code_Point less those that change what is drawn: ZWNJ and ZWJ, the Hangul
# fillers, the tag characters (U+E0000-U+E007F; variation selectors 17-256, U+E0100-U+E01EF, still go)
_DROPPED = regex.compile(r"[\p{Default_Ignorable_Code_Point}--[\u200C\u200D\u115F\u1160\u3164\uFFA0\U000E0000-\U000E007F]]+",
                         regex.V1)


def comparable(text: str) -> str:
    """`text` without the characters inside it that render as nothing and change nothing drawn: those
    with Unicode's Default_Ignorable_Code_Point property (soft hyphen U+00AD, ZWSP U+200B, LRM/RLM
    U+200E/F, bidi embeddings and isolates U+202A-E and U+2066-9, word joiner U+2060, BOM U+FEFF,
    variation selectors U+FE00-F and U+E0100-U+E01EF, ...) except ZWNJ U+200C, ZWJ U+200D, the
    Hangul fillers (U+115F, U+1160, U+3164, U+FFA0) and tag characters (U+E0000-U+E007F).
    comparable("co\u00adop\u200b") == "coop"; comparable("\U0001F469\u200d\U0001F4BB") keeps the ZWJ.
    For comparing only: not NFC (see `answer_key`), never stored."""
    return text if text.isascii() else _DROPPED.sub("", text)


def answer_key(text: str) -> str:
    """What two answers must share to be the same answer: `visible(text)` without the characters that
    render as nothing (`comparable`), in Unicode's composed form (NFC), so "Caf\u00e9", "Cafe\u0301"
    (NFD) and "Caf\u00ad\u00e9" (a soft hyphen) are one answer. For comparing only: texts are kept as written."""
    if text.isascii():  # nothing to drop inside it, already NFC
        return text.strip(_ASCII_INVISIBLE)
    return nfc(comparable(visible(text)))


# compatibility forms drawn as the letters they decompose to (Unicode's decomposition tags): non-breaking forms (U+2011
# non-breaking hyphen), Arabic presentation forms (a font draws the letter so in its place), and, of <compat>, the ligatures
# (U+FB01 "ﬁ", U+0133 "ĳ"). Not the tags whose forms are drawn otherwise: <super>, <sub>, <circle>, <fraction>, <wide>,
# <font> ("x²" and "x2", "①" and "1", "Ｃａｆé" and "Café" are told apart), nor the rest of <compat> ("ſ" is no "s")
_DRAWN_AS_DECOMPOSED = ("<noBreak>", "<initial>", "<medial>", "<final>", "<isolated>")
# a whole run of whitespace but one plain space (drawn as it is): two or more characters, taken to the run's end, or one
# other than a space; a match begins where its run does, as a run of one space, matched nowhere, is the only one skipped
_SPACING_TO_FOLD = regex.compile(r"\s\s+|[^\S ]")
_LINE_BREAK = regex.compile(r"\r\n|[\n\v\f\r\x1c-\x1e\x85\u2028\u2029]")  # what `str.splitlines` ends a line at


@lru_cache(maxsize=8192)
def _drawn_as(char: str) -> str:
    decomposition = unicodedata.decomposition(char)
    if not decomposition.startswith("<"):
        return char
    tag = decomposition.split(" ", 1)[0]
    if tag in _DRAWN_AS_DECOMPOSED or (tag == "<compat>" and "LIGATURE" in unicodedata.name(char, "")):
        return unicodedata.normalize("NFKC", char)
    return char


def _spaces_shown(run: regex.Match) -> str:
    breaks = len(_LINE_BREAK.findall(run.group()))
    return "\n" * breaks if breaks else " "


def look_key(text: str) -> str:
    """What two answers a person cannot tell apart share, the test of "the same answer" wherever a pair of answers is
    offered to compare or taken as a comparison: `answer_key` (invisible characters, NFC and NFD), with each run of
    whitespace drawn as one space (a no-break space U+00A0, U+202F, U+3000, a tab, two spaces: "a b", "a\u00a0b" and
    "a  b" are one answer) or as its line breaks (a blank line is not a line break, nor a line break a space), and the
    compatibility forms a font draws as the letters they stand for (`_DRAWN_AS_DECOMPOSED`: the ligature "\ufb01" is
    "fi", an Arabic presentation form its letter). Not NFKC: "x\u00b2" and "x2", "\u2460" and "1", full-width letters
    stay apart. For comparing only, never stored: dedupe keys and an audit's group labels are `answer_key`'s."""
    key = answer_key(text)
    # each step only where it changes something (most answers: words and single spaces; each run to fold is a call
    # back): a text already in NFKC holds no compatibility form, so none to fold
    if not key.isascii() and not unicodedata.is_normalized("NFKC", key):
        key = nfc("".join(map(_drawn_as, key)))
    # every run of whitespace one plain space or line feeds only, each drawn as written (any other whitespace is Z* or Cc, not
    # printable): most answers, those of several lines too, read by string methods (a regex scan is ~20 ns a character)
    if "  " not in key and (key.isprintable() or (" \n" not in key and "\n " not in key and key.replace("\n", "").isprintable())):
        return key
    return _SPACING_TO_FOLD.sub(_spaces_shown, key)


def is_comparison(prompt: str, chosen: str, rejected: str) -> bool:
    """Whether the texts make a comparison as feedback, an import and a preference file's reader take one: no blank
    text (`is_blank`) and two answers a person tells apart (`look_key`). What the service leaves out of the files it
    writes from its stored rows (a preferences export, a job's snapshot) of the rows older releases stored otherwise."""
    return not (is_blank(prompt) or is_blank(chosen) or is_blank(rejected)) and look_key(chosen) != look_key(rejected)


def look_question_key(prompt: str, x: str, y: str) -> tuple[str, frozenset[str]]:
    """`question_key` as a person reads it (`look_key`): what next-comparison asks once, and not again once answered."""
    return look_key(prompt), frozenset((look_key(x), look_key(y)))


def pickable(texts: Iterable[str], besides: str | None = None) -> list[int]:
    """The indices of the `texts` a person can pick between: each visible answer once (its first spelling, as
    `look_key` tells answers apart), blank ones left out, and so is every spelling of `besides` when given (the
    answers to compare a chosen one with). What a `choice` on a response compares, and so the choices its `compare`
    pair may name: a pair with a blank answer, or two spellings of one, records nothing. One `look_key` per text."""
    seen: set[str] = set() if besides is None else {look_key(besides)}
    kept = []
    for i, text in enumerate(texts):
        if not is_blank(text) and (key := look_key(text)) not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def question_key(prompt: str, x: str, y: str) -> tuple[str, frozenset[str]]:
    """What two comparisons must share to ask the same question: the prompt and the pair of answers, in
    either order and any spelling (`answer_key`). "Yes." against "No." to two prompts are two questions."""
    return answer_key(prompt), frozenset((answer_key(x), answer_key(y)))


def surrogate_problem(text: str) -> str | None:
    """Why `text` is not Unicode text (None: it is): a lone UTF-16 surrogate (U+D800-U+DFFF), which no
    UTF-8 file, Arrow column or tokenizer holds. Python's `json` reads one from "\\ud83d" (text cut
    inside an emoji by a UTF-16 slice, JavaScript's `slice`); msgspec, and so the service, refuses it."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X} at character {exc.start + 1}), which is not text: "
                "half of an emoji cut by a UTF-16 slice?")
    return None


_ESCAPE = regex.compile(rb"\\u([dD][89a-fA-F][0-9a-fA-F]{2})")


def lone_surrogate_escape(raw: bytes) -> tuple[int, str] | None:
    """The first lone UTF-16 surrogate escape (`\\ud83d` without its pair) in the JSON text `raw`, as
    (byte offset of its backslash, the escape as written), when such escapes are all that keeps `raw`
    from being JSON; None otherwise (no lone escape, or `raw` is malformed for another reason, such as bytes
    that are not UTF-8).
    A pair (`\\ud83d\\ude00`) is one character and not lone; an escaped backslash (`\\\\ud83d`) starts no escape."""
    lone: list[tuple[int, int]] = []  # (start, end) of each lone escape
    pending: tuple[int, int] | None = None  # a high surrogate waiting for its low half
    for m in _ESCAPE.finditer(raw):
        before = m.start()
        while before and raw[before - 1] == 0x5C:  # backslashes before it: an odd count makes it literal text
            before -= 1
        if (m.start() - before) % 2:
            continue
        high = int(m.group(1), 16) < 0xDC00
        if pending is not None and not high and pending[1] == m.start():
            pending = None  # the low half right after its high half: one character
            continue
        if pending is not None:
            lone.append(pending)
            pending = None
        if high:
            pending = (m.start(), m.end())
        else:
            lone.append((m.start(), m.end()))
    if pending is not None:
        lone.append(pending)
    if not lone:
        return None
    mended = bytearray(raw)
    for start, end in lone:
        mended[start:end] = b"\\ufffd"
    try:
        msgspec.json.decode(bytes(mended))
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):  # malformed otherwise, or not UTF-8 either
        return None
    start, end = min(lone)
    return start, raw[start:end].decode("ascii")


def lone_surrogate_problem(escape: str, offset: int) -> str:
    """The words for a lone surrogate escape found by `lone_surrogate_escape` (offset counted from 1)."""
    return (f"holds a lone UTF-16 surrogate escape (`{escape}` at byte {offset}), which is not text: half of "
            "a character, as a UTF-16 slice (JavaScript's `slice`) cuts an emoji; send the whole character or drop it")


_GRAPHEME = regex.compile(r"\X")


# Unicode's Bidi_Control characters (U+061C, U+200E-F, U+202A-E, U+2066-9): they reorder the text around them
BIDI_CONTROL = regex.compile(r"\p{Bidi_Control}")


def bidi_shown(code_point: str) -> str:
    """How a bidi control character is written where stored text is quoted for reading: its code point, "[U+202E]"."""
    return f"[U+{ord(code_point):04X}]"


# Unicode's control characters (Cc: C0, DEL, C1): a name never holds one (an attribute's: NUL reaches no audit's argument)
CONTROL = regex.compile(r"\p{Cc}")
# the bidi controls that reorder the text after them up to their closing one or the paragraph's end: the embeddings and
# overrides (U+202A-E) and the isolates (U+2066-9), with which "Trojan Source" (CVE-2021-42574) shows text other than it
# is. The marks (LRM, RLM, ALM) reorder nothing past their neighbours: a right-to-left name may hold them
BIDI_REORDERING = regex.compile(r"[\u202a-\u202e\u2066-\u2069]")
# U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (Zl, Zp): no control character, but a line's end to
# `str.splitlines` (the job runner's read of a worker's lines), to JavaScript and to a bidi paragraph
SEPARATOR = regex.compile(r"[\p{Zl}\p{Zp}]")
_NOT_IN_A_NAME = regex.compile(r"[\p{Cc}\p{Zl}\p{Zp}\u202a-\u202e\u2066-\u2069]")


def name_control_problem(name: str) -> str | None:
    """Why `name` (an attribute's, as a client names it) can name nothing an audit or the dashboard shows, or None: the
    first control character (`CONTROL`: NUL reaches no audit's argument, a newline splits its errors), line or paragraph
    separator (`SEPARATOR`: it splits them too) or bidi embedding, override or isolate (`BIDI_REORDERING`: the name
    would read reordered, or reorder what follows it) it holds, escaped and placed: "holds a bidi control (\\u202e
    U+202E RIGHT-TO-LEFT OVERRIDE at character 3), ...". For a 400."""
    found = _NOT_IN_A_NAME.search(name)
    if found is None:
        return None
    char, at = found.group(), found.start() + 1
    if CONTROL.match(char):
        return f"holds a control character ({controls_escaped(char)} at character {at}), which no audit can group by"
    if SEPARATOR.match(char):
        return (f"holds a {unicodedata.name(char).lower()} ({controls_escaped(char)} U+{ord(char):04X} at character {at}), "
                "which ends a line where it is read (an audit's errors), as a newline does")
    return (f"holds a bidi control ({controls_escaped(char)} U+{ord(char):04X} {unicodedata.name(char)} at character {at}), "
            "which shows the name reordered where it is read (the dashboard, an audit's report)")


# what an error never repeats as sent: control characters (a newline, a terminal's ESC), line and paragraph separators,
# bidi controls, and the backslash that begins each escape written for them (doubled, as `repr` writes it: an escape and
# the same characters sent differ)
_UNREPEATED = regex.compile(r"[\p{Cc}\p{Zl}\p{Zp}\p{Bidi_Control}\\]")


def controls_escaped(text: str) -> str:
    """`text` with each control character (Unicode's Cc: C0, DEL, C1), line or paragraph separator (U+2028, U+2029: each
    ends a line to `str.splitlines`, with which the job runner reads a worker's error) and bidi control (`BIDI_CONTROL`)
    written as Python's escape of it, and each backslash doubled, as `repr` (and so `shown`) writes them: how an error repeats a
    name a client chose (a field, a path), so an app showing the message shows what was sent, not text reordered by an
    override ("Trojan Source") nor a terminal's escape sequence obeyed, and an escape written here never reads as the
    same characters sent (the name ESC is `\\x1b`, the four characters `\\x1b` sent are `\\\\x1b`). Other characters
    stay as sent (a ZWJ inside an emoji, a combining mark).
    controls_escaped("\u202emodel\x1b") == "\\u202emodel\\x1b"; controls_escaped("a\\b") == "a\\\\b". For display only."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return _UNREPEATED.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def bidi_controls_shown(text: str) -> str:
    """`text` with each bidi control character (Unicode's Bidi_Control property: ALM U+061C, LRM/RLM U+200E/F, the
    embeddings and overrides U+202A-E, the isolates U+2066-9) written as its code point (`bidi_shown`): quoted for
    reading (a profile's summary, the operator's dashboard), an override no longer reverses what follows it, so the
    reader sees the text stored, not another ("\u202eLUN htiw 1 tpmorp live" read "evil prompt 1 with NUL").
    bidi_controls_shown("a\u202eb") == "a[U+202E]b". For display only: texts are stored and served as written."""
    return text if text.isascii() else BIDI_CONTROL.sub(lambda m: bidi_shown(m.group()), text)


def shorten(text: str, max_chars: int, mark: str = "\u2026") -> str:
    """`text` when it has at most `max_chars` characters (code points), else its longest head of whole
    grapheme clusters that leaves room for `mark`, then `mark`: at most `max_chars` characters in all.
    shorten("ab\U0001F44D\U0001F3FDc", 4) == "ab\u2026" (the thumb and its skin tone stay together)."""
    if len(text) <= max_chars:
        return text
    room, end = max(0, max_chars - len(mark)), 0
    for match in _GRAPHEME.finditer(text):  # lazily: stops at the first cluster past the room
        if match.end() > room:
            break
        end = match.end()
    return text[:end] + mark


MAX_SHOWN = 66  # characters of a value an error repeats (a model name, a choice, a tenant): sent at any length


def shown(value: object) -> str:
    """A value from a client or a command line as an error repeats it: `repr` of a string cut between
    grapheme clusters (`shorten`) to `MAX_SHOWN` characters (`'aaa...'`), any other value's text cut
    the same way. Echoed whole, a 50,000-character `model` came back as a 50 kB error body."""
    if isinstance(value, str):
        return repr(shorten(value, MAX_SHOWN, "..."))
    return shorten(str(value), MAX_SHOWN + 1, "...")


_NAME_SEPARATORS = regex.compile(r"[\s\-.]+")


def _name_words(name: str) -> tuple[str, ...]:
    return tuple(word for word in _NAME_SEPARATORS.sub("_", name.casefold()).split("_") if word)


def closest_name(name: str, names: Iterable[str], given: Container[str] = ()) -> str | None:
    """The one of `names` (a field's values, a row's columns, a route's parameters, a command's options) that the
    misspelt `name` most likely means, or None when none is close: first one that is `name` in another case or with
    `-`, `.` or a space for `_`, or its words in another order (`Chosen-Rating`, `chosen_score`: `chosen_rating`,
    `score_chosen`); then one a single slip away (`_fewest_edits`: `candidate`: `candidates`, not
    `candidate_styles`); then the only one whose words begin with `name`'s or begin `name`'s (`user`: `user_id`), or
    whose letters begin `name`'s or begin with them, 3 letters or more and half the other's (`edit`: `edited`,
    `output`: `out`); then the one fewest edits away, at most a third of the shorter's letters (`comparision`,
    `lenght`, `usr`). An edit is a letter added, dropped or changed, or two neighbours swapped (`trian`); a name of
    one or two letters takes only a letter added or dropped (`kk`: `k`, `ot`: `out`; `ab` is no `ac`). Of two as
    close, neither (`pal-c`: `pal-a` or `pal-b`). A name far from every one gets none: `edited` is no `predictive`,
    `chosen_score` no `chosen_model`, `title` no `tie`, `temp` no `stream`. None too when the closest is one of
    `given`, those the input holds already (a body's fields, a command line's options): the name is no slip of it
    (`max_token` beside `max_tokens`), and the next closest is no better a guess (`frequency_penaltys` beside
    `frequency_penalty` is no `presence_penalty`), so the given ones are matched as any other, not left out."""
    close = _closest_name(name, names)
    return None if close is not None and close in given else close


def _closest_name(name: str, names: Iterable[str]) -> str | None:
    if len(name) > 128:  # a name is short: a long text (a key of up to a MB) is no misspelling of one, and not read
        return None
    words = _name_words(name)
    if not words:
        return None
    candidates = [(other, _name_words(other)) for other in dict.fromkeys(names)]
    for other, its in candidates:
        if its == words or sorted(its) == sorted(words):
            return other
    spelt = "_".join(words)
    best = _fewest_edits(spelt, candidates)
    if best is not None and best[0] == 1:
        return best[1]
    leading = [other for other, its in candidates if its[: len(words)] == words or words[: len(its)] == its
               or _begins(spelt, "_".join(its))]
    if len(leading) == 1:
        return leading[0]
    return best[1] if best else None


def _fewest_edits(spelt: str, candidates: list[tuple[str, tuple[str, ...]]]) -> tuple[int, str] | None:
    """(edits, name) of the one of `candidates` (name, its words) fewest edits from `spelt` (words joined by `_`), at
    most a third of the shorter's letters (the `regex` module's fuzzy matching: a letter added, dropped or changed),
    a swap of two neighbours one (`_slip`); None when none is within that, or two are as few away (`pal-c`: `pal-a`
    and `pal-b`, a guess either way)."""
    # `spelt` fuzzily, one pattern an edit count (a row may hold thousands of keys: each is matched, none compiled)
    most = min(len(spelt), max((len("_".join(its)) for _, its in candidates), default=0)) // 3  # the most edits any is allowed
    within = [regex.compile(f"(?:{regex.escape(spelt)}){{e<={edits}}}") for edits in range(most + 1)]
    best: tuple[int, str] | None = None
    tied = False
    for other, its in candidates:
        target = "_".join(its)
        if _slip(spelt, target):
            edits = 1
        else:
            bound = min(len(spelt), len(target)) // 3  # none for a name of two letters: one edit is half of it
            if best is not None:
                bound = min(bound, best[0])
            if bound < 1 or abs(len(spelt) - len(target)) > bound or not within[bound].fullmatch(target):
                continue
            edits = next(edits for edits in range(1, bound + 1) if within[edits].fullmatch(target))
        if best is None or edits < best[0]:
            best, tied = (edits, other), False
        elif edits == best[0]:
            tied = True
    return None if tied else best


def _begins(spelt: str, other: str) -> bool:
    """Whether one of `spelt` and `other` begins the other, is 3 letters or more and half of it, and what the other adds
    ends its last word (`edit`, `edited`; `max_token` does not begin `max_tokens_limit`, its words do not)."""
    short, long = sorted((spelt, other), key=len)
    return len(short) >= 3 and 2 * len(short) >= len(long) and long.startswith(short) and "_" not in long[len(short):]


def _slip(spelt: str, other: str) -> bool:
    """Whether `other` is `spelt` with two neighbouring letters swapped (3 letters or more: `trian`, `prot`), or, for
    one of one or two letters, one letter added or dropped (`kk`, `ot`); the fuzzy match counts a swap two edits,
    over the third of a short name's letters that it allows, and allows none in a name of two letters."""
    if len(spelt) == len(other) >= 3:
        differ = [i for i, (a, b) in enumerate(zip(spelt, other, strict=True)) if a != b]
        return len(differ) == 2 and differ[1] == differ[0] + 1 and spelt[differ[0]] == other[differ[1]] and spelt[differ[1]] == other[differ[0]]
    short, long = sorted((spelt, other), key=len)
    return len(short) <= 2 and len(long) == len(short) + 1 and any(long[:i] + long[i + 1:] == short for i in range(len(long)))
