"""Named, interpretable features of an answer's text, for the per-user part of the user model.

A frozen MiniLM vector (truncated at 256 word pieces, trained for semantic similarity) says little
about how an answer is written. The preferences people state about answers are mostly about that:
"shorter", "as a list", "less formal" (the style axes of LoRe's and HyRe's user studies, and of
chatbot-arena style controls), and, for a question asking a yes-or-no judgement, whether the answer
says yes or no (`affirmation`: the stance the candidate styles vary, see `pluralign.policy.styles`;
without it a minority's "no" is learned only through the slower latent part). Each feature below is cheap (one regex pass), bounded, and named so a
user's coefficient on it reads as a sentence: a negative weight on `length` is "prefers shorter
answers". Only differences between two answers of one prompt enter a Bradley-Terry margin, so no
feature is centred.

Any script: a word is a run of letters (with their combining marks) of any alphabet, and in scripts
written without spaces (Chinese, Japanese) each character counts as one word, so `length` measures a
Chinese, Russian, Arabic, Hebrew or Hindi answer as it does an English one (an English text's
features are what they were). Sentences also end at 。！？ ؟ and the Devanagari danda, and a
full-width ！ is an exclamation mark. A text is read in NFC (its NFD spelling has the same features).
`contractions`, `second_person` and `affirmation` read English words only: in other languages they
stay 0 and say nothing (docs/api.md). Thai, Lao, Khmer and Burmese, also written without spaces
between words (a space ends a phrase or sentence), count each grapheme cluster (a consonant with its
vowel and tone marks, the `regex` module's \\X) as one word: a proxy, as Chinese characters are, since
splitting them into words needs a dictionary (ICU, PyThaiNLP). Before `text-features-4` a whole
unspaced run of them was one word, so a Thai answer's `length` barely moved with its length.
`affirmation` reads the answer's opening yes or no (`_affirmation`): before `text-features-5` a "not" or "never"
anywhere in the first three words read as no ("Do not over plan the details."); before `text-features-6` the
punctuation between the opening words was not read ("No. One reason ..." had no stance, "Absolutely no." read yes).

Shape: `response_features(texts)` -> (N, F) float64, columns in FEATURE_NAMES order.

The features of the texts read are cached (`text_features`), each tenant's entries its own and shared fairly between
tenants (`pluralign.cache.FairLRU`, the policy of the users' histories cache): one tenant's many texts push out its
own entries once it holds more than any other, never a smaller tenant's. A text's features do not depend on who sent
it, but an entry shared by tenants would leak: a hit costs a digest, a miss a regex pass, so a tenant timing a text it
guesses would learn whether another tenant's users had sent or been shown it. So the same text under two tenants is
computed and kept twice. The tenant is the work's (`scope`, else the service's caller: `pluralign.turns.CALLER`,
set for each request's task and threads); the CLI and jobs, with neither set, share one scope of their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import itertools
import math
import re
import threading
import unicodedata
from collections.abc import Iterator, Sequence

import numpy as np
import regex

from pluralign.cache import FairLRU
from pluralign.turns import CALLER

FEATURES_VERSION = "text-features-6"  # bump when a definition changes: stored user states refit
FEATURE_NAMES = ("length", "list_items", "exclamations", "contractions", "word_length", "second_person", "affirmation")
FEATURE_DESCRIPTIONS = {
    "length": ("longer answers", "shorter answers"),
    "list_items": ("answers formatted as lists", "answers in prose, without lists"),
    "exclamations": ("exclamation marks", "answers without exclamation marks"),
    "contractions": ("contractions (a casual register)", "no contractions (a formal register)"),
    "word_length": ("longer words (a formal register)", "shorter, plainer words"),
    "second_person": ("addressing the reader as 'you'", "not addressing the reader as 'you'"),
    "affirmation": ("answers that open with yes (agreeing)", "answers that open with no (disagreeing)"),
}
# what an answer has, (more, less), said after "with" where a sentence names features together ("prefers shorter
# answers with no exclamation marks"): each of FEATURE_DESCRIPTIONS' phrases is one of its own, not a thing an answer has
FEATURE_TRAITS = {
    "length": ("more words", "fewer words"),
    "list_items": ("list formatting", "no lists"),
    "exclamations": ("exclamation marks", "no exclamation marks"),
    "contractions": ("contractions (a casual register)", "no contractions (a formal register)"),
    "word_length": ("longer words (a formal register)", "shorter, plainer words"),
    "second_person": ("'you' addressing the reader", "no 'you' addressing the reader"),
    "affirmation": ("an opening yes (agreeing)", "an opening no (disagreeing)"),
}

_ASCII_WORD = re.compile(r"[A-Za-z][A-Za-z'’]*")  # the English definition (and a faster pass for ASCII text)
# in ASCII this finds exactly what _ASCII_WORD does; ideographs and kana one by one
# Thai, Lao, Khmer, Burmese letters: one word per grapheme cluster (a letter and its marks)
_WORD = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]|(?=[\p{L}&&[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]])\X"
                      r"|[\p{L}\p{M}--\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]"
                      r"[\p{L}\p{M}'’--\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]*", regex.V1)
_LIST_LINE = re.compile(r"^\s*(?:[-*•+]|\d{1,2}[.)])\s+\S")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)|[。！？؟।]+")
_CONTRACTION = re.compile(r"[A-Za-z](?:n['’]t|['’](?:re|ll|ve|m|d|s))\b", re.IGNORECASE)
_YES = frozenset({"yes", "yeah", "yep", "yup", "absolutely", "definitely", "agreed", "indeed"})
_NO = frozenset({"no", "nope", "nah", "disagree"})  # say no wherever they stand in the opening
_NEGATION = frozenset({"not", "never"})  # say no only as the answer's first word or right after an intensifier
_INTENSIFIER = frozenset({"absolutely", "definitely"})  # yes words a "not" negates: "absolutely not" (but "Yes, not all")
_NO_DETERMINER = frozenset({"one", "doubt", "matter", "wonder", "longer"})  # "no one", "no doubt": not an answer of no
_APOSTROPHE = re.compile(r"['’]")
_YOU = re.compile(r"\byou(?:r|rs|rself|['’](?:re|ll|ve|d))?\b", re.IGNORECASE)


FEATURES_CACHED = 1 << 16  # texts whose features are kept, of all tenants (~0.43 KB each traced in a FairLRU, ~27 MB at the bound)

# the tenant whose work reads features now (`scope`); None: the service's caller (`pluralign.turns.CALLER`)
_SCOPE: contextvars.ContextVar[str | None] = contextvars.ContextVar("pluralign_features_scope", default=None)
_cached: FairLRU[bytes, tuple[float, ...]] = FairLRU(lambda features: 1)  # (tenant, digest) -> features; counts entries
_lock = threading.Lock()


@contextlib.contextmanager
def scope(tenant: str) -> Iterator[None]:
    """The features read in the block are cached as `tenant`'s (work for a tenant outside a request of its: a refit
    on a worker thread)."""
    token = _SCOPE.set(f"tenant:{tenant}")
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _digest(text: str) -> bytes:
    """The features' cache key: a 16-byte digest of the text, not the text. Keyed by the text (functools.lru_cache), the
    cache kept every text read, up to 20,000 characters each (80 KB of emoji), for 65,536 texts, whoever sent them and
    after their user's DELETE."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def text_features(text: str) -> tuple[float, ...]:
    """The F features of one answer (see the module docstring for their meaning and scale). Cached by the text's
    digest (`_digest`) under the tenant of the work (module docstring): a refit reads the same stored answers again,
    and a regex pass is most of a refit's cost (a hit costs the digest, 1-3 us for 200 characters, 1-5% of a pass)."""
    tenant, key = _SCOPE.get() or CALLER.get(), _digest(text)
    with _lock:
        found = _cached.get(tenant, key)
    if found is not None:
        return found
    found = _computed(text)
    with _lock:
        _cached.put(tenant, key, found)
        _cached.evict(FEATURES_CACHED)
    return found


