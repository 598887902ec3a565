"""Active choice of comparisons on the user model's posterior: BALD (about the coefficients), the
information about which candidate is best (chat's `compare`), and EPIG (about the user's answers to
target comparisons). Each beats a random or a coefficient-driven choice where it should, and a
well-known user is no longer asked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from pluralign.user.active import (
    COMPARE_MIN_BITS,
    all_pairs,
    best_information,
    group_information,
    most_informative_pair,
    pair_information,
    particle_posterior,
    particle_predictive,
    posterior_samples,
    predictive_information,
    select_active,
    select_by_group,
)
from pluralign.user.model import fit_posterior


def test_information_is_high_for_uncertain_pairs_and_low_for_predictable_ones():
    mean, cov = np.array([2.0, 0.0]), np.diag([0.01, 4.0])
    bits = pair_information(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), mean, cov)
    assert bits[0] < 0.05  # the model knows the user picks by feature 0: a predictable answer
    assert bits[1] > 0.3  # feature 1 is unknown: the answer teaches a lot
    assert bits[2] == 0.0  # identical answers teach nothing
    assert np.allclose(bits, pair_information(-np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), mean, cov))  # order-free
    with pytest.raises(ValueError):
        pair_information(np.zeros((2, 3)), mean, cov)


def test_compare_disappears_once_the_user_is_certain():
    """A new user is asked; after 300 comparisons (answered by the user's own logistic model) the
    best of 8 candidates' pairs carries less than the documented threshold: `compare` is None."""
    rng = np.random.default_rng(0)
    d = 6
    prior_mean, prior_precision = np.zeros(d), np.full(d, 1 / 25.0)
    truth = np.array([-3.0, 2.0, 0.0, 1.0, 0.0, -1.0])
    candidates = rng.normal(size=(8, d))
    mean, cov = prior_mean, np.diag(1 / prior_precision)
    first = most_informative_pair(candidates, mean, cov, COMPARE_MIN_BITS)
    assert first is not None and first.bits > 0.3
    z = rng.normal(size=(300, d))
    won = rng.random(len(z)) < 1 / (1 + np.exp(-(z @ truth)))
    design = np.where(won[:, None], z, -z)  # chosen minus rejected
    mean, cov = fit_posterior(design, prior_mean, prior_precision)
    assert most_informative_pair(candidates, mean, cov, COMPARE_MIN_BITS) is None
    assert most_informative_pair(candidates[:1], mean, cov) is None


def population(rng, users=150, pool=40, held_out=200, d=6):
    """Users with Gaussian weights; each user's pool of comparisons is mostly redundant (80% of pairs
    differ almost only in feature 0, a few are near-ties) with a few pairs spread over all features;
    held-out pairs spread evenly. A random pick of k pairs then mostly re-asks about feature 0."""
    for _ in range(users):
        w = rng.normal(scale=2.0, size=d)
        z = rng.normal(size=(pool, d)) * 0.1
        z[: int(pool * 0.8), 0] = rng.normal(scale=2.0, size=int(pool * 0.8))
        z[int(pool * 0.8) :] = rng.normal(size=(pool - int(pool * 0.8), d))
        z = z[rng.permutation(pool)]
        won = rng.random(pool) < 1 / (1 + np.exp(-(z @ w)))
        design = np.where(won[:, None], z, -z)  # chosen minus rejected, the label drawn from the user's model
        test = rng.normal(size=(held_out, d))
        yield design, test, np.sign(test @ w)


@pytest.mark.parametrize("k", [3, 5])
def test_bald_choice_beats_random_where_it_should(k):
    """Held-out pairs spread over every feature while the pool mostly repeats one: learning every
    coefficient (BALD) is what pays here."""
    rng = np.random.default_rng(1)
    d = 6
    prior_mean, prior_precision = np.zeros(d), np.full(d, 1 / 4.0)
    active, random_ = [], []
    for design, test, truth in population(rng, d=d):
        for picks, out in ((select_active(design, prior_mean, prior_precision, k, target="coefficients"), active),
                           (list(rng.choice(len(design), k, replace=False)), random_)):
            mean, _ = fit_posterior(design[picks], prior_mean, prior_precision)
            out.append(np.mean(np.sign(test @ mean) == truth))
    assert np.mean(active) > np.mean(random_) + 0.05, (np.mean(active), np.mean(random_))


def test_select_active_returns_distinct_indices_in_order():
    rng = np.random.default_rng(2)
    design = rng.normal(size=(5, 3))
    picks = select_active(design, np.zeros(3), np.ones(3), 10)
    assert sorted(picks) == list(range(5))


def contenders():
    """Two close contenders A, B that differ on feature 1 and two candidates C, D that are never best
    (feature 0 rules them out) but differ a lot on feature 2, which no contender has."""
    mean, cov = np.array([1.0, 0.0, 0.0]), np.diag([0.01, 25.0, 25.0])
    x = np.array([[2.0, 0.5, 0.0], [2.0, -0.5, 0.0], [-50.0, 0.0, 3.0], [-50.0, 0.0, -3.0]])
    return x, mean, cov


def test_compare_asks_about_the_best_candidate_not_about_every_coefficient():
    x, mean, cov = contenders()
    first, second = all_pairs(4)
    bits = best_information(x, first, second, mean, cov)
    assert bits[0] > 0.3  # A vs B: which of them is best
    assert bits[-1] < 0.01  # C vs D: feature 2 is unknown, but it never decides the best answer
    choice = most_informative_pair(x, mean, cov, COMPARE_MIN_BITS, target="best")
    assert (choice.first, choice.second) == (0, 1)
    bald = most_informative_pair(x, mean, cov, COMPARE_MIN_BITS, target="coefficients")
    assert (bald.first, bald.second) == (2, 3)  # BALD spends the question on feature 2
    assert np.array_equal(bits, best_information(x, first, second, mean, cov))  # common random numbers: repeatable
    # once every posterior sample agrees on the best candidate, nothing is worth asking
    assert not best_information(x, first, second, np.array([1.0, 2.0, 0.0]), np.eye(3) * 1e-4).any()
    with pytest.raises(ValueError):
        most_informative_pair(x, mean, cov, target="nonsense")
    with pytest.raises(ValueError):
        best_information(x[:, :2], first, second, mean, cov)


def test_predictive_information_targets_the_comparisons_that_will_be_asked():
    x, mean, cov = contenders()
    pairs = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    targets = np.array([[0.0, 1.0, 0.0], [0.0, 0.5, 0.0], [0.0, -2.0, 0.0]])  # future questions vary feature 1 only
    epig = predictive_information(pairs, targets, mean, cov)
    assert epig[0] > 0.2 and epig[1] < 0.01
    assert pair_information(pairs, mean, cov)[1] > pair_information(pairs, mean, cov)[0]  # BALD prefers feature 2


def test_predictive_choice_beats_bald_and_random_where_it_should(k=2):
    """Questions (the pool and the held-out ones alike) mostly turn on features 0-2; one in 15 is a
    large difference on features 3-5, which the user model is most unsure about. BALD asks about
    those first; EPIG with the pool as targets weighs them by how often they are asked."""
    rng = np.random.default_rng(3)
    d, pool, rare = 6, 30, 2

    def questions(n):
        z = np.zeros((n, d))
        common = rng.random(n) >= rare / pool
        z[common, :3] = rng.normal(size=(common.sum(), 3))
        z[~common, 3:] = rng.normal(scale=3.0, size=((~common).sum(), 3))
        return z

    prior_mean, prior_precision = np.zeros(d), np.full(d, 1 / 4.0)
    scores = {"predictive": [], "coefficients": [], "random": []}
    for _ in range(150):
        w = rng.normal(scale=2.0, size=d)
        z = np.zeros((pool, d))
        z[rare:, :3] = rng.normal(size=(pool - rare, 3))
        z[:rare, 3:] = rng.normal(scale=3.0, size=(rare, 3))
        z = z[rng.permutation(pool)]
        won = rng.random(pool) < 1 / (1 + np.exp(-(z @ w)))
        design = np.where(won[:, None], z, -z)
        test = questions(300)
        truth = np.sign(test @ w)
        for name in scores:
            picks = (list(rng.choice(pool, k, replace=False)) if name == "random"
                     else select_active(design, prior_mean, prior_precision, k, target=name))
            mean, _ = fit_posterior(design[picks], prior_mean, prior_precision)
            guess = np.sign(test @ mean)
            scores[name].append(np.mean(np.where(guess == 0, 0.5, guess == truth)))  # a tie is a coin flip
    means = {name: float(np.mean(v)) for name, v in scores.items()}
    assert means["predictive"] > means["coefficients"] + 0.05, means
    assert means["predictive"] > means["random"], means


def test_group_information_asks_which_group_not_which_member():
    # four known users in two groups: comparison 0 splits the groups, comparison 1 splits the members
    # of each group the same way in both, comparison 2 everyone answers alike
    prob = np.array([[0.95, 0.95, 0.05, 0.05], [0.95, 0.05, 0.95, 0.05], [0.9, 0.9, 0.9, 0.9]])
    uniform = np.full(4, 0.25)
    bits = group_information(prob, uniform, np.array([0, 0, 1, 1]))
    assert bits[0] > 0.7 and bits[1] < 1e-9 and bits[2] < 1e-9
    # every user their own group: BALD over the users, to which comparison 1 is as good as 0
    own = group_information(prob, uniform, np.arange(4))
    assert own[1] == pytest.approx(own[0]) and own[1] > 0.7
    # once the group is known, nothing more is learned about it
    assert group_information(prob, np.array([0.5, 0.5, 0.0, 0.0]), np.array([0, 0, 1, 1]))[0] < 1e-9
    with pytest.raises(ValueError):
        group_information(prob, np.full(3, 1 / 3), np.arange(3))


def test_particle_predictive_and_posterior():
    z = np.array([[1.0, 0.0], [0.0, 2.0]])
    means = np.array([[2.0, 0.0], [0.0, -1.0]])
    sharp = particle_predictive(z, means, np.zeros((2, 2, 2)))
    assert np.allclose(sharp, 1 / (1 + np.exp(-(z @ means.T))))
    vague = particle_predictive(z, means, np.stack([np.eye(2) * 25.0] * 2))
    margin = z @ means.T != 0
    assert np.all(np.abs(vague - 0.5)[margin] < np.abs(sharp - 0.5)[margin])  # an uncertain user predicts less sharply
    assert np.allclose(vague[~margin], 0.5)
    assert np.allclose(particle_posterior(np.zeros((0, 3))), 1 / 3)
    w = particle_posterior(np.tile([0.9, 0.1, 0.5], (400, 1)))  # many answers: no underflow
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0) and w[0] > 0.999
    with pytest.raises(ValueError):
        particle_predictive(z, means, np.zeros((2, 3, 3)))


