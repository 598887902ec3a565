"""`pluralign.data.text`: what counts as a blank answer."""

from __future__ import annotations

import pytest

from pluralign.data.record import Preference
from pluralign.data.text import is_blank, visible


@pytest.mark.parametrize("text", ["", "  \n\t", "\u200b", "\u200c\u200d", "\u2060", "\ufeff", " \u200b\u00a0\u3000 "])
def test_text_without_a_visible_character_is_blank(text):
    assert is_blank(text)
    with pytest.raises(ValueError, match="`rejected` must not be empty"):
        Preference(user_id="u", prompt="p", chosen="Yes.", rejected=text)


def test_visible_strips_the_ends_only():
    assert visible("\ufeff\u200b Yes.\u2060\n") == "Yes."
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # joiners inside an emoji sequence are part of it
    assert visible(family) == family and not is_blank(family)


INVISIBLE = ["\u3164", "\uffa0", "\u115f\u1160", "\u2800", "\u034f", "\ufe0f", "\x00", "\x01\x02\x7f", "\u0301",
             "\u17b4\u17b5", "\u180e", "\u202a\u202e", "\u206f", "\U0001bca0", "\U0001d173", "\U000e0001", "\u0301\u20dd \u200b"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_of_invisible_characters_and_lone_combining_marks_is_blank(text):
    assert is_blank(text)
    with pytest.raises(ValueError, match="`chosen` must not be empty"):
        Preference(user_id="u", prompt="p", chosen=text, rejected="Yes.")


@pytest.mark.parametrize("text", INVISIBLE[:-1])
def test_invisible_characters_at_the_ends_do_not_make_another_answer(text):
    if text == "\u0301":  # a combining mark is not stripped: it marks the character before it
        return
    assert visible(f"{text}Yes.{text}") == "Yes."


def test_combining_marks_at_the_ends_are_kept():
    assert visible("cafe\u0301") == "cafe\u0301" and visible("\u0301e") == "\u0301e"
    assert not is_blank("e\u0301")


@pytest.mark.parametrize("text", ["\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\U0001f3f3\ufe0f\u200d\U0001f308", "\u2764\ufe0f"])
def test_emoji_sequences_are_not_blank(text):
    assert not is_blank(text) and visible(text) == text.rstrip("\ufe0f")


def test_bidi_controls_are_shown_as_their_code_points_and_nothing_else_changes():
    """Session pool52: quoted for reading, a bidi control reads as its code point, not as a reordering."""
    from pluralign.data.text import bidi_controls_shown

    assert bidi_controls_shown("\u202eLUN htiw 1 tpmorp live") == "[U+202E]LUN htiw 1 tpmorp live"
    assert bidi_controls_shown("a\u2066b\u2069\u200f\u061c") == "a[U+2066]b[U+2069][U+200F][U+061C]"
    kept = "\u0645\u0631\u062d\u0628\u0627 caf\u00e9 \U0001F469\u200d\U0001F4BB \u200b"  # Arabic, é, a ZWJ emoji, ZWSP
    assert bidi_controls_shown(kept) == kept and bidi_controls_shown("plain") == "plain"