def _computed(text: str) -> tuple[float, ...]:
    """`text_features`, not cached."""
    if text.isascii():
        found = list(_ASCII_WORD.finditer(text))
    else:
        text = unicodedata.normalize("NFC", text)
        found = list(_WORD.finditer(text))
    words = [m.group() for m in found]
    n_words = len(words)
    lines = [line for line in text.splitlines() if line.strip()]
    sentences = max(1, len(_SENTENCE_END.findall(text)))
    per_word = 10.0 / max(n_words, 1)  # counts per 10 words
    return (
        math.log1p(n_words),  # a doubling of the length adds ~0.69
        math.log1p(sum(1 for line in lines if _LIST_LINE.match(line))),  # list items: 0 for prose, ~1.1 for 2 items
        min((text.count("!") + text.count("！")) / sentences, 2.0),  # exclamation marks per sentence
        min(len(_CONTRACTION.findall(text)) * per_word, 3.0),  # contractions per 10 words
        (sum(len(w) for w in words) / n_words - 4.5) if n_words else 0.0,  # mean letters per word, minus 4.5
        min(len(_YOU.findall(text)) * per_word, 3.0),  # 'you' forms per 10 words
        _affirmation(words[:4], _joined(text, found[:4])),  # +1 opens with yes, -1 with no, 0 neither (a stance on a yes-or-no question)
    )


