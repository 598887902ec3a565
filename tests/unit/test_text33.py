"""Answers that differ only by characters that render as nothing (a soft hyphen, a zero-width space,
a word joiner, a byte-order mark, bidi marks, variation selectors) are one answer, through the
library: a preference file's pair of them is refused like identical answers, a profile shows them
once. Joiners that change what is drawn (ZWJ, ZWNJ), tag characters and Hangul fillers still count."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pluralign.data.io import read_preferences
from pluralign.data.text import answer_key, comparable, look_key, pickable
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


def test_answers_a_person_cannot_tell_apart_are_one_answer_and_those_drawn_otherwise_stay_two():
    """Session spell62: `look_key`, what offering and taking a pair reads (`answer_key` kept NBSP, two spaces, a tab
    and a ligature apart). Line breaks and the compatibility forms drawn otherwise still tell answers apart."""
    alike = ["It is fine.", "It is\u00a0fine.", "It  is fine.", "It\tis fine.", "It is \ufb01ne.", "It\u202fis fine.",
             " It is fine.\u3000", "It is\u00ad fine."]
    assert {look_key(t) for t in alike} == {"It is fine."} and pickable(alike) == [0]
    assert look_key("\ufefb") == "\u0644\u0627"  # an Arabic presentation form: the lam-alef a font draws
    apart = [("x\u00b2", "x2"), ("\u2460", "1"), ("\uff23af\u00e9", "Caf\u00e9"), ("\u017fun", "sun"), ("a\nb", "a b"),
             ("a\n\nb", "a\nb"), ("\U0001d400", "A")]
    assert [look_key(x) == look_key(y) for x, y in apart] == [False] * len(apart)
    assert look_key("a \r\n b") == look_key("a\nb") and look_key("\ufb01\u0301") == "f\u00ed"  # one line break; NFC after


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


# Thai (real text): "Today the weather is very nice", one unspaced run, and its first word "today"
THAI_SENTENCE, THAI_WORD = "วันนี้อากาศดีมาก", "วันนี้"
THAI_ANSWER = "สวัสดีครับ วันนี้อากาศดีมาก เราไปเที่ยวสวนสาธารณะกันเถอะ"  # "Hello. The weather is very nice today; let's go to the park."
TEXT_FEATURES_3 = {  # what text-features-3 gave: English (and other spaced or ideographic scripts) are unchanged
    "Yes! You'll love it. It's great.": (1.9459101490553132, 0.0, 0.3333333333333333, 3.0, -0.5, 1.6666666666666667, 1.0),
    'The committee recommends:\n- a review\n- a plan': (2.0794415416798357, 1.0986122886681096, 0.0, 0.0, 0.35714285714285676, 0.0, 0.0),
    'Привет, мир! Как дела?': (1.6094379124341003, 0.0, 0.5, 0.0, -0.5, 0.0, 0.0),
    '今天天气很好。': (1.9459101490553132, 0.0, 0.0, 0.0, -3.5, 0.0, 0.0),
    "Café crème, s'il vous plaît.": (1.791759469228055, 0.0, 0.0, 0.0, -0.09999999999999964, 0.0, 0.0),
}


def test_thai_words_count_grapheme_clusters_not_one_word_per_unspaced_run():
    from pluralign.user.features import FEATURE_NAMES, response_features

    length = FEATURE_NAMES.index("length")
    sentence, word, answer = response_features([THAI_SENTENCE, THAI_WORD, THAI_ANSWER])[:, length]
    assert sentence > word + 0.5, (sentence, word)  # a sentence is longer than its first word
    assert np.expm1(answer) > 30, answer  # 3 runs of 10-20 letters each: not 3 words


def test_the_features_version_moves_and_other_scripts_keep_their_features():
    from pluralign.user.features import FEATURES_VERSION, text_features

    assert FEATURES_VERSION == "text-features-6"  # stored user states of earlier features refit (UserModel.fits)
    for text, before in TEXT_FEATURES_3.items():
        assert text_features(text) == pytest.approx(before), text


def test_an_implicit_prompt_never_ends_inside_a_grapheme_cluster_and_is_shared_across_normal_forms(tmp_path):
    """TRL's implicit-prompt form: chosen and rejected share the prompt as a prefix. Compared
    character by character, two family emoji that differ in their last person shared "man ZWJ woman
    ZWJ" (a prompt ending in a zero-width joiner, answers starting with a lone child), and a prompt one
    side spelt in NFD shared only "Caf"."""
    import unicodedata

    family = "Which one is ours: \U0001F468\u200d\U0001F469\u200d\U0001F467"
    rows = [
        {"user_id": "u1", "chosen": family + " or the other?", "rejected": family[:-1] + "\U0001F466 or the other?"},
        {"user_id": "u1", "chosen": "Un café ? Oui.", "rejected": unicodedata.normalize("NFD", "Un café ? Non.")},
        {"user_id": "u1", "chosen": "Accent: e\u0301 is it", "rejected": "Accent: e\u0300 is it"},
        {"user_id": "u1", "chosen": "Q: yes", "rejected": "Q: no"},  # as TRL: the space goes with the answer
    ]
    path = tmp_path / "implicit.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    records, _ = read_preferences(path)
    assert [r.prompt for r in records] == ["Which one is ours:", "Un café ?", "Accent:", "Q:"]
    assert records[0].chosen.startswith(" \U0001F468\u200d") and records[0].rejected.endswith("\U0001F466 or the other?")
    assert [r.chosen for r in records[1:]] == [" Oui.", " e\u0301 is it", " yes"]


def test_look_key_reads_an_answer_with_nothing_to_fold_without_a_step_per_character(monkeypatch):
    """Review spell62: `look_key` redrew each space through a Python callback and each non-ASCII character through
    `_drawn_as`, for every answer (next-comparison reads it 3 times per row of a user's history and 5 times per stored
    pair drawn: 0.3 ms per row, against `answer_key`'s 0.01). An answer of words and single spaces in NFKC has nothing
    to fold and is read whole; one that has still folds."""
    import pluralign.data.text as text

    calls = []
    spaces, drawn = text._spaces_shown, text._drawn_as
    monkeypatch.setattr(text, "_spaces_shown", lambda run: calls.append("space") or spaces(run))
    monkeypatch.setattr(text, "_drawn_as", lambda char: calls.append("char") or drawn(char))
    plain = ["The co-op opens at nine.", "Caf\u00e9 \u00fcber na\u00efve, \u4eca\u65e5\u306f.", "Cafe\u0301 opens."]
    assert [look_key(t) for t in plain] == [answer_key(t) for t in plain] and calls == []
    assert look_key("It  is \ufb01ne.") == "It is fine." and calls.count("space") == 1 and "char" in calls
