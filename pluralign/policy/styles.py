"""Answer styles that make a candidate set worth choosing between.

Reranking can only serve what was generated: if every candidate reads alike, no user model helps.
So the candidates of one request are generated in different styles, along three axes that people's
stated preferences about answers are mostly about (length, format, register):

    length:   brief (ends after its first sentence, or its second list item)  |  detailed
    format:   a list (bulleted items)                                          |  prose
    register: casual                                                           |  formal

A style is a system instruction, plus an opening the answer starts with (assistant prefill: the
model continues it) and, for brief answers, where the answer is cut. Openings and cuts are needed
because SmolLM2-135M follows style instructions weakly (measured: asked for "one short sentence" or
"a bulleted list" it mostly wrote the same 48-token paragraph); a larger model follows the
instruction alone, and the openings stay harmless.

For n candidates, styles are drawn so every axis is balanced: n = 4 is a half fraction of the 2^3
design (every axis has two of each side, and every pair of axes all four combinations once), chosen
by the request's seed; n = 2 takes two opposite corners; n >= 8 takes all eight; other n start
with a half fraction.

A question that asks for a yes-or-no judgement ("Do you agree with this statement? ...", "Should I
...?") gets a fourth axis, stance (yes | no): the candidate set then holds both answers, so a user
who holds the less common view can be served it at all. This is Overton pluralism in the sense of
Sorensen et al. (2024, "A Roadmap to Pluralistic Alignment"): the candidates span the reasonable
answers and the user model picks among them. Stance is balanced too (two of each for n = 4); with
four runs it must share its pattern with one of the other axes, so which axis (and which sign) is
drawn from the seed, and over requests a user model can tell stance from length, format and tone.
`asks_judgement` is a deliberately simple test (the message opens with an auxiliary verb and asks a
question that offers no alternatives: "Should I learn Python or Rust first?" is not a judgement, and
"Yes." would not answer it); a false positive costs only two candidates that open with "Yes"/"No".

The instructions and openings are English. A question written mostly in another script than Latin
(`in_latin_script`: Chinese, Cyrillic, Arabic, ...) is generated from the instructions alone (`for_question`):
an English opening there began every answer in English, and the model often went on in it. A question in
another language written in Latin script (French, Spanish, Vietnamese) still gets the English openings:
telling languages of one script apart needs a language model, and the model mostly follows the opening's
language. A brief answer in Chinese or Japanese ends at its first '。', '！' or '？'.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

AXES = (("brief", "detailed"), ("list", "prose"), ("casual", "formal"))

_INSTRUCTIONS = {
    "brief": "Answer in one short sentence.",
    "detailed": "Answer in detail.",
    "list": "Format the answer as a bulleted list.",
    "prose": "Write the answer as prose, without lists.",
    "casual": "Use a casual, friendly tone, like talking to a friend.",
    "formal": "Use a formal, professional tone.",
}
_OPENINGS = {
    ("casual", "list"): "Sure thing! Here are a few ideas:\n- ",
    ("casual", "prose"): "Sure thing! ",
    ("formal", "list"): "Certainly. Consider the following:\n- ",
    ("formal", "prose"): "Certainly. ",
}
_STANCE_OPENINGS = {  # (register, stance) -> the answer's first words
    ("casual", "yes"): "Oh yes, for sure!",
    ("casual", "no"): "Nope, not really!",
    ("formal", "yes"): "Yes.",
    ("formal", "no"): "No.",
}
_STANCE_INSTRUCTIONS = {"yes": "Answer yes, and say why.", "no": "Answer no, and say why."}
_LIST_LEADS = {"casual": "Here's why:\n- ", "formal": "Consider the following:\n- "}
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|[。！？]")  # CJK sentences end at their full-width marks, unspaced
_JUDGEMENT = re.compile(
    r"^\s*(?:do|does|did|is|are|was|were|can|could|should|would|will|shall|have|has|am|may|might|must)\b[^?]*\?",
    re.IGNORECASE,
)
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')  # a statement asked about: its words are not the question's
_PROPOSITION = re.compile(  # "is it true that ...", "is it true or false that ...": the rest is the statement
    r"\b(?:true(?:\s+or\s+false)?|false(?:\s+or\s+true)?|agree|the case)\s+that\b.*", re.IGNORECASE | re.DOTALL)
_ALTERNATIVES = re.compile(r"(?<!\byes\s)\b(?:or|versus|vs)\b(?!\s+not\b)", re.IGNORECASE)  # not "or not", "yes or no"
_OR_NEXT = re.compile(r"^\s*(?:or|else)\b(?!\s+not\b)", re.IGNORECASE)  # "Should I buy? Or lease?": an alternative
_QUESTION_MARKS = str.maketrans({"\uff1f": "?", "\ufe56": "?"})  # full-width and small question marks


def last_question(messages) -> str:
    """The text of the last user message ("" for none, or for content that is not a string)."""
    last = next((m.get("content") or "" for m in reversed(list(messages)) if m.get("role") == "user"), "")
    return last if isinstance(last, str) else ""


_WORD = re.compile(r"[^\W\d_]+")  # a run of letters
_UNSPACED = ("CJK UNIFIED IDEOGRAPH", "HIRAGANA", "KATAKANA")  # written without spaces: each character a unit


def _script(ch: str) -> str:
    """"latin", "unspaced" (a Chinese or Japanese character) or "other", by the letter's Unicode name."""
    if ch.isascii():
        return "latin"
    name = unicodedata.name(ch, "")
    return "latin" if name.startswith("LATIN") else "unspaced" if name.startswith(_UNSPACED) else "other"


