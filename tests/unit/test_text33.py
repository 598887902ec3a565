"""Answers that differ only by characters that render as nothing (a soft hyphen, a zero-width space,
a word joiner, a byte-order mark, bidi marks, variation selectors) are one answer, through the
library: a preference file's pair of them is refused like identical answers, a profile shows them
once. Joiners that change what is drawn (ZWJ, ZWNJ), tag characters and Hangul fillers still count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.data.io import read_preferences
from pluralign.data.text import answer_key, comparable
from pluralign.user.summary import describe_prototypes

COOP = "The co-op opens at nine."
INVISIBLE = {  # each spelling reads exactly as COOP
    "soft hyphen": "The co-op o\u00adpens at nine.",
    "zero-width space": "The co-op\u200b opens at nine.",
    "word joiner": "The co-op opens\u2060 at nine.",
    "byte-order mark": "The co-op \ufeffopens at nine.",
    "bidi marks": "The \u200eco-op\u200f opens \u202aat\u202c \u2066nine\u2069.",
    "variation selector": "The co-op opens at nine\ufe0e.",
}
KEPT = [  # pairs a reader sees (or a renderer draws) as different: never one answer
    ("\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F468\U0001F469\U0001F467"),  # a family emoji, three people
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "\u0645\u06cc\u062e\u0648\u0627\u0647\u0645"),  # Persian: ZWNJ keeps the letters apart
    ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u0937"),  # Devanagari: ZWJ asks for a half form, not the conjunct
    ("\U0001F3F4\U000E0067\U000E0062\U000E0077\U000E006C\U000E0073\U000E007F", "\U0001F3F4"),  # Wales' flag, a black flag
    ("\u1100\u1160x", "\u1100x"),  # an old Hangul syllable's filler
]


@pytest.mark.parametrize("kind", sorted(INVISIBLE))
def test_answers_differing_only_by_invisible_characters_are_one_answer(kind):
    assert answer_key(INVISIBLE[kind]) == answer_key(COOP)
    assert comparable(INVISIBLE[kind]) == COOP


@pytest.mark.parametrize("pair", KEPT)
def test_joiners_tags_and_hangul_fillers_still_tell_answers_apart(pair):
    assert answer_key(pair[0]) != answer_key(pair[1])
    assert comparable(pair[0]) == pair[0]


def test_a_preference_file_pair_differing_only_by_a_soft_hyphen_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"user_id": "u1", "prompt": "When?", "chosen": COOP, "rejected": INVISIBLE["soft hyphen"]},
            {"user_id": "u1", "prompt": "When?", "chosen": COOP, "rejected": "Never."}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    records, report = read_preferences(path, skip_bad=True)
    assert [r.rejected for r in records] == ["Never."]
    assert report.skipped == 1 and "rejected" in str(report.errors) and "same answer" in str(report.errors), report


def test_a_profile_shows_an_answer_once_whatever_invisible_characters_it_holds():
    answers = [COOP, INVISIBLE["zero-width space"], INVISIBLE["word joiner"], "Tea.", "Water."]
    scores = np.array([[4.0], [3.0], [2.0], [1.0], [0.0]])
    (described,) = describe_prototypes(scores, ["p"] * 5, answers, per_side=2, max_chars=200)
    shown = [x.answer for x in described.highest + described.lowest]
    assert sum(a.replace("\u200b", "").replace("\u2060", "") == COOP for a in shown) == 1, shown
