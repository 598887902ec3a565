"""Answer styles' openings and cuts by the question's script (session small53)."""

from __future__ import annotations

import pytest

from pluralign.policy.styles import AnswerStyle, in_latin_script


@pytest.mark.parametrize("text, latin", [
    ("How do I learn to swim?", True), ("Comment apprendre à nager ?", True), ("Làm sao để học bơi?", True),
    ("12 + 30 = ?", True),  # no letters: as before, the opening
    ("我应该怎样学习游泳？", False), ("Как научиться плавать?", False), ("كيف أتعلم السباحة؟", False),
    ("水泳はどうやって習えばいいですか？", False), ("수영은 어떻게 배우나요?", False), ("तैरना कैसे सीखें?", False),
    ("Python 和 Rust 哪个更好学？", False),  # a Chinese question naming two English words
    ("What does 游泳 mean?", True),  # an English question quoting a Chinese word
    # review reviewsmall53: Chinese and Japanese set Latin words without spaces; the run of letters was one word,
    # told Latin by its first letter, and these got the English openings
    ("Python和Rust哪个更好学？", False), ("iPhone怎么截屏？", False), ("iPhoneのスクリーンショットの撮り方は？", False),
    ("Is the word游泳 Chinese?", True), ("Как настроить Wi-Fi на iPhone?", False),
    # review reviewlate53b: a vowel sign or virama (a combining mark, no letter to `\w`) split a word of Hindi, Thai or
    # Bengali into as many words as it had marks, and an English question quoting one was told another script
    ("What does धन्यवाद mean?", True), ("Is सत्यमेव जयते a motto?", True), ("How do I say ขอบคุณครับ politely?", True),
    ("धन्यवाद कहने का सही तरीका क्या है, thank you?", False),
])
def test_a_question_is_latin_when_more_than_half_its_words_are(text, latin):
    assert in_latin_script(text) is latin


def test_a_style_drops_its_english_opening_before_a_question_in_another_script():
    style = AnswerStyle("brief", "prose", "formal")
    chinese = [{"role": "user", "content": "我应该怎样学习游泳？"}]
    assert style.opening == "Certainly. " and style.for_question([{"role": "user", "content": "How?"}]) is style
    plain = style.for_question(chinese)
    assert plain.opening == "" and plain.instruction == style.instruction and plain.name == style.name
    assert plain.finish("先学会漂浮。然后练习换气。") == ("先学会漂浮。", True)  # brief: its first sentence, at '。'
