"""Expected information gain (BALD) on the user model's posterior: the active choice of comparisons
beats a random one where it should, and a well-known user is no longer asked."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.user.active import COMPARE_MIN_BITS, most_informative_pair, pair_information, select_active
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
def test_active_choice_beats_random_where_it_should(k):
    rng = np.random.default_rng(1)
    d = 6
    prior_mean, prior_precision = np.zeros(d), np.full(d, 1 / 4.0)
    active, random_ = [], []
    for design, test, truth in population(rng, d=d):
        for picks, out in ((select_active(design, prior_mean, prior_precision, k), active),
                           (list(rng.choice(len(design), k, replace=False)), random_)):
            mean, _ = fit_posterior(design[picks], prior_mean, prior_precision)
            out.append(np.mean(np.sign(test @ mean) == truth))
    assert np.mean(active) > np.mean(random_) + 0.05, (np.mean(active), np.mean(random_))


def test_select_active_returns_distinct_indices_in_order():
    rng = np.random.default_rng(2)
    design = rng.normal(size=(5, 3))
    picks = select_active(design, np.zeros(3), np.ones(3), 10)
    assert sorted(picks) == list(range(5))
