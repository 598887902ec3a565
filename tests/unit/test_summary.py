"""The readable summary of a user's model (`pluralign.user.summary.feature_beliefs`)."""

from __future__ import annotations

import numpy as np

from pluralign.user.features import FEATURE_NAMES
from pluralign.user.model import UserState
from pluralign.user.summary import feature_beliefs


def state(means: dict[str, tuple[float, float]], n: int = 0, **extra) -> UserState:
    """A state over the named features only: each (mean, sd), others 0 +- 5 (the wide prior)."""
    pairs = [means.get(name, (0.0, 5.0)) for name in FEATURE_NAMES]
    return UserState(population="p", features="f", names=list(FEATURE_NAMES), logits=[], n=n, fitted_at=0.0,
                     mean=[m for m, _ in pairs], cov=np.diag([s**2 for _, s in pairs]).ravel().tolist(), **extra)


def test_a_feature_without_evidence_states_no_direction():
    """A weight at the prior's 0 +- 5 used to read "prefers answers formatted as lists (uncertain)":
    `direction` was "more" for any weight >= 0."""
    beliefs = {b.feature: b for b in feature_beliefs(state({"length": (-1.5, 0.5), "exclamations": (0.2, 4.0),
                                                             "contractions": (0.8, 1.0)}), {"length": "less"})}
    for name in ("list_items", "affirmation", "exclamations"):  # no evidence, or a sign the posterior gives < 60%
        b = beliefs[name]
        assert b.direction is None and b.confidence == "uncertain", b
        assert b.text.startswith("no preference learned yet between") and "prefers" not in b.text, b.text
    assert beliefs["list_items"].text == ("no preference learned yet between answers formatted as lists and "
                                          "answers in prose, without lists")
    assert beliefs["length"].direction == "less" and beliefs["length"].text.startswith("prefers shorter answers (confident)")
    assert beliefs["contractions"].direction == "more" and beliefs["contractions"].text.startswith("prefers contractions")
    assert beliefs["contractions"].confidence == "uncertain"  # leaning, shown with its sign, as before


def test_comparisons_that_say_nothing_on_a_stated_feature_give_no_direction_either():
    beliefs = {b.feature: b for b in feature_beliefs(
        state({"length": (-1.5, 0.5), "list_items": (1.5, 0.5)}, n=4, stated={"length": -1, "list_items": 1},
              from_comparisons={"length": [0.0, 5.0], "list_items": [2.0, 0.9]}), {"length": "less", "list_items": "more"})}
    assert beliefs["length"].from_comparisons == "none (uncertain)"
    assert beliefs["length"].text == "prefers shorter answers (confident); you said you prefer shorter answers"
    assert beliefs["list_items"].from_comparisons == "more (confident)"
