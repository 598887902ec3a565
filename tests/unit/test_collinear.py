"""Named features a user's comparisons cannot tell apart (`pluralign.user.collinear`) and the
summary's joint belief along them (`pluralign.user.summary.joint_beliefs`)."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from pluralign.user.collinear import CollinearFeatures, collinear_groups, direction_probability
from pluralign.user.model import fit_posterior
from pluralign.user.summary import feature_beliefs, joint_beliefs, written_sentences
from tests.unit.test_summary import state


def test_features_moved_in_proportion_form_a_group_and_independent_or_unmoved_ones_do_not():
    rng = np.random.default_rng(0)
    size = rng.uniform(0.5, 2.0, 200)
    named = np.zeros((200, 4))
    named[:, 0] = -size  # shorter ...
    named[:, 1] = -3 * size * rng.uniform(0.9, 1.1, 200)  # ... with shorter words, in proportion
    named[:, 2] = rng.normal(size=200)  # independent of both
    (group,) = collinear_groups(named)  # column 3 never moved: in no group
    cols, v, cosine = group
    assert cols == [0, 1] and cosine > 0.99
    assert v[0] > 0 and v[1] > 0 and np.isclose(np.linalg.norm(v), 1.0) and v[1] > 2.5 * v[0]
    named[:, 1] *= -1  # moved against each other: still one group, the direction says so
    assert collinear_groups(named)[0][1][1] < 0
    assert collinear_groups(named[:, 2:]) == []
    with pytest.raises(ValueError, match="named"):
        collinear_groups(named[:, 0])


def test_the_joint_probability_is_the_laplace_one_when_the_posterior_is_gaussian_and_one_sided_when_data_are_separable():
    rng = np.random.default_rng(1)
    design = rng.normal(size=(300, 3))
    truth = np.array([0.3, 0.0, -0.2])
    won = rng.random(300) < 1 / (1 + np.exp(-design @ truth))
    noisy = np.where(won[:, None], design, -design)  # chosen minus rejected
    prior_mean, prior_precision = np.zeros(3), np.full(3, 1 / 25)
    mean, cov = fit_posterior(noisy, prior_mean, prior_precision)
    v = np.array([1.0, 0.0, 0.0])
    s0, sd, p_more = direction_probability(noisy, mean, cov, prior_mean, prior_precision, v)
    assert s0 == pytest.approx(mean[0]) and sd == pytest.approx(np.sqrt(cov[0, 0]))
    assert p_more == pytest.approx(NormalDist().cdf(s0 / sd), abs=0.02)  # many noisy comparisons: nearly Gaussian
    # every comparison agrees and the feature moves a lot: the mode's curvature is ~0 and z stays ~1,
    # while the posterior puts (almost) nothing on the other side
    separable = -8.0 * rng.uniform(0.9, 1.1, size=(400, 1))  # (the service test's word length: z 0.92 along the pair)
    mean, cov = fit_posterior(separable, np.zeros(1), np.full(1, 1 / 25))
    s0, sd, p_more = direction_probability(separable, mean, cov, np.zeros(1), np.full(1, 1 / 25), np.ones(1))
    assert abs(s0) / sd < 1.0 and p_more < 1e-6


def test_the_joint_belief_names_the_features_and_the_direction_along_them():
    groups = [CollinearFeatures(features=["length", "word_length"], direction=[0.6, 0.8], cosine=0.97, mean=-1.4, sd=1.5, p_more=1e-9)]
    (joint,) = joint_beliefs(state({}, n=400, collinear=groups))
    assert joint.direction == {"length": "less", "word_length": "less"} and joint.confidence == "confident"
    assert joint.text == ("prefers shorter answers with shorter, plainer words (confident): length and word length moved "
                          "together in your 400 comparisons, so they cannot tell which of the two you care about")
    against = [CollinearFeatures(features=["length", "word_length"], direction=[0.6, -0.8], cosine=0.95, mean=1.0, sd=1.0, p_more=0.9)]
    (joint,) = joint_beliefs(state({}, n=50, collinear=against))
    assert joint.direction == {"length": "more", "word_length": "less"} and joint.confidence == "likely"
    assert joint.text.startswith("prefers longer answers with shorter, plainer words (likely)")
    coin = [CollinearFeatures(features=["length", "word_length"], direction=[0.6, 0.8], cosine=0.95, mean=0.0, sd=1.0, p_more=0.45)]
    (joint,) = joint_beliefs(state({}, n=50, collinear=coin))
    assert joint.direction is None and joint.confidence == "uncertain" and joint.probability == 0.55
    assert joint.text.startswith("no preference learned yet along length and word length together")
    assert joint_beliefs(state({})) == []


def test_a_settled_feature_of_a_group_keeps_its_sentence_unless_the_groups_sentence_says_the_same():
    """A group stays while one of its features is unsettled (word length here); its other feature may be
    settled on its own (length: confident). Its sentence was left out whenever the feature was in a group,
    even where the group's sentence was not said (`uncertain`: then nothing said it) or gave it the other
    direction (then the summary's sentences said the opposite of its confident belief)."""
    means = {"length": (2.0, 0.5), "word_length": (-0.3, 2.0)}
    for p_more, level, said_length in ((0.55, "uncertain", None), (1e-9, "confident", "less")):  # group sentence: not said / "shorter answers"
        groups = [CollinearFeatures(features=["length", "word_length"], direction=[0.6, 0.8], cosine=0.95, mean=0.0, sd=1.0,
                                    p_more=p_more)]
        s = state(means, n=40, collinear=groups)
        joint, beliefs = joint_beliefs(s), feature_beliefs(s)
        length = next(b for b in beliefs if b.feature == "length")
        assert length.confidence == "confident" and length.direction == "more" and length.collinear_with == ["word_length"]
        assert joint[0].confidence == level and (joint[0].direction or {}).get("length") == said_length
        assert length.text in written_sentences(beliefs, joint), (p_more, written_sentences(beliefs, joint))
    # where the group's sentence gives the feature its own direction, it speaks for it
    groups = [CollinearFeatures(features=["length", "word_length"], direction=[0.6, 0.8], cosine=0.95, mean=0.0, sd=1.0, p_more=1 - 1e-9)]
    s = state(means, n=40, collinear=groups)
    joint, beliefs = joint_beliefs(s), feature_beliefs(s)
    assert written_sentences(beliefs, joint) == [joint[0].text]


def test_a_group_joined_through_a_feature_reports_the_smallest_cosine_of_any_two_of_its_features():
    """a ~ b and b ~ c (|cosine| >= 0.9) join a, b and c, though a and c themselves are at 0.86: the
    group's `cosine`, documented as the smallest between two of its features, was 0.92 (the smallest
    of the linked pairs only)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = a + 0.45 * rng.normal(size=500)
    c = b + 0.45 * rng.normal(size=500)
    named = np.c_[a, b, c]
    unit = named / np.linalg.norm(named, axis=0)
    (group,) = collinear_groups(named)
    assert group[0] == [0, 1, 2] and abs(unit[:, 0] @ unit[:, 2]) < 0.9
    assert group[2] == pytest.approx(abs(unit[:, 0] @ unit[:, 2]))


def test_each_features_probability_is_the_posteriors_where_the_laplace_z_stays_near_one():
    """A feature every comparison moved the same way (always chosen "more"), beside noisy coordinates: its
    Laplace z stays below 2, so the summary read `likely` however many comparisons agreed; `feature_signs`
    integrates along the feature's axis and matches importance sampling of the posterior. A noisy feature
    beside it stays near what sampling says, though not as close: 0.409 against 0.455 (Laplace 0.507,
    Metropolis 0.451): the conditional-mean path bends through the other feature's cliff, a limit of the
    path (BENCHMARKS.md, profile44). One no comparison moved keeps its Gaussian Phi(mean / sd) exactly."""
    from benchmarks.joint_direction import sampled
    from pluralign.user.collinear import feature_signs

    rng = np.random.default_rng(3)
    n = 12
    design = np.c_[rng.uniform(1.5, 2.5, n), rng.normal(size=n), np.zeros(n), rng.normal(size=(n, 3)) * 0.5]  # (N, 6)
    design[:, 1] *= np.where(rng.random(n) < 0.5, 1.0, -1.0)  # a coin
    names, named = [f"c{i}" for i in range(6)], ["c0", "c1", "c2"]
    prior_mean, prior_precision = np.r_[0.0, 0.0, 0.8, 0.0, 0.0, 0.0], np.r_[1 / 25, 1 / 25, 1 / 25, 4.0, 4.0, 4.0]
    mean, cov = fit_posterior(design, prior_mean, prior_precision)
    p_more, moved_in = feature_signs(design, names, named, mean, cov, prior_mean, prior_precision)
    assert moved_in == {"c0": n, "c1": n, "c2": 0}
    laplace = NormalDist().cdf(mean[0] / np.sqrt(cov[0, 0]))
    assert laplace < NormalDist().cdf(2.0) and p_more["c0"] > 0.995, (laplace, p_more)  # before: the Laplace one alone
    for i, name, within in ((0, "c0", 1e-4), (1, "c1", 0.06)):
        below, _ = sampled(design, prior_mean, prior_precision, mean, cov, np.eye(6)[i], n=20_000)
        assert p_more[name] == pytest.approx(1 - below, abs=within), (name, p_more[name], 1 - below)
    assert p_more["c2"] == NormalDist().cdf(mean[2] / np.sqrt(cov[2, 2]))


def test_a_feature_of_a_collinear_group_is_not_said_surer_than_the_posterior_is():
    """Two features moved in proportion in 40 agreeing comparisons, the second 5x the first. Along the
    second's axis the conditional-mean path runs into the group's cliff (it cannot follow it round), and
    read 0.9997, `confident`, where sampling says 0.971: a group's feature keeps its Laplace probability
    (0.741 here, below sampling, as in every grouped case measured), and the group's own says the rest."""
    from benchmarks.joint_direction import sampled
    from pluralign.user.collinear import feature_signs

    rng = np.random.default_rng(50)
    n, d = 40, 10
    design = rng.normal(size=(n, d)) * 0.5
    size = rng.uniform(0.8, 1.2, n) * 1.4
    design[:, 0], design[:, 1] = -size, -size * rng.uniform(0.9, 1.1, n) * 5.0
    prior_mean, prior_precision = np.zeros(d), np.r_[np.full(2, 1 / 25), np.full(d - 2, 4.0)]
    mean, cov = fit_posterior(design, prior_mean, prior_precision)
    names = [f"c{i}" for i in range(d)]
    (group,) = collinear_groups(design[:, :2])
    p_more, _ = feature_signs(design, names, names[:2], mean, cov, prior_mean, prior_precision, grouped={"c0", "c1"})
    below, _ = sampled(design, prior_mean, prior_precision, mean, cov, np.eye(d)[1], n=20_000)
    assert 0.95 < below < NormalDist().cdf(2.0), below  # the posterior: `likely`, not `confident`
    assert p_more["c1"] == NormalDist().cdf(mean[1] / np.sqrt(cov[1, 1])) and 1 - p_more["c1"] <= below, p_more


@pytest.mark.parametrize(("seed", "sampling"), [(4, 0.194), (39, 0.818)])
def test_a_features_path_narrower_than_its_laplace_spread_is_read_where_its_mass_is(seed, sampling):
    """Feature 0 moved "less" in each of 30 comparisons, feature 1 in about a fifth of them by a few units: along
    feature 1's axis the path crosses feature 0's cliff, and its density is far narrower than the Laplace sd the
    likelihood's 33 points were spaced by, so their interpolation misplaced the mass: 0.111 (`likely` less) where
    the path read in full says 0.169 and sampling 0.194 (`uncertain`); 0.879 (`likely` more) against 0.837 and
    0.818. The likelihood is now read again wherever the interpolant misses it."""
    from benchmarks.joint_direction import read_in_full
    from pluralign.user.collinear import path_probabilities
    from pluralign.user.summary import level

    rng = np.random.default_rng(seed)
    n, d = 30, 10
    design = rng.normal(size=(n, d)) * 0.5
    design[:, 0] = -rng.uniform(1.0, 3.0, n)
    design[:, 1] = np.where(rng.random(n) < 0.2, rng.normal(size=n) * 4.0, 0.0)
    prior_mean, prior_precision = np.zeros(d), np.r_[np.full(2, 1 / 25), np.full(d - 2, 4.0)]
    mean, cov = fit_posterior(design, prior_mean, prior_precision)
    v = np.eye(d)[1]
    p_more = path_probabilities(design, mean, cov, prior_mean, prior_precision, v[:, None])[2][0]
    assert p_more == pytest.approx(read_in_full(design, mean, cov, prior_mean, prior_precision, v), abs=1e-3)
    assert level(max(p_more, 1 - p_more)) == level(max(sampling, 1 - sampling)) == "uncertain", p_more


def test_a_joint_belief_names_what_the_answers_have_after_with():
    """trial48a: the second feature's own noun phrase followed "with" ("prefers shorter answers with answers
    without exclamation marks"); without `length` in the group the first one's did too ("prefers answers in
    prose, without lists with no contractions (a formal register)")."""
    cases = (
        (["length", "exclamations"], [0.7, 0.7], "prefers shorter answers with no exclamation marks (confident)"),
        (["list_items", "contractions"], [0.7, 0.7], "prefers answers with no lists and no contractions (a formal register) (confident)"),
        # what the answers have first, what they lack last: "with no lists, exclamation marks" read as no exclamation marks
        (["list_items", "exclamations", "second_person"], [0.6, -0.6, 0.5],
         "prefers answers with exclamation marks, no lists and no 'you' addressing the reader (confident)"),
    )
    for features, direction, said in cases:
        groups = [CollinearFeatures(features=features, direction=direction, cosine=0.95, mean=-1.4, sd=1.5, p_more=1e-9)]
        (joint,) = joint_beliefs(state({}, n=40, collinear=groups))
        assert joint.text.startswith(said + ": "), joint.text


def test_a_joint_belief_never_puts_what_the_answers_have_after_a_no():
    """reviewtrial48a: "prefers longer answers with no lists and exclamation marks" reads as answers with no
    exclamation marks either (the "no" distributes over the list): the opposite of the user's direction on
    `exclamations`. Every mixed direction of every pair and triple of features: the traits the answers have come
    first, each "no ..." after them, so nothing follows a "no" that the answers have."""
    import itertools

    from pluralign.user.features import FEATURE_NAMES, FEATURE_TRAITS

    for k in (2, 3):
        for features in itertools.combinations(FEATURE_NAMES, k):
            for signs in itertools.product((1.0, -1.0), repeat=k):
                groups = [CollinearFeatures(features=list(features), direction=[0.6 * s for s in signs], cosine=0.95,
                                            mean=-1.4, sd=1.5, p_more=1e-9)]
                (joint,) = joint_beliefs(state({}, n=40, collinear=groups))
                said = joint.text.split(" (confident): ")[0].split(" with ", 1)[1]
                traits = [FEATURE_TRAITS[f][0 if d == "more" else 1] for f, d in joint.direction.items() if f != "length"]
                at = sorted((said.index(t), t) for t in traits)
                lacked = [i for i, (_, t) in enumerate(at) if t.startswith("no ")]
                assert not lacked or lacked == list(range(lacked[0], len(at))), joint.text
    (joint,) = joint_beliefs(state({}, n=40, collinear=[CollinearFeatures(
        features=["length", "list_items", "exclamations"], direction=[0.6, -0.6, 0.5], cosine=0.95, mean=1.4, sd=1.5, p_more=1 - 1e-9)]))
    assert joint.text.startswith("prefers longer answers with exclamation marks and no lists (confident): "), joint.text