def test_group_choice_beats_random_where_it_should(k=2):
    """Four groups of known users that disagree on two of twelve features, while most of a new
    user's pool varies the features everyone agrees on: two answers chosen for what they say about
    the group identify it; two random ones seldom do. Predictions average the known users' under
    the posterior over them, for both choices."""
    rng = np.random.default_rng(3)
    d, per_group, pool = 12, 10, 40
    shared = rng.normal(size=d)
    shared[:2] = 0.0
    centres = [shared + np.r_[3.0 * a, 3.0 * b, np.zeros(d - 2)] for a in (-1, 1) for b in (-1, 1)]
    means = np.array([c + rng.normal(scale=0.2, size=d) for c in centres for _ in range(per_group)])
    covs = np.stack([np.eye(d) * 0.01] * len(means))
    groups = np.repeat(np.arange(4), per_group)
    active, random_ = [], []
    for trial in range(40):
        truth = centres[trial % 4] + rng.normal(scale=0.2, size=d)
        z = rng.normal(size=(pool, d))
        z[: int(pool * 0.9), :2] *= 0.05  # most comparisons barely touch the disputed features
        z = z[rng.permutation(pool)]
        design = np.where((z @ truth > 0)[:, None], z, -z)  # chosen minus rejected, by the user's rule
        test = rng.normal(size=(50, d))
        prob = particle_predictive(design, means, covs)
        for picks, out in ((select_by_group(prob, groups, k), active), (list(rng.choice(pool, k, replace=False)), random_)):
            assert len(set(picks)) == k
            predicted = particle_predictive(test, means, covs) @ particle_posterior(prob[picks])
            out.append(np.mean((predicted > 0.5) == (test @ truth > 0)))
    assert np.mean(active) > np.mean(random_) + 0.05, (np.mean(active), np.mean(random_))