def in_latin_script(text: str) -> bool:
    """Whether more than half the words of `text` are written in Latin letters (their Unicode names begin "LATIN":
    ASCII and accented alike), or it has none. A word is a run of letters of one script: in Chinese and Japanese,
    written without spaces, each character counts as one, and a Latin word set among them unspaced ("iPhone怎么截屏？",
    "Python和Rust哪个更好学？") is a word of its own (taken as one word with the run, Latin by its
    first letter, such questions would get the English openings). So an English question quoting a Chinese word is
    Latin, and a Chinese one naming two English words is not; nor is a question of as many Latin words as others
    ("Как настроить Wi-Fi на iPhone?": half its words Latin). Digits, punctuation and spaces do
    not count; a combining mark (a vowel sign, a virama: Unicode category M) is part of its letter's word (`\\w` takes no
    mark, and would split "धन्यवाद" into three words, and make "What does धन्यवाद mean?" another script than Latin)."""
    if not text.isascii():  # the marks go: the letters either side of one are one word
        text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("M"))
    latin = other = 0
    for word in _WORD.findall(text):
        previous = None
        for ch in word:
            script = _script(ch)
            if script == "unspaced":
                other += 1
            elif script != previous:  # a run of one script's letters begins
                latin, other = (latin + 1, other) if script == "latin" else (latin, other + 1)
            previous = script
    return latin > other or latin == other == 0


def asks_judgement(messages) -> bool:
    """Whether the last user message asks a yes-or-no question: it opens with an auxiliary verb and
    has a question mark (full-width '？' counts), and neither the question (up to its first '?') nor a
    sentence after it opening with "or" offers alternatives to choose from. 'Do you agree with this
    statement? "..."', 'Is it true that ...?', 'Is it true or false that ...?', 'Should I go or not?'
    ask a judgement; 'Should I learn Python or Rust first?', 'Should I buy a car? Or lease one?' and
    'A, B or C?' do not. Words inside double quotes and after "true that" / "agree that" are the
    statement judged, so an "or" there offers no alternative.

    Only English is read: a question in another language, or one that does not open with an
    auxiliary verb ("So, should I go?", "You agree, right?"), is never taken for a judgement."""
    last = last_question(messages).translate(_QUESTION_MARKS)
    found = _JUDGEMENT.match(last)
    if found is None:
        return False
    question = _PROPOSITION.sub("", _QUOTED.sub("", found.group(0)))
    if _ALTERNATIVES.search(question) is not None:
        return False
    rest = _QUOTED.sub("", last[found.end():])
    return not any(_OR_NEXT.match(sentence) for sentence in re.split(r"(?<=[.!?])", rest))


