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