def test_particle_predictive_keeps_memory_bounded_on_a_long_history():
    """A user with thousands of comparisons (next-comparison's `population` target scores all of
    them against up to 128 known users): the (U, P, D) product is made a block of rows at a time,
    not at once (64 x 3000 x 76 doubles would be 117 MB for one request), with the same values."""
    import tracemalloc

    rng = np.random.default_rng(0)
    users, pairs, dim = 64, 3000, 76
    diff, means = rng.normal(size=(pairs, dim)), rng.normal(size=(users, dim))
    a = rng.normal(size=(users, dim, dim)) / dim
    covs = a @ a.transpose(0, 2, 1)
    tracemalloc.start()
    try:
        prob = particle_predictive(diff, means, covs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30e6, f"{peak / 1e6:.0f} MB"
    direct = np.einsum("pd,ude,pe->pu", diff[:50], covs, diff[:50])
    from scipy.special import expit
    assert np.allclose(prob[:50], expit(diff[:50] @ means.T / np.sqrt(1 + np.pi / 8 * direct)))


def test_epig_from_weighted_samples_is_zero_for_a_known_user_and_a_bit_for_a_coin_between_two():
    """`sample_predictive_information`: with equal weights it is `predictive_information`'s value
    from the same draws; with all weight on one sample nothing is left to learn; with two samples of
    opposite sign on feature 0, equally weighted, a question on feature 0 tells a target on feature 0
    (nearly) a whole bit and a question on feature 1 nothing."""
    from scipy.special import expit

    from pluralign.user.active import posterior_samples, sample_predictive_information

    x, mean, cov = contenders()
    pairs, targets = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), np.array([[0.0, 1.0, 0.0], [1.0, 0.5, 0.0]])
    draws = posterior_samples(mean, cov)
    p, q = expit(draws @ pairs.T), expit(draws @ targets.T)
    np.testing.assert_allclose(sample_predictive_information(p, q), predictive_information(pairs, targets, mean, cov))
    one = np.zeros(len(draws))
    one[7] = 1.0
    np.testing.assert_allclose(sample_predictive_information(p, q, one), 0.0, atol=1e-9)
    two = np.array([[10.0, 0.0], [-10.0, 0.0]])
    questions, target = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]])
    bits = sample_predictive_information(expit(two @ questions.T), expit(two @ target.T), np.array([0.5, 0.5]))
    assert bits[0] > 0.99 and bits[1] < 1e-9
    with pytest.raises(ValueError):
        sample_predictive_information(p, q[:3])
    with pytest.raises(ValueError):
        sample_predictive_information(p, q, np.ones(3) / 3)


