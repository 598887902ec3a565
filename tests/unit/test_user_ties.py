"""Ties in the user model: Davidson's tie term in `fit_posterior` (issue 16, session 49)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from pluralign.losses import davidson_tie_nll
from pluralign.user import fit_posterior
from pluralign.user.active import best_information, pair_information, particle_posterior
from pluralign.user.collinear import feature_signs


def test_the_tie_loss_is_davidsons_term_with_its_derivatives():
    m = np.linspace(-8, 8, 33)
    value, grad, curv = davidson_tie_nll(m)
    p = 1 / (1 + np.exp(-m))
    assert value == pytest.approx(-np.log(2 * np.sqrt(p * (1 - p))), abs=1e-12)  # as particle_posterior reads a tie
    h = 1e-5
    assert grad == pytest.approx((davidson_tie_nll(m + h)[0] - davidson_tie_nll(m - h)[0]) / (2 * h), abs=1e-8)
    assert curv == pytest.approx((davidson_tie_nll(m + h)[1] - davidson_tie_nll(m - h)[1]) / (2 * h), abs=1e-8)
    assert value[16] == 0 and grad[16] == 0 and curv[16] == 0.25  # at m = 0: most curvature, no pull
    # the same likelihood particle_posterior gives a known user for a tie
    probs = np.array([[0.5, 0.9]])
    w = particle_posterior(np.zeros((0, 2)), probs)
    assert w[0] / w[1] == pytest.approx(np.exp(-davidson_tie_nll(0.0)[0]) / np.exp(-davidson_tie_nll(np.log(9.0))[0]))


def test_ties_are_fitted_like_a_reference_optimizer():
    rng = np.random.default_rng(3)
    design, tied = rng.normal(size=(30, 4)), rng.normal(size=(12, 4))
    design *= np.sign(design @ np.array([1.0, -1.0, 0.5, 2.0]))[:, None]
    mean0, prec = np.zeros(4), np.array([1.0, 0.5, 2.0, 1.0])

    def neg_log_post(b):
        return np.logaddexp(0, -(design @ b)).sum() + davidson_tie_nll(tied @ b)[0].sum() + 0.5 * ((b - mean0) ** 2 * prec).sum()

    ref = minimize(neg_log_post, mean0, method="BFGS", options={"gtol": 1e-10}).x
    mode, cov = fit_posterior(design, mean0, prec, tied=tied)
    assert mode == pytest.approx(ref, abs=1e-5)
    p, q = 1 / (1 + np.exp(-(design @ mode))), 1 / (1 + np.exp(-(tied @ mode)))
    hessian = (design.T * (p * (1 - p))) @ design + (tied.T * (q * (1 - q))) @ tied + np.diag(prec)
    assert np.linalg.inv(cov) == pytest.approx(hessian, rel=1e-8)
    # a tie's order does not matter, and without ties the fit is the strict one, bit for bit
    flipped = fit_posterior(design, mean0, prec, tied=-tied)
    assert flipped[0] == pytest.approx(mode, abs=1e-9) and flipped[1] == pytest.approx(cov, abs=1e-9)
    strict = fit_posterior(design, mean0, prec)
    for empty in (None, np.zeros((0, 4))):
        again = fit_posterior(design, mean0, prec, tied=empty)
        assert np.array_equal(again[0], strict[0]) and np.array_equal(again[1], strict[1])


def test_a_tie_moves_the_posterior_towards_indifference_on_that_pair_and_shrinks_its_variance():
    """A user who preferred shorter answers (feature 0) in a few comparisons, then says "no preference" between
    two answers that differ in feature 1 (lists) and a little in length: the margin of that pair moves towards 0,
    its variance shrinks, and the pair carries fewer bits for BALD and for which of them is best."""
    rng = np.random.default_rng(0)
    strict = rng.normal(size=(6, 3))
    strict *= np.sign(-strict[:, 0])[:, None]  # always the shorter one
    mean0, prec = np.zeros(3), np.full(3, 1 / 25.0)  # the wide prior of the named features (sd 5)
    pair = np.array([0.3, 1.0, 0.0])  # the two answers' difference: lists, a little length
    before = fit_posterior(strict, mean0, prec)
    after = fit_posterior(strict, mean0, prec, tied=np.tile(pair, (3, 1)))
    margin = lambda fit: float(pair @ fit[0])  # noqa: E731
    variance = lambda fit: float(pair @ fit[1] @ pair)  # noqa: E731
    assert abs(margin(after)) < 0.5 * abs(margin(before))
    assert variance(after) < 0.5 * variance(before)
    # a tie pulls along the pair, not across it: the preference for shorter answers stands
    assert after[0][0] < 0 and abs(after[0][0] - before[0][0]) < abs(before[0][0])
    bits_before, bits_after = pair_information(pair[None], *before)[0], pair_information(pair[None], *after)[0]
    assert bits_after < 0.5 * bits_before
    x = np.array([pair, np.zeros(3)])
    assert best_information(x, np.array([0]), np.array([1]), *after)[0] < best_information(x, np.array([0]), np.array([1]), *before)[0]
    # the summary's sign of the lists weight reads the ties too: they settle it near indifference
    names = ["length", "lists", "other"]
    p_more = feature_signs(strict, names, names[:2], *after, mean0, prec, tied=np.tile(pair, (3, 1)))[0]
    assert 0.2 < p_more["lists"] < 0.8 and p_more["length"] < 0.05


def test_a_bad_tie_row_is_refused_by_name():
    with pytest.raises(ValueError, match="`tied` has shape"):
        fit_posterior(np.zeros((1, 3)), np.zeros(3), np.ones(3), tied=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`tied` row 1 is not finite"):
        fit_posterior(np.zeros((1, 3)), np.zeros(3), np.ones(3), tied=np.array([[0, 0, 1.0], [np.nan, 0, 0]]))


def test_the_best_gate_stops_asking_about_pairs_that_cannot_change_the_best_answer():
    """Candidate 0 is the best for every posterior sample (a settled feature); candidates 1 and 2 differ only along a
    feature the user model knows nothing about. BALD still finds ~0.8 bits in comparing 1 and 2, so `compare` stayed;
    gated by `best` (information about which candidate is best) nothing is worth asking and no pair is returned."""
    from pluralign.user.active import most_informative_pair

    mean, cov = np.array([5.0, 0.0]), np.diag([0.01, 25.0])  # feature 0 settled, feature 1 unknown
    x = np.array([[3.0, 0.0], [0.0, 0.3], [0.0, -0.3]])
    bald = most_informative_pair(x, mean, cov, 0.1)
    assert bald is not None and {bald.first, bald.second} == {1, 2} and bald.bits > 0.5
    assert most_informative_pair(x, mean, cov, 0.1, gate="best") is None
    assert most_informative_pair(x, mean, cov, 0.1, target="best") is None
    # where the best answer is still open, the gate lets BALD's pair through
    open_ = np.array([[0.0, 0.3], [0.0, -0.3], [-3.0, 0.0]])
    choice = most_informative_pair(open_, mean, cov, 0.1, gate="best")
    assert choice is not None and {choice.first, choice.second} == {0, 1}
    with pytest.raises(ValueError, match="gate must be one of"):
        most_informative_pair(x, mean, cov, 0.1, gate="bald")
