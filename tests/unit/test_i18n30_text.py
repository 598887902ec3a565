"""Text in every script through the library: a preference file's NFC/NFD pair is one answer, what it
holds is read back as written (JSONL and Parquet), and a profile's example answers are cut between
grapheme clusters. The helpers themselves (`answer_key`, `shorten`) at the end."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import regex

from pluralign.data.io import read_preferences
from pluralign.user.summary import describe_prototypes

CAFE = "Un café, s'il vous plaît."
SCRIPTS = ["今天天气很好。", "日本語のテキストです。", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया", "Привет, мир",
           "👩🏽‍💻 🏳️‍🌈 👨‍👩‍👧‍👦", unicodedata.normalize("NFD", CAFE), unicodedata.normalize("NFD", "한국어"), "a\u200bb\u200d", "東京 Москва مع"]
GRAPHEMES = ["👨‍👩‍👧‍👦", "👍🏽", "🏳️‍🌈", "🇯🇵", "e\u0301\u0323", "क्षि", unicodedata.normalize("NFD", "한"), "x"]


def graphemes(text: str) -> list[str]:
    return regex.findall(r"\X", text)


def rows(pairs) -> list[dict]:
    return [{"user_id": "u1", "prompt": f"Q{i}", "chosen": c, "rejected": r} for i, (c, r) in enumerate(pairs)]


def write(tmp_path, kind: str, records: list[dict]):
    path = tmp_path / f"p.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_a_pair_of_one_text_in_nfc_and_nfd_is_refused_like_identical_answers(tmp_path, kind):
    path = write(tmp_path, kind, rows([("Oui.", "Non."), (CAFE, unicodedata.normalize("NFD", CAFE))]))
    records, report = read_preferences(path, skip_bad=True)
    assert [r.chosen for r in records] == ["Oui."]
    assert report.skipped == 1 and "rejected" in str(report.errors), report


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_texts_in_every_script_are_read_as_written(tmp_path, kind):
    path = write(tmp_path, kind, rows((text, text + " ?") for text in SCRIPTS))
    records, _ = read_preferences(path)
    assert [r.chosen for r in records] == SCRIPTS  # NFD stays NFD, joiners stay


def test_a_profile_shows_an_answer_once_whatever_its_normal_form_and_cuts_between_graphemes():
    long = "".join(GRAPHEMES) * 40
    answers = [CAFE, unicodedata.normalize("NFD", CAFE), long, "Tea.", "Water."]
    scores = np.array([[4.0], [3.0], [2.0], [1.0], [0.0]])
    (described,) = describe_prototypes(scores, ["p"] * 5, answers, per_side=2, max_chars=101)
    shown = [x.answer for x in described.highest + described.lowest]
    assert len(shown) == 4 and sum(unicodedata.normalize("NFC", a) == CAFE for a in shown) == 1, shown
    cut = next(a for a in shown if a.endswith("…"))
    assert len(cut) <= 101 and graphemes(cut[:-1]) == graphemes(long)[: len(graphemes(cut[:-1]))], cut


def test_shorten_never_cuts_inside_a_grapheme_and_keeps_to_the_limit():
    from pluralign.data.text import shorten

    text = "".join(GRAPHEMES) * 3
    for limit in range(1, len(text) + 2):
        cut = shorten(text, limit)
        assert len(cut) <= limit
        head = cut.removesuffix("…")
        assert graphemes(head) == graphemes(text)[: len(graphemes(head))], (limit, cut)
        assert cut == text or cut.endswith("…")


def test_answer_key_makes_nfc_and_nfd_one_answer_and_keeps_scripts_apart():
    from pluralign.data.text import answer_key

    assert answer_key(CAFE) == answer_key(unicodedata.normalize("NFD", CAFE)) == answer_key("\u200b" + CAFE + " ")
    assert answer_key("한국어") == answer_key(unicodedata.normalize("NFD", "한국어"))
    assert len({answer_key(t) for t in SCRIPTS}) == len(SCRIPTS)
    assert answer_key("ﬁ") != answer_key("fi")  # compatibility forms (NFKC) are not folded: a ligature may be meant


@pytest.mark.parametrize("short, long", [
    ("可以。", "可以。我们明天早上去公园散步，然后一起吃午饭。"), ("はい。", "はい。明日の朝は公園を散歩しましょう。"),
    ("Да.", "Да. Завтра утром мы пойдём гулять в парк."), ("نعم.", "نعم. غدا صباحا سنذهب إلى الحديقة."),
    ("כן.", "כן. מחר בבוקר נטייל בפארק."), ("हाँ।", "हाँ। कल सुबह हम पार्क में टहलेंगे।"),
])
def test_length_counts_words_of_every_script(short, long):
    from pluralign.user.features import FEATURE_NAMES, text_features

    i = FEATURE_NAMES.index("length")
    assert text_features(long)[i] > text_features(short)[i] > 0


def test_features_read_nfd_as_nfc_and_full_width_exclamations():
    from pluralign.user.features import FEATURE_NAMES, text_features

    text = "Très bien ! Voilà, c'est réglé."
    assert text_features(unicodedata.normalize("NFD", text)) == text_features(text)
    e = FEATURE_NAMES.index("exclamations")
    assert text_features("太好了！我们走吧。")[e] == text_features("Great! Let's go.")[e] == 0.5
