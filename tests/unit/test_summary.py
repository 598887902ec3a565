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


def test_a_belief_resting_on_few_comparisons_says_so_unless_the_user_stated_it():
    """The integrated probability (`p_more`) is what the sentence reads, not the Laplace Phi(mean / sd) (here 0.80,
    `uncertain`); a feature fewer than 5 comparisons moved says how few, a stated one rests on the statement."""
    beliefs = {b.feature: b for b in feature_beliefs(
        state({"exclamations": (1.0, 1.2), "length": (1.5, 0.5)}, n=13, stated={"length": 1},
              from_comparisons={"length": [0.5, 1.0]}, p_more={"exclamations": 0.9, "length": 0.999},
              moved_in={"exclamations": 1, "length": 2}, p_more_from_comparisons={"length": 0.9}), {"length": "more"})}
    assert beliefs["exclamations"].text == "prefers exclamation marks (likely, from 1 of your 13 comparisons)"
    assert (beliefs["exclamations"].probability, beliefs["exclamations"].moved_in) == (0.9, 1)
    assert beliefs["length"].text == "prefers longer answers (confident); you said you prefer longer answers"
    assert beliefs["length"].from_comparisons == "more (likely)"


def test_every_count_of_the_users_answers_agrees_with_it():
    """(session 52) After one comparison "your comparisons moved it together with ..." was said (plural after one), as
    "so they cannot tell" and "your 1 comparison alone do not show it". Each now agrees: one comparison, one tie, and
    two of either, in the feature's sentence, the group's and the stated-preference one."""
    from pluralign.user.collinear import CollinearFeatures
    from pluralign.user.summary import joint_beliefs

    group = CollinearFeatures(features=["length", "word_length"], direction=[0.8, 0.6], cosine=1.0, mean=-2.0, sd=1.0,
                              p_more=0.02)
    said = {}
    for n, ties in ((1, 0), (2, 0), (0, 1), (1, 1), (1, 2)):
        s = state({"length": (-1.0, 2.0), "word_length": (-1.0, 2.0)}, n=n, ties=ties, collinear=[group])
        length = next(b for b in feature_beliefs(s) if b.feature == "length")
        said[n, ties] = (length.text.split("; ", 1)[1], joint_beliefs(s)[0].text.split(": ", 1)[1])
    assert said[1, 0] == ("your comparison moved it together with word length, so it cannot tell them apart",
                          "length and word length moved together in your 1 comparison, so it cannot tell which of the two you care about")
    assert said[2, 0][0] == "your comparisons moved it together with word length, so they cannot tell them apart"
    assert said[2, 0][1].startswith("length and word length moved together in your 2 comparisons, so they cannot")
    assert said[0, 1][0].startswith("your tie moved it together") and "in your 1 tie, so it cannot" in said[0, 1][1]
    assert said[1, 1][0].startswith("your comparison and tie moved it") and ", so they cannot" in said[1, 1][0]
    assert said[1, 2][0].startswith("your comparison and ties moved it")
    # a stated preference that pins its feature: what the comparisons alone do (not) show, agreeing with their count
    for n, verb in ((1, "does"), (3, "do")):
        s = state({"length": (1.5, 0.5), "second_person": (-3.0, 1.0)}, n=n, stated={"length": 1}, from_comparisons={"length": [0.0, 5.0]},
                  p_more={"second_person": 0.001, "length": 0.999}, p_more_from_comparisons={"length": 0.5, "second_person": 0.3})
        you = next(b for b in feature_beliefs(s, {"length": "more"}) if b.feature == "second_person")
        unit = "comparison" if n == 1 else "comparisons"
        assert f"your {n} {unit} alone {verb} not show it" in you.text, you.text