def test_a_tie_weighs_towards_the_known_users_who_could_not_tell_the_answers_apart():
    """`particle_posterior` with ties: a known user sure of either answer (p near 0 or 1) explains a
    tie badly, one at p = 1/2 perfectly; strict answers keep their Bradley-Terry weights; no ties is
    the weights without them; users that do not match raise."""
    sure, unsure = 0.95, 0.5
    tied = np.array([[sure, 1 - sure, unsure]])  # (1 tie, 3 known users)
    w = particle_posterior(np.zeros((0, 3)), tied)
    assert w[2] > 2 * w[0] and np.isclose(w[0], w[1]) and np.isclose(w.sum(), 1.0)
    strict = np.array([[0.9, 0.2, 0.5]])
    np.testing.assert_allclose(particle_posterior(strict, np.zeros((0, 3))), particle_posterior(strict))
    both = particle_posterior(strict, tied)
    np.testing.assert_allclose(both, particle_posterior(strict) * w / (particle_posterior(strict) * w).sum())
    with pytest.raises(ValueError):
        particle_posterior(strict, np.array([[0.5, 0.5]]))


def _plug_in_bits(x, first, second, mean, cov, samples, seed, sets):
    """I(y; best of the pair's set) written out pair by pair: the same posterior samples, grouped by which of the
    pair's set's candidates each ranks first (the first of a tie), H(y) less the groups' weighted H(y | group)."""
    def entropy(p):
        p = min(max(p, 1e-12), 1 - 1e-12)
        return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))

    reward = posterior_samples(mean, cov, samples, seed) @ x.T  # (S, N)
    bits = []
    for a, b in zip(first, second, strict=True):
        members = np.flatnonzero(sets == sets[a])
        best = members[reward[:, members].argmax(1)]  # (S,)
        win = expit(reward[:, a] - reward[:, b])  # (S,)
        expected = sum((best == m).mean() * entropy(win[best == m].mean()) for m in np.unique(best))
        bits.append(min(max(entropy(win.mean()) - expected, 0.0), 1.0))
    return np.array(bits)


