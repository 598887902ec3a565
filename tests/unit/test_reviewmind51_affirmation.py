"""reviewmind51: `affirmation` reads the opening's punctuation too. "no" is a determiner ("no one", "no doubt") only
when the next word follows it directly, and "not" negates "absolutely" / "definitely" only then; "no" after an
intensifier is no ("Absolutely no.")."""

import pytest

from pluralign.user.features import FEATURE_NAMES, response_features

AFFIRMATION = FEATURE_NAMES.index("affirmation")


@pytest.mark.parametrize(("text", "stance"), [
    ("Absolutely no.", -1.0),  # read +1 under text-features-5
    ("Definitely no, and here is why.", -1.0),
    ("Absolutely no way.", -1.0),
    ("No. One reason is cost.", -1.0),  # read 0: "no" then "one" across a full stop is an answer, not "no one"
    ("No, one should wait.", -1.0),
    ("No, longer is not better.", -1.0),
    ("No! Matter of fact, it hurts.", -1.0),
    ("Absolutely, not a problem.", 1.0),  # read -1: the comma parts "not" from the "absolutely" it would negate
    ("Definitely, not everyone agrees, but it works.", 1.0),
    ("No one's sure.", 0.0),  # read -1: "one's" is "one" with its 's
    ("No one’s sure — café.", 0.0),  # the same in the non-ASCII word pass
    ("No — one reason is cost.", -1.0),
    # unchanged readings
    ("No one knows for sure.", 0.0),
    ("No doubt it helps.", 0.0),
    ("Absolutely not.", -1.0),
    ("Definitely not, and here is why.", -1.0),
    ("Not at all.", -1.0),
    ("Yes, not everyone agrees, but it works.", 1.0),
    ("Do not over plan the details.", 0.0),
])
def test_affirmation_reads_the_punctuation_between_the_opening_words(text, stance):
    assert response_features([text])[0, AFFIRMATION] == stance, text