def test_a_capped_belief_the_comparisons_alone_turn_the_other_way_reports_their_side():
    """review belief52: a belief capped at what the comparisons alone give the posterior's side (trial16_51) kept that
    side with `probability` 0.2 where the comparisons alone put 0.8 on the other: direction and probability disagreed,
    and the docs promise the likelier side's. It now reports their side, and says so; a group (trial16_52) likewise."""
    from pluralign.user.collinear import CollinearFeatures
    from pluralign.user.summary import joint_beliefs

    group = CollinearFeatures(features=["exclamations", "contractions"], direction=[0.8, 0.6], cosine=1.0, mean=3.0,
                              sd=1.0, p_more=0.99, p_more_from_comparisons=0.25)
    s = state({"length": (1.0, 0.5), "second_person": (-6.0, 2.0)}, n=10, stated={"length": 1},
              p_more={"second_person": 0.002}, p_more_from_comparisons={"second_person": 0.8, "length": 0.1},
              collinear=[group])
    you = next(b for b in feature_beliefs(s, {"length": "more"}) if b.feature == "second_person")
    assert (you.direction, you.probability, you.confidence) == ("more", 0.8, "uncertain"), you
    assert you.text.startswith("prefers addressing the reader as 'you' (uncertain); your 10 comparisons alone lean this way"), you.text
    joint = joint_beliefs(s, {"length": "more"})[0]
    assert (joint.direction, joint.probability) == ({"exclamations": "less", "contractions": "less"}, 0.75), joint
    assert "your 10 comparisons alone lean this way" in joint.text, joint.text


def test_a_belief_the_comparisons_alone_do_not_give_its_side_is_capped_though_both_read_uncertain():
    """review of belief52: a belief was capped (`_borrowed`) only where the comparisons' probability of its side was of
    another `level` than the posterior's; `level` of a probability under 0.5 reads "uncertain", as does a posterior's
    0.7, so a feature the posterior leaned "less" at 0.7 while the comparisons alone put 0.95 on "more" kept "prefers
    ... less (uncertain)", claiming a side the comparisons give 0.05 (the docs: it "claims no more than the comparisons
    alone give that direction"; under Φ(0.25) they give none). Such a belief is capped too, a group's likewise."""
    from pluralign.user.collinear import CollinearFeatures
    from pluralign.user.summary import joint_beliefs

    group = CollinearFeatures(features=["exclamations", "contractions"], direction=[0.8, 0.6], cosine=1.0, mean=0.5,
                              sd=1.0, p_more=0.7, p_more_from_comparisons=0.05)
    s = state({"length": (1.0, 0.5), "second_person": (-0.5, 1.0)}, n=10, stated={"length": 1},
              p_more={"second_person": 0.3}, p_more_from_comparisons={"second_person": 0.95, "length": 0.1},
              collinear=[group])
    you = next(b for b in feature_beliefs(s, {"length": "more"}) if b.feature == "second_person")
    assert (you.direction, you.probability, you.confidence) == ("more", 0.95, "likely"), you
    assert "your 10 comparisons alone lean this way" in you.text, you.text
    joint = joint_beliefs(s, {"length": "more"})[0]
    assert (joint.direction, joint.probability) == ({"exclamations": "less", "contractions": "less"}, 0.95), joint
    assert "your 10 comparisons alone lean this way" in joint.text, joint.text


def test_a_feature_ties_moved_without_a_direction_says_no_preference_was_shown_with_comparisons_too():
    """Session http54: beside comparisons, a feature the user's answers (ties among them) moved without a direction reads
    that they lean neither way, counting what moved it; it is among the sentences, and one nothing moved still reads
    "no preference learned yet". Without ties (comparisons that cancel out) the old wording stays."""
    from pluralign.user.summary import written_sentences

    mixed = state({"length": (0.02, 0.4), "exclamations": (3.0, 0.8)}, n=3, ties=2, moved_in={"length": 4, "exclamations": 3})
    beliefs = {b.feature: b for b in feature_beliefs(mixed)}
    length = beliefs["length"]
    assert length.direction is None and length.no_preference_shown, length
    assert length.text == ("no preference shown between longer answers and shorter answers: the answers of 4 of your 3 "
                           "comparisons and 2 ties differ in it, and they lean neither way"), length.text
    assert not beliefs["list_items"].no_preference_shown and beliefs["list_items"].text.startswith("no preference learned yet")
    assert length.text in written_sentences(list(beliefs.values()), [])
    cancelled = {b.feature: b for b in feature_beliefs(state({"length": (0.02, 0.4)}, n=4, moved_in={"length": 4}))}
    assert not cancelled["length"].no_preference_shown and cancelled["length"].text.startswith("no preference learned yet")