def test_best_information_is_its_plug_in_estimate_for_one_set_and_for_many():
    """One set (chat's candidates, `sets` None) is the general case of sets (onboarding's pool) with one: on many random
    candidates, posteriors, sample counts and sets, ties of identical candidates included, every pair's bits are the
    plug-in estimate written out pair by pair, to float error (the one-set special case was removed, session 51)."""
    rng = np.random.default_rng(51)
    for _ in range(150):
        n, d, samples = int(rng.integers(2, 9)), int(rng.integers(1, 6)), int(rng.choice([1, 2, 16, 256]))
        x = rng.normal(size=(n, d)) * rng.choice([0.01, 1.0, 30.0])
        if rng.random() < 0.3:
            x[rng.integers(1, n)] = x[0]  # identical candidates: samples tie on the best
        mean, cov = rng.normal(size=d), np.eye(d) * rng.choice([1e-6, 0.1, 2.0, 50.0])
        seed = int(rng.integers(100))
        first, second = all_pairs(n)
        one = best_information(x, first, second, mean, cov, samples, seed)
        np.testing.assert_allclose(one, _plug_in_bits(x, first, second, mean, cov, samples, seed, np.zeros(n, int)), rtol=0, atol=1e-12)
        sets = rng.integers(0, 3, size=n) * 5 - 2  # up to three sets, labels neither 0-based nor in order
        keep = sets[first] == sets[second]
        if keep.any():
            many = best_information(x, first[keep], second[keep], mean, cov, samples, seed, sets=sets)
            want = _plug_in_bits(x, first[keep], second[keep], mean, cov, samples, seed, sets)
            np.testing.assert_allclose(many, want, rtol=0, atol=1e-12)


def test_best_information_of_sets_asks_each_pair_about_the_best_of_its_own_set():
    """Onboarding's pool is many prompts, each with its own answers: each pair's answer is about the best answer to its
    own prompt. Laid out in sets (in any order of the candidates), every pair gets what it gets alone with its set's
    candidates, from the same posterior samples; a pair that joins two sets is refused, naming `sets`."""
    rng = np.random.default_rng(1)
    mean, cov = rng.normal(size=5), np.eye(5) * 2.0
    x = rng.normal(size=(9, 5))
    sets = np.array([2, 0, 2, 0, 5, 2, 0, 5, 2])  # sets of 4, 3 and 2 candidates, interleaved
    first, second = [], []
    for s in np.unique(sets):
        members = np.flatnonzero(sets == s)
        a, b = all_pairs(len(members))
        first += members[a].tolist()
        second += members[b].tolist()
    bits = best_information(x, first, second, mean, cov, sets=sets)
    for k, (i, j) in enumerate(zip(first, second, strict=True)):
        members = np.flatnonzero(sets == sets[i]).tolist()
        alone = best_information(x[members], [members.index(i)], [members.index(j)], mean, cov)[0]
        assert bits[k] == pytest.approx(alone, abs=1e-12)
    one = best_information(x, first, second, mean, cov, sets=np.zeros(9, int))
    assert np.allclose(one, best_information(x, first, second, mean, cov), rtol=0, atol=1e-12)  # one set: chat's figure
    with pytest.raises(ValueError, match="sets"):
        best_information(x, [0], [1], mean, cov, sets=sets)  # candidates 0 and 1 answer two prompts
    with pytest.raises(ValueError, match="sets"):
        best_information(x, [0], [2], mean, cov, sets=sets[:4])