def _joined(text: str, found: Sequence[re.Match]) -> list[bool]:
    """For each of the words `found` but the last, whether the next follows it across whitespace only (no
    punctuation between: "no one", not "No. One")."""
    return [not text[a.end():b.start()].strip() for a, b in itertools.pairwise(found)]


def _affirmation(opening: Sequence[str], joined: Sequence[bool] | None = None) -> float:
    """+1, -1 or 0: the stance of an answer's opening, its first three words (`opening`: its first four, the fourth
    only read after a third; `joined`: `_joined` of them, None: all joined): the first yes or no word among them
    decides. "not" and "never" say no only as the first word ("Not really", "Never.") or right after "absolutely"
    or "definitely", which they negate ("Absolutely not"; "Yes, not everyone agrees" and "Absolutely, not a
    problem" are yes); elsewhere they negate a verb, not the question ("Do not over plan the details", "I would
    never ..."): until `text-features-5` any of them in the first three words read as no (trial16_51). "no"
    right before "one", "doubt", "matter", "wonder", "longer" is a determiner, not an answer ("No one knows"; "No.
    One reason ..." is no; a word is read without its 's: "No one's sure"); "no" after an intensifier is no
    ("Absolutely no."). Until `text-features-6` punctuation was not read: "No. One reason" and "Absolutely, not a
    problem" had no stance or the wrong one, as "No one's sure" had."""
    first = [_APOSTROPHE.split(w.lower().strip("'’"))[0] for w in opening]  # "one's" is "one"
    for i, word in enumerate(first[:3]):
        after = first[i + 1] if i + 1 < len(first) and (joined is None or joined[i]) else ""
        if word in _YES:
            if word in _INTENSIFIER and after in _NO | _NEGATION:
                return -1.0
            return 1.0
        if word in _NO and not (word == "no" and after in _NO_DETERMINER):
            return -1.0
        if word in _NEGATION and i == 0:
            return -1.0
    return 0.0


def response_features(texts: Sequence[str]) -> np.ndarray:
    """(N, F) float64 features of N answer texts, columns in FEATURE_NAMES order."""
    if not len(texts):
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.asarray([text_features(t) for t in texts], dtype=np.float64)