@dataclass(frozen=True)
class AnswerStyle:
    length: str  # "brief" | "detailed"
    format: str  # "list" | "prose"
    register: str  # "casual" | "formal"
    stance: str | None = None  # "yes" | "no" for a question asking a judgement, else None
    prefilled: bool = True  # whether the answer starts with the style's opening (False: the instruction alone)

    @property
    def name(self) -> str:
        base = f"{self.length}-{self.format}-{self.register}"
        return base if self.stance is None else f"{base}-{self.stance}"

    @property
    def instruction(self) -> str:
        sides = " ".join(_INSTRUCTIONS[side] for side in (self.length, self.format, self.register))
        return sides if self.stance is None else f"{_STANCE_INSTRUCTIONS[self.stance]} {sides}"

    @property
    def opening(self) -> str:
        if not self.prefilled:
            return ""
        if self.stance is None:
            return _OPENINGS[(self.register, self.format)]
        first = _STANCE_OPENINGS[(self.register, self.stance)]
        return f"{first} {_LIST_LEADS[self.register]}" if self.format == "list" else f"{first} "

    def under_stops(self, stop: Sequence[str]) -> AnswerStyle:
        """The style as generated under a request's stop strings: without its opening when a stop string is in it
        (the answer would end inside words the model never wrote: `stop: "."` made the formal styles' answers
        `Certainly`, `stop: "\n"` the list styles' a lead-in with no list), from its instruction alone."""
        if self.prefilled and any(s and s in self.opening for s in stop):
            return dataclasses.replace(self, prefilled=False)
        return self

    def for_question(self, messages, latin: bool | None = None) -> AnswerStyle:
        """The style as generated for the conversation `messages`: without its (English) opening when the last user
        message is written mostly in another script than Latin (`in_latin_script`), from its instruction alone.
        `latin`: that test's answer, read once for several styles (~20 ms for a message of 20,000 characters)."""
        if latin is None:
            latin = in_latin_script(last_question(messages))
        if self.prefilled and not latin:
            return dataclasses.replace(self, prefilled=False)
        return self

    def messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The conversation with the style's instruction appended to its system message (or as one)."""
        out = [dict(m) for m in messages]
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{self.instruction}"
        else:
            out.insert(0, {"role": "system", "content": self.instruction})
        return out

    def finish(self, continuation: str) -> tuple[str, bool]:
        """The answer's text from the model's continuation of the opening, and whether it was cut.

        A brief prose answer ends at the end of its first sentence or line after the opening; a
        brief list keeps the intro line and two items."""
        if self.opening.endswith("- "):  # the first list item continues the opening's marker
            text = self.opening + continuation.strip()
        else:
            text = self.opening.rstrip(" ") + " " + continuation.strip()
        if self.length != "brief":
            return text.strip(), False
        if self.format == "list":
            lines = text.splitlines()
            items = [i for i, line in enumerate(lines) if line.lstrip().startswith("- ")]
            if len(items) > 2:
                return "\n".join(lines[: items[2]]).strip(), True
            return text.strip(), False
        start = len(self.opening.rstrip())  # the opening's own sentence ("Certainly.") is not the answer's
        ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() > start]
        breaks = [i for i in (text.find("\n", start + 2),) if i > 0]
        cut = min(ends + breaks, default=None)
        return (text[:cut].strip(), True) if cut is not None and cut < len(text.rstrip()) else (text.strip(), False)


ALL_STYLES = tuple(AnswerStyle(*combo) for combo in itertools.product(*AXES))


def choose_styles(n: int, seed: int | None = None, *, stances: bool = False) -> list[AnswerStyle]:
    """n styles with every axis balanced (see the module docstring); deterministic under `seed`.

    With `stances` (a question asking a judgement, see `asks_judgement`), each style also takes a
    stance, yes or no, balanced over the n styles: it follows one of the three axes, or its
    opposite, drawn from the seed. Raises ValueError when n < 1."""
    styles = _choose(n, seed)
    if not stances:
        return styles
    rng = random.Random(f"stance-{seed}")
    axis, flip = rng.randrange(3), rng.randrange(2)
    out = []
    for i, s in enumerate(styles):
        if n < 4 and n != 2:  # too few for a balanced design along an axis: alternate
            yes = i % 2 == flip
        else:
            yes = AXES[axis].index((s.length, s.format, s.register)[axis]) == flip
        out.append(AnswerStyle(s.length, s.format, s.register, "yes" if yes else "no"))
    return out


def _choose(n: int, seed: int | None) -> list[AnswerStyle]:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    if n >= len(ALL_STYLES):
        styles = list(ALL_STYLES)
        rng.shuffle(styles)
        return [styles[i % len(styles)] for i in range(n)]
    if n == 2:  # opposite corners: the two candidates differ on every axis
        first = rng.choice(ALL_STYLES)
        return [first, AnswerStyle(*(pair[1 - pair.index(v)] for pair, v in zip(AXES, (first.length, first.format, first.register), strict=True)))]
    parity = rng.randrange(2)  # which half fraction of the 2^3 design
    half = [s for s in ALL_STYLES if sum(AXES[a].index(v) for a, v in enumerate((s.length, s.format, s.register))) % 2 == parity]
    other = [s for s in ALL_STYLES if s not in half]
    rng.shuffle(half)
    rng.shuffle(other)
    return (half + other)[:n]