def test_a_feature_of_a_group_whose_joint_belief_leans_is_not_said_to_show_no_preference():
    """Review reviewhttp54: with a tie beside them, 6 comparisons that all chose the short plain answer over the long
    wordy one read "prefers shorter answers with shorter, plainer words (confident)" and, among the same sentences, "no
    preference shown between longer answers and shorter answers: ... they lean neither way": `length` alone leans neither
    way only because the comparisons moved it together with `word_length` (they cannot tell which the user cares about),
    not because the user is indifferent to it. Such a feature keeps "no preference learned yet" and stays out of the
    sentences, as before session http54; a group whose joint belief leans neither way (ties alone) still shows none."""
    from pluralign.user.collinear import CollinearFeatures
    from pluralign.user.summary import joint_beliefs, written_sentences

    group = CollinearFeatures(features=["length", "word_length"], direction=[0.8, 0.6], cosine=0.96, mean=-4.0, sd=1.0,
                              p_more=0.0004, moved_in=7)
    s = state({"length": (-0.1, 4.0), "word_length": (-0.9, 4.0)}, n=6, ties=1, moved_in={"length": 7, "word_length": 7},
              collinear=[group])
    beliefs = {b.feature: b for b in feature_beliefs(s)}
    length = beliefs["length"]
    assert length.direction is None and not length.no_preference_shown, length
    assert length.text.startswith("no preference learned yet between longer answers and shorter answers"), length.text
    sentences = written_sentences(list(beliefs.values()), joint_beliefs(s))
    assert sentences[0].startswith("prefers shorter answers with shorter, plainer words (confident)"), sentences
    assert not any("no preference" in line for line in sentences), sentences
    indifferent = CollinearFeatures(features=["length", "word_length"], direction=[0.8, 0.6], cosine=0.96, mean=0.01,
                                    sd=0.3, p_more=0.51, moved_in=8)
    ties = state({"length": (0.0, 0.3), "word_length": (0.01, 0.3)}, ties=8, moved_in={"length": 8, "word_length": 8},
                 collinear=[indifferent])
    tied = {b.feature: b for b in feature_beliefs(ties)}
    assert tied["length"].no_preference_shown and tied["length"].text.startswith("no preference shown between longer"), tied


def test_only_ties_that_moved_a_feature_make_it_read_as_no_preference_shown():
    """Review reviewhttp54: any tie made every feature the comparisons moved without a direction read "no preference shown
    ... they lean neither way", a sentence, where without that tie it read "no preference learned yet" (none): the
    state kept no count of the ties that moved each feature. `UserState.tied_in` now does; a state stored before it
    (empty `tied_in`) reads as it did in session http54."""
    from pluralign.user.summary import written_sentences

    split = {"contractions": (0.02, 3.5)}
    for tied_in, shown in (({"contractions": 0, "length": 1}, False), ({"contractions": 1, "length": 1}, True), ({}, True)):
        beliefs = {b.feature: b for b in feature_beliefs(state(split, n=17, ties=1, moved_in={"contractions": 4}, tied_in=tied_in))}
        belief = beliefs["contractions"]
        assert belief.no_preference_shown is shown and belief.text.startswith(
            "no preference shown" if shown else "no preference learned yet"), (tied_in, belief)
        assert (belief.text in written_sentences(list(beliefs.values()), [])) is shown, tied_in
