"""The `affirmation` feature reads the answer's *opening* yes or no (trial16_51): a negation inside the
opening sentence ("Do not over plan") is not an answer of no."""

import pytest

from pluralign.user.features import FEATURE_NAMES, response_features

AFFIRMATION = FEATURE_NAMES.index("affirmation")


@pytest.mark.parametrize(("text", "stance"), [
    ("Do not over plan the details.", 0.0),  # an instruction with a negation: no stance (was -1)
    ("I would never skip breakfast.", 0.0),
    ("It's not about the money.", 0.0),
    ("You should not worry.", 0.0),
    ("No doubt it helps.", 0.0),  # "no" as a determiner: "no doubt", "no one", "no matter" open no answer
    ("No one knows for sure.", 0.0),
    ("Yes, not everyone agrees, but it works.", 1.0),  # the first stance word decides (was -1)
    ("No.", -1.0),
    ("Nope, not really!", -1.0),
    ("Not really, it depends.", -1.0),
    ("Never. It is a bad idea.", -1.0),
    ("Absolutely not.", -1.0),
    ("Definitely not, and here is why.", -1.0),
    ("Honestly, no.", -1.0),
    ("I disagree with that.", -1.0),
    ("Oh yes, for sure!", 1.0),
    ("Yes.", 1.0),
    ("Absolutely, it helps.", 1.0),
    ("Sure thing! Here are ideas:", 0.0),
])
def test_affirmation_reads_the_opening_yes_or_no(text, stance):
    assert response_features([text])[0, AFFIRMATION] == stance, text
