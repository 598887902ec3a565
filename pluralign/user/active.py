"""Which comparison teaches the most about a user: expected information gain (BALD) on the user
model's Laplace posterior.

A comparison of answers a and b enters the user model through their coordinate difference
z = x_a - x_b (`pluralign.user.model`): P(a beats b) = sigmoid(beta . z) with beta ~ N(m, S). The
margin f = beta . z is then Gaussian, f ~ N(mu = m . z, s^2 = z' S z), and the information the
user's answer carries about beta is the mutual information between the answer and beta:

    I(z) = H[E_beta P(a > b)] - E_beta H[P(a > b)]

(BALD, "Bayesian Active Learning by Disagreement": Houlsby, Huszar, Ghahramani and Lengyel,
"Bayesian Active Learning for Classification and Preference Learning", 2011, eq. 3-4, for a
probit likelihood; the logistic link is matched to the probit by sigmoid(f) ~ Phi(f sqrt(pi / 8)),
MacKay 1992). A pair whose outcome the model can already predict (|mu| large against s) carries
little; a pair the model is unsure about *and* whose uncertainty comes from the user's unknown
weights (s large) carries up to one bit. The same function serves chat's `pluralign.compare`,
the onboarding route and `pluralign eval --shots active`.

Shapes: P pairs, N candidates, D coefficients. Units: bits. Cost: O(P D^2); for the 28 pairs of
8 candidates at D = 75, about 30 microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

# `pluralign.compare` is null once the best pair among the returned choices carries less than this
# many bits about the user (a tenth of a yes/no answer's worth): what they will pick is then either
# predictable or a coin flip the model already knows to be one. On a simulated 6-feature logistic
# user (tests/unit/test_active.py) the best of 8 candidates' 28 pairs carries 0.87 bits for a new
# user, 0.41 after 30 comparisons, 0.12 after 100 and 0.085 after 300 (the median pair: 0.72, 0.17,
# 0.02, 0.002): at 0.1 a user stops being asked after a few hundred comparisons, and far fewer
# pairs are worth asking about well before that.
COMPARE_MIN_BITS = 0.1

_PROBIT = math.sqrt(math.pi / 8)  # sigmoid(f) ~ Phi(f * _PROBIT)
_C = math.sqrt(math.pi * math.log(2) / 2)  # Houlsby et al.'s constant: h(Phi(x)) ~ exp(-x^2 / (pi ln 2))


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def pair_information(diff: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Expected information gain, in bits, of asking the user to compare each pair.

    diff (P, D): x_a - x_b for each pair (the sign does not matter); mean (D,) and cov (D, D): the
    user's Gaussian posterior. Returns (P,) values in [0, 1]. Raises ValueError on mismatched shapes."""
    diff = np.atleast_2d(np.asarray(diff, np.float64))
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    if diff.shape[1] != mean.shape[0] or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"pairs {diff.shape}, mean {mean.shape} and cov {cov.shape} do not agree")
    mu = (diff @ mean) * _PROBIT  # (P,) the margin's posterior mean, on the probit scale
    var = np.maximum(np.einsum("pd,de,pe->p", diff, cov, diff), 0.0) * _PROBIT**2  # (P,) its variance
    marginal = _entropy_bits(ndtr(mu / np.sqrt(1.0 + var)))  # H of the predictive P(a beats b)
    expected = _C / np.sqrt(var + _C**2) * np.exp(-(mu**2) / (2 * (var + _C**2)))  # E_beta H[P(a beats b)]
    return np.clip(marginal - expected, 0.0, 1.0)


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) index arrays of the n (n - 1) / 2 unordered pairs of n items, first < second."""
    first, second = np.triu_indices(n, k=1)
    return first, second


@dataclass(frozen=True)
class PairChoice:
    """The pair (indices into the candidates) to show side by side and what the answer is worth."""

    first: int
    second: int
    bits: float  # expected information gain of the user's answer


def most_informative_pair(x: np.ndarray, mean: np.ndarray, cov: np.ndarray, min_bits: float = 0.0) -> PairChoice | None:
    """The most informative of the pairs of N candidates with coordinates x (N, D) for a user with
    posterior N(mean (D,), cov (D, D)); None when N < 2 or when even the best pair carries fewer
    than `min_bits` (the user is well known on these candidates). Identical candidates (a zero
    difference) carry nothing and are never chosen."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return None
    first, second = all_pairs(len(x))
    bits = pair_information(x[first] - x[second], mean, cov)  # (P,)
    best = int(np.argmax(bits))
    if bits[best] <= 0.0 or bits[best] < min_bits:
        return None
    return PairChoice(first=int(first[best]), second=int(second[best]), bits=float(bits[best]))


def select_active(design: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray, k: int,
                  newton_steps: int = 25, tol: float = 1e-7) -> list[int]:
    """Offline active selection: indices of k of the P comparisons whose outcomes are known
    (design (P, D), chosen minus rejected), chosen one at a time, each the most informative
    (`pair_information`) under the posterior fitted on the ones chosen before it (sequential BALD:
    what a live questionnaire does, one answer at a time). prior_mean, prior_precision (D,) are the
    user model's diagonal Gaussian prior. Returns min(k, P) distinct indices in the order chosen."""
    from pluralign.user.model import fit_posterior

    design = np.asarray(design, np.float64)
    mean, cov = np.asarray(prior_mean, np.float64), np.diag(1.0 / np.asarray(prior_precision, np.float64))
    chosen: list[int] = []
    left = np.ones(len(design), bool)
    for _ in range(min(k, len(design))):
        bits = np.where(left, pair_information(design, mean, cov), -1.0)
        best = int(np.argmax(bits))
        chosen.append(best)
        left[best] = False
        mean, cov = fit_posterior(design[chosen], prior_mean, prior_precision, newton_steps, tol)
    return chosen
