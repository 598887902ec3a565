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

BALD asks about every coefficient alike, and a new user's wide prior on the named features makes
it favour the pair whose features differ most, whether or not that settles what the user will be
served. Two criteria aim at what the answers are for instead; both are Monte Carlo over S samples
of the posterior (a fixed generator, so the same inputs give the same choice):

- `best_information`: the information the answer carries about *which of the N candidates is best*
  for the user, I(y; argmax_n beta . x_n), the quantity chat's `pluralign.compare` targets (the
  entropy-search / information-directed view of dueling bandits: Hennig and Schuler, "Entropy
  Search for Information-Efficient Global Optimization", JMLR 2012; Russo and Van Roy, "Learning
  to Optimize via Information-Directed Sampling", 2018). Once every posterior sample agrees on the
  best candidate it is exactly 0, so `compare` stops.
- `predictive_information`: EPIG, the expected information the answer carries about the user's
  answers to *target* comparisons drawn from where the model will be used, averaged over them
  (Bickford Smith, Kirsch, Farquhar, Gal, Foster and Rainforth, "Prediction-Oriented Bayesian
  Active Learning", AISTATS 2023). `select_active` offers it with the pool itself as the targets.

A third view takes the population itself as the prior: a new user is like one of U seen users
(their Gaussian posteriors, `particle_predictive`), and the question is which of PAL's groups of
seen users that is. `group_information` is the answer's information about the group (BALD on a
discrete hypothesis space, aimed at the hypotheses' equivalence classes as in Golovin, Krause and
Ray, NeurIPS 2010), `select_by_group` the greedy questionnaire and `particle_posterior` the user's
weights over the seen users after their answers. On persona users (stance shared within a group)
two answers chosen this way predict at least as well as four random ones, and five as well as ten
(BENCHMARKS.md, issue 16); `pluralign eval --shots active --active-target group` measures it. The
onboarding route offers it as `"target": "population"`, each of the tenant's fitted users their own
group (no clustering at request time); chat's `compare` still chooses its pair by BALD (`compare_target`).

Whether chat asks at all is decided by `best_information` (`most_informative_pair`'s `gate`), and so is the
onboarding route's `worth_asking` (each prompt of its pool a set of candidates, `sets`): BALD keeps
finding bits in coefficients that can no longer change which answer is best, and with the real models a
consistent user was asked about most responses after 200 answers; with the user's ties fitted too
(`pluralign.user.model.fit_posterior`), the gate lets `compare` go once the user is known (BENCHMARKS.md,
sessions 48 and 49).

Shapes: P pairs, N candidates, D coefficients, S posterior samples, T target pairs, U seen users.
Units: bits.
Cost: BALD O(P D^2), about 30 microseconds for the 28 pairs of 8 candidates at D = 75; the sampled
criteria O(D^3 + S D (N + P)), well under a millisecond at S = 256.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, ndtr

from pluralign.checks import whole

# `pluralign.compare` is null once the best pair among the returned choices carries less than this
# many bits about the user (a tenth of a yes/no answer's worth): what they will pick is then either
# predictable or a coin flip the model already knows to be one. (Chat reads it by `best_information`;
# the figures below are BALD's.) On a simulated 6-feature logistic
# user (tests/unit/test_active.py) the best of 8 candidates' 28 pairs carries 0.87 bits for a new
# user, 0.41 after 30 comparisons, 0.12 after 100 and 0.085 after 300 (the median pair: 0.72, 0.17,
# 0.02, 0.002): at 0.1 a user stops being asked after a few hundred comparisons, and far fewer
# pairs are worth asking about well before that.
COMPARE_MIN_BITS = 0.1

# A user who changes their mind: once the gate above has closed, a user whose newest answers contradict what their older
# ones taught is asked again (`recent_surprise`, `most_informative_pair`'s `surprised`). The check reads the user's last
# RECENT_ANSWERS answers (comparisons with a winner and ties) and opens the gate while their log losses under the
# posterior of the older answers stand SURPRISE_Z standard deviations high by two z's at once: ranked above the older
# answers' own held-out losses (`rank_shift`: distribution-free for a user whose answers are exchangeable, old and new,
# so such a user is flagged about as often as a normal z of 3 says, whatever their noise), and above what the older
# posterior expects of each pair (`predictive_surprise`, the calibrated check: right for pairs chosen because the posterior
# was unsure of them, as chat's `compare` chooses them, if the posterior is calibrated). Either alone flags users who
# never changed: the calibrated one, noisy ones (on few noisy answers the posterior is overconfident); the rank's, firm
# ones answering `compare` pairs (the newest pairs are harder than the older have become). On the real user model
# (`benchmarks/changed_mind.py`, BENCHMARKS.md sessions 52 and reviewmind52), calibrated alone -> both: coin flippers flagged
# at 12 -> 0 of 88 refits, noisy length-preferring users 4 -> 1; refitted after every answer up to 60, 28 -> 4 and
# 22 -> 1 of 40 users at least once (136 -> 9 and 73 -> 1 of 1,840 refits); firm users answering only `compare` pairs
# 0 -> 0 of 20 (the rank alone: 3 of 20). The price is delay: a user known firmly from 37 answers who turns the other
# way is flagged after 3-10 contrary answers (median 6; 2-8, median 3, before), one known from 13 after 5-10 (median 7)
# for 18 of 20 (3-9 before, all). `tests/unit/test_surprise51.py`, `tests/unit/test_surprise52.py`.
RECENT_ANSWERS = 10
SURPRISE_Z = 3.0

_PROBIT = math.sqrt(math.pi / 8)  # sigmoid(f) ~ Phi(f * _PROBIT)
_PREDICTIVE_ROWS = 256  # comparisons per block in `particle_predictive`: 128 users x 256 x D=76 doubles = 20 MB
_C = math.sqrt(math.pi * math.log(2) / 2)  # Houlsby et al.'s constant: h(Phi(x)) ~ exp(-x^2 / (pi ln 2))
SAMPLES = 256  # posterior samples of the Monte Carlo criteria: a 0.23-bit best pair's value has sd 0.02 bits across seeds
CRITERIA = ("best", "coefficients")  # chat's `compare_target`: `best_information` or BALD's `pair_information`


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _finite(name: str, value: np.ndarray) -> np.ndarray:
    """`value` when every element is a finite number; else a ValueError naming `name` (a NaN gave NaN bits, which
    `np.argmax` takes as the largest: a question chosen on nothing, shown with `bits` NaN)."""
    if not np.isfinite(value).all():
        raise ValueError(f"`{name}` is not finite (NaN or inf)")
    return value


def _probabilities(name: str, value) -> np.ndarray:
    """`value` as float64 when it is finite probabilities in [0, 1]; else a ValueError naming `name`."""
    value = np.asarray(value, np.float64)
    if not ((value >= 0) & (value <= 1)).all():  # False for NaN too
        bad = value[~((value >= 0) & (value <= 1))].flat[0]
        raise ValueError(f"`{name}` must be probabilities in [0, 1]: it holds {float(bad)}")
    return value


def _distribution(name: str, value) -> np.ndarray:
    """`value` as float64 when it is finite weights >= 0 summing to 1 (within 1e-6); else a ValueError naming `name`."""
    value = np.asarray(value, np.float64)
    if not (value >= 0).all() or not np.isfinite(value).all() or abs(float(value.sum()) - 1.0) > 1e-6:
        raise ValueError(f"`{name}` must be weights >= 0 summing to 1, got sum {float(value.sum()):.6g} ({value.size} weights)")
    return value


def pair_information(diff: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Expected information gain, in bits, of asking the user to compare each pair.

    diff (P, D): x_a - x_b for each pair (the sign does not matter); mean (D,) and cov (D, D): the
    user's Gaussian posterior. Returns (P,) values in [0, 1]. Raises ValueError on mismatched shapes
    and naming `diff`, `mean` or `cov` when it holds NaN or inf."""
    diff = np.atleast_2d(np.asarray(diff, np.float64))
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    if diff.shape[1] != mean.shape[0] or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"pairs {diff.shape}, mean {mean.shape} and cov {cov.shape} do not agree")
    for name, value in (("diff", diff), ("mean", mean), ("cov", cov)):
        _finite(name, value)
    mu = (diff @ mean) * _PROBIT  # (P,) the margin's posterior mean, on the probit scale
    var = np.maximum(np.einsum("pd,de,pe->p", diff, cov, diff), 0.0) * _PROBIT**2  # (P,) its variance
    marginal = _entropy_bits(ndtr(mu / np.sqrt(1.0 + var)))  # H of the predictive P(a beats b)
    expected = _C / np.sqrt(var + _C**2) * np.exp(-(mu**2) / (2 * (var + _C**2)))  # E_beta H[P(a beats b)]
    return np.clip(marginal - expected, 0.0, 1.0)


def posterior_samples(mean: np.ndarray, cov: np.ndarray, samples: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """(S, D) draws from N(mean (D,), cov (D, D)), from a fixed generator (`seed`). A covariance that
    is not numerically positive definite gets a small diagonal jitter. Raises ValueError on
    mismatched shapes, naming `mean` or `cov` when it holds NaN or inf, and when the covariance is
    not positive definite even with the jitter."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    if cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"mean {mean.shape} and cov {cov.shape} do not agree")
    _finite("mean", mean)
    _finite("cov", cov)
    jitter = 0.0
    for _ in range(6):
        try:
            chol = np.linalg.cholesky(cov + jitter * np.eye(len(mean)))
            break
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10, 1e-10 * max(float(np.trace(cov)) / max(len(mean), 1), 1e-12))
    else:
        raise ValueError("the posterior covariance is not positive definite")
    return mean + _normal_draws(samples, len(mean), seed) @ chol.T


@functools.lru_cache(maxsize=16)
def _normal_draws(samples: int, dim: int, seed: int) -> np.ndarray:
    """(samples, dim) standard normal draws, made once per shape and seed (common random numbers:
    the same user and candidates always give the same choice, and a chat request does not pay for
    drawing them)."""
    draws = np.random.default_rng(seed).standard_normal((samples, dim))
    draws.flags.writeable = False
    return draws


def best_information(x: np.ndarray, first: np.ndarray, second: np.ndarray, mean: np.ndarray, cov: np.ndarray,
                     samples: int = SAMPLES, seed: int = 0, sets: np.ndarray | None = None) -> np.ndarray:
    """Information, in bits, that the user's answer to each pair carries about which of the N
    candidates is best for them: I(y; argmax_n beta . x_n) with y ~ Bernoulli(sigmoid(beta . (x_a -
    x_b))) and beta ~ N(mean, cov), estimated with S posterior samples (plug-in over the samples'
    argmax groups).

    x (N, D) candidate coordinates; first, second (P,) candidate indices of the pairs; mean (D,),
    cov (D, D). `sets` (N,) ints, or None (one set): the candidates fall into sets, each the answers to
    one prompt (onboarding's pool), and each pair is asked about the best of its own set (the same
    posterior samples for every set). Returns (P,) values in [0, min(1, log2 N)]; all 0 when every
    sample agrees on the best candidate (of each set). Raises ValueError on mismatched shapes and
    naming `sets` when it is not one int per candidate or a pair joins two sets."""
    x = np.atleast_2d(np.asarray(x, np.float64))
    if x.shape[1] != np.asarray(mean).shape[0]:
        raise ValueError(f"candidates {x.shape} and mean {np.asarray(mean).shape} do not agree")
    first, second = np.asarray(first), np.asarray(second)
    draws = posterior_samples(mean, cov, samples, seed)  # (S, D)
    reward = draws @ x.T  # (S, N)
    win = expit(reward[:, first] - reward[:, second])  # (S, P) P(a beats b | sample)
    sets = np.zeros(len(x), np.int64) if sets is None else np.asarray(sets)
    if sets.shape != (len(x),) or not np.issubdtype(sets.dtype, np.integer):
        raise ValueError(f"`sets` must be one int per candidate ({len(x)}), got shape {sets.shape} of {sets.dtype}")
    pair_set = sets[first]  # (P,)
    if (pair_set != sets[second]).any():
        k = int(np.flatnonzero(pair_set != sets[second])[0])
        raise ValueError(f"`sets`: pair {k} joins candidates of two sets ({int(pair_set[k])} and {int(sets[second][k])})")
    return _information_about_best(reward, win, sets, pair_set)


def _information_about_best(reward: np.ndarray, win: np.ndarray, sets: np.ndarray, pair_set: np.ndarray) -> np.ndarray:
    """(P,) I(y; best of its set) of each pair, the plug-in estimate from S samples' rewards (S, N) of the candidates
    and the pairs' P(a beats b) (S, P): H(y) - sum over the set's members m of P(best = m) H(y | best = m), the
    samples grouped by their best. Every set at once (a pool of 200 stored pairs, each its own set, took 50 ms set by
    set): G sets of at most L candidates laid out (G, L), each pair's samples counted in its (pair, best) bin, O(S P)."""
    labels, inverse = np.unique(sets, return_inverse=True)  # (G,), (N,) each candidate's set
    size = np.bincount(inverse, minlength=len(labels))  # (G,)
    order = np.argsort(inverse, kind="stable")
    slot = np.empty(len(sets), np.int64)
    slot[order] = np.arange(len(sets)) - np.concatenate([[0], np.cumsum(size)[:-1]])[inverse[order]]  # (N,) place in its set
    members = np.full((len(labels), size.max()), -1)
    members[inverse, slot] = np.arange(len(sets))  # (G, L) each set's candidates, in index order; -1 past its size
    valid = members >= 0
    set_reward = np.where(valid, reward[:, np.where(valid, members, 0)], -np.inf)  # (S, G, L)
    best = set_reward.argmax(2)  # (S, G) each sample's best of each set, as its place in the set (the first of a tie)
    samples, pairs, width = len(reward), len(pair_set), members.shape[1]
    of_pair = np.searchsorted(labels, pair_set)  # (P,) each pair's set, as an index into `labels`
    bins = (np.arange(pairs) * width + best[:, of_pair]).ravel()  # (S P,) each sample's (pair, best of the pair's set)
    count = np.bincount(bins, minlength=pairs * width).reshape(pairs, width)  # (P, L)
    wins = np.bincount(bins, weights=win.ravel(), minlength=pairs * width).reshape(pairs, width)  # (P, L)
    within = wins / np.maximum(count, 1)  # (P, L) P(a beats b | best = member)
    expected = (count / samples * _entropy_bits(within)).sum(1)  # (P,)
    return np.clip(_entropy_bits(win.mean(0)) - expected, 0.0, 1.0)


def predictive_information(diff: np.ndarray, targets: np.ndarray, mean: np.ndarray, cov: np.ndarray,
                           samples: int = SAMPLES, seed: int = 0) -> np.ndarray:
    """EPIG: for each candidate comparison, the information, in bits, that the user's answer to it
    carries about their answer to a target comparison, averaged over the T targets
    (Bickford Smith et al. 2023, eq. 2, with the predictive distributions estimated from S
    posterior samples).

    diff (P, D) and targets (T, D): x_a - x_b of the candidate and target comparisons; mean (D,),
    cov (D, D). Returns (P,) values in [0, 1]. Raises ValueError on mismatched shapes."""
    diff, targets = np.atleast_2d(np.asarray(diff, np.float64)), np.atleast_2d(np.asarray(targets, np.float64))
    if diff.shape[1] != np.asarray(mean).shape[0] or targets.shape[1] != diff.shape[1]:
        raise ValueError(f"pairs {diff.shape}, targets {targets.shape} and mean {np.asarray(mean).shape} do not agree")
    draws = posterior_samples(mean, cov, samples, seed)  # (S, D)
    return sample_predictive_information(expit(draws @ diff.T), expit(draws @ targets.T))


def sample_predictive_information(p: np.ndarray, q: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """EPIG from S (weighted) posterior samples' predictives: p (S, P) and q (S, T), each sample's
    probability that the first answer of each candidate and target comparison wins; weights (S,)
    summing to 1 (None: equal), e.g. samples reweighted by an answer not yet given, to plan a
    question ahead. Returns (P,) bits, averaged over the T targets, in [0, 1]. Raises ValueError on
    mismatched shapes, naming `p` or `q` when they are not probabilities and `weights` when they are
    not >= 0 summing to 1 (weights of sum 4 gave 1 bit for every candidate)."""
    p, q = np.atleast_2d(_probabilities("p", p)), np.atleast_2d(_probabilities("q", q))
    w = np.full(len(p), 1.0 / len(p)) if weights is None else _distribution("weights", weights)
    if q.shape[0] != len(p) or w.shape != (len(p),):
        raise ValueError(f"predictives {p.shape} and {q.shape} and weights {w.shape} do not agree")
    both = (p * w[:, None]).T @ q  # (P, T) P(y = 1, y* = 1)
    pm, qm = (w @ p)[:, None], (w @ q)[None, :]
    cells = (both, pm - both, qm - both, 1.0 - pm - qm + both)
    joint = -sum(c * np.log2(np.clip(c, 1e-12, 1.0)) for c in cells)  # (P, T) H(y, y*)
    info = _entropy_bits(pm) + _entropy_bits(qm) - joint  # (P, T) I(y; y*)
    return np.clip(info.mean(1), 0.0, 1.0)


def particle_predictive(diff: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Each of U known users' posterior predictive probability that the first answer of each
    comparison wins: sigmoid(m_u . z / sqrt(1 + pi / 8 z' S_u z)) (the logistic-Gaussian integral
    matched to a probit, MacKay 1992), so a user fitted on few comparisons predicts less sharply.

    diff (P, D): x_a - x_b; means (U, D) and covs (U, D, D): the users' Gaussian posteriors.
    Returns (P, U) probabilities. Raises ValueError on mismatched shapes."""
    diff = np.atleast_2d(np.asarray(diff, np.float64))
    means, covs = np.atleast_2d(np.asarray(means, np.float64)), np.asarray(covs, np.float64)
    if diff.shape[1] != means.shape[1] or covs.shape != (means.shape[0], means.shape[1], means.shape[1]):
        raise ValueError(f"pairs {diff.shape}, means {means.shape} and covs {covs.shape} do not agree")
    var = np.empty((len(diff), len(means)))  # (P, U): the matmul first (~10x faster than one einsum at 200 x 128),
    for start in range(0, len(diff), _PREDICTIVE_ROWS):  # a block of rows at a time: (U, rows, D) stays small
        block = diff[start:start + _PREDICTIVE_ROWS]
        var[start:start + len(block)] = np.einsum("upe,pe->pu", block @ covs, block)
    return expit((diff @ means.T) / np.sqrt(1.0 + _PROBIT**2 * np.maximum(var, 0.0)))


@dataclass(frozen=True)
class Particles:
    """U known users as a discrete population: posterior means (U, D), covariances (U, D, D) and
    each one's group (U,) ints (each user their own group: information about which user)."""

    means: np.ndarray
    covs: np.ndarray
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.means)

    def predictive(self, design: np.ndarray) -> np.ndarray:
        """(P, U): each known user's predictive probability that each row's first answer wins."""
        return particle_predictive(design, self.means, self.covs)


def group_information(prob: np.ndarray, weights: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Information, in bits, that the answer to each comparison carries about which *group* a new
    user belongs to, when the user is taken to be one of U known users (a discrete prior over them,
    `weights`) and the users fall in groups (PAL's user clusters): I(y; g) = H[sum_g pi_g p_g] -
    sum_g pi_g H[p_g], with pi_g the weight of group g and p_g its weighted mean predictive.

    This is BALD on a discrete hypothesis space whose target is the hypotheses' equivalence class,
    not the hypothesis itself (the setting of Golovin, Krause and Ray, "Near-Optimal Bayesian Active
    Learning with Noisy Observations", NeurIPS 2010). With every user their own group it is BALD
    over the users. prob (P, U): `particle_predictive`; weights (U,) summing to 1; groups (U,) ints.
    Returns (P,) values in [0, 1]. Raises ValueError on mismatched shapes, naming `prob` when it is
    not probabilities and `weights` when they are not >= 0 summing to 1 (weights (2, 3, 5) gave 0 bits
    for every comparison: no question worth asking)."""
    prob, groups = np.atleast_2d(_probabilities("prob", prob)), np.asarray(groups)
    weights = _distribution("weights", weights)
    if prob.shape[1] != len(weights) or len(groups) != len(weights):
        raise ValueError(f"predictive {prob.shape}, weights {weights.shape} and groups {groups.shape} do not agree")
    expected = np.zeros(len(prob))
    for g in np.unique(groups):
        member = groups == g
        share = weights[member].sum()
        if share > 0:
            expected += share * _entropy_bits(prob[:, member] @ weights[member] / share)
    return np.clip(_entropy_bits(prob @ weights) - expected, 0.0, 1.0)


def select_by_group(prob: np.ndarray, groups: np.ndarray, k: int) -> list[int]:
    """Offline choice of k of P comparisons whose outcomes are known (prob (P, U): each known user's
    predictive that the comparison's *chosen* answer wins, `particle_predictive` of chosen minus
    rejected), one at a time, each the one with the most `group_information` under the posterior
    over the U known users given the answers chosen before (uniform prior, Bayes' rule with the
    predictive as likelihood). Returns the min(k, P) distinct indices in the order chosen. Raises
    ValueError on mismatched shapes, naming `prob` when it is not probabilities, and `k` when it is
    not a whole number >= 0 (as `select_active`)."""
    whole("select_by_group", 0, k=k)
    prob = np.atleast_2d(_probabilities("prob", prob))
    weights = np.full(prob.shape[1], 1.0 / prob.shape[1])
    chosen: list[int] = []
    left = np.ones(len(prob), bool)
    for _ in range(min(k, len(prob))):
        best = int(np.argmax(np.where(left, group_information(prob, weights, groups), -1.0)))
        chosen.append(best)
        left[best] = False
        weights = particle_posterior(prob[chosen])
    return chosen


def particle_posterior(prob_observed: np.ndarray, prob_tied: np.ndarray | None = None) -> np.ndarray:
    """(U,) posterior weights over U known users after comparisons whose observed winner each user
    predicted with prob_observed (N, U), and ties, answers that named no winner, of comparisons whose
    first answer each user predicted to win with prob_tied (M, U) (uniform prior; log space, so
    many comparisons do not underflow). With N = M = 0 the weights are uniform.

    A tie's likelihood under a known user is 2 sqrt(p (1 - p)): Davidson's tie term ("On extending
    the Bradley-Terry model to accommodate ties in paired comparison experiments", JASA 1970, its
    nu sqrt(p (1 - p)) with nu = 2 and without its normaliser, so a strict answer keeps its Bradley-Terry likelihood): 1 for
    a user who could not tell the two answers apart (p = 1/2), near 0 for one sure of either. So a
    user who answers "no preference" moves towards the known users who are indifferent there,
    where without it a tie told the questionnaire nothing and it asked the same kind of question
    again. Raises ValueError when the two do not name the same U users, and naming either when it is
    not probabilities in [0, 1] (a NaN made every weight NaN; 3.0 was taken as a likelihood)."""
    logp = np.log(np.clip(np.atleast_2d(_probabilities("prob_observed", prob_observed)), 1e-12, 1.0)).sum(0)
    if prob_tied is not None and len(prob_tied):
        tied = np.clip(np.atleast_2d(_probabilities("prob_tied", prob_tied)), 1e-12, 1 - 1e-12)
        if tied.shape[1] != logp.shape[0]:
            raise ValueError(f"observed {np.shape(prob_observed)} and tied {tied.shape} name different known users")
        logp = logp + np.log(2.0 * np.sqrt(tied * (1.0 - tied))).sum(0)
    w = np.exp(logp - logp.max())
    return w / w.sum()


def answer_losses(mean: np.ndarray, cov: np.ndarray, rows: np.ndarray, tie: np.ndarray | None = None,
                  held_out: bool = False) -> np.ndarray:
    """Each answer's log loss, in bits, under the posterior N(mean (D,), cov (D, D)): how badly it predicts the answer
    given. rows (N, D): each comparison's chosen minus rejected coordinates, whose loss is -log2 p with p the predictive
    probability of the answer given, sigmoid(m . z / sqrt(1 + pi/8 z' S z)) (MacKay 1992); where `tie` (N,) bools is
    true the row is a tie's first minus second coordinates, whose loss is the fitted tie term's, -log2 2 sqrt(p (1 - p))
    (Davidson 1970 without its normaliser, as `pluralign.user.model.fit_posterior` fits ties: 0 bits for a pair the
    posterior finds even, about |margin| / 2 nats for one it is sure of either way). Returns (N,) losses.

    `held_out`: the posterior was fitted on these very answers (and only these, with its prior), and each is scored by
    the posterior without it, approximated by one Newton step from the mode (approximate leave-one-out: Rad and Maleki,
    "A scalable estimate of the out-of-sample prediction error via approximate leave-one-out cross-validation", JRSS B
    2020): with m and v = z' S z the answer's margin mean and variance and l', l'' the derivatives of its negative log
    likelihood in the margin, the margin without it is m + l' v / (1 - l'' v), its variance v / (1 - l'' v)
    (Sherman-Morrison). O(N D^2) from the fit's own S, where exact leave-one-out costs N fits
    (`tests/unit/test_surprise52.py` compares them). Raises ValueError on mismatched shapes or values that are not finite."""
    p, tie = _predictive(mean, cov, rows, tie, held_out)
    return np.where(tie, -np.log2(2.0 * np.sqrt(p * (1.0 - p))), -np.log2(p))


def _predictive(mean: np.ndarray, cov: np.ndarray, rows: np.ndarray, tie: np.ndarray | None,
                held_out: bool) -> tuple[np.ndarray, np.ndarray]:
    """`answer_losses`' checked inputs and predictive probabilities: (p (N,), P(each row's first answer wins) clipped to
    [1e-12, 1 - 1e-12], and tie (N,) bools)."""
    mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    rows = np.atleast_2d(np.asarray(rows, np.float64))
    if not rows.size:
        return np.zeros(0), np.zeros(0, bool)
    tie = np.zeros(len(rows), bool) if tie is None else np.asarray(tie, bool)
    if rows.shape[1] != mean.shape[0] or cov.shape != (mean.shape[0], mean.shape[0]) or tie.shape != (len(rows),):
        raise ValueError(f"answers {rows.shape}, ties {tie.shape}, mean {mean.shape} and cov {cov.shape} do not agree")
    for name, value in (("rows", rows), ("mean", mean), ("cov", cov)):
        _finite(name, value)
    margin = rows @ mean
    var = np.maximum(((rows @ cov) * rows).sum(1), 0.0)  # (N,) z' S z (a matmul: the einsum took 9 ms at N = 500)
    if held_out:
        p = expit(margin)
        slope = np.where(tie, p - 0.5, p - 1.0)  # d/dm of -log sigmoid(m), and of the tie term (`davidson_tie_nll`)
        shrink = 1.0 - np.minimum(p * (1.0 - p) * var, 1.0 - 1e-9)  # > 0: S^-1 >= p (1 - p) z z' (it is in the Hessian)
        margin, var = margin + slope * var / shrink, var / shrink
    return np.clip(expit(margin / np.sqrt(1.0 + _PROBIT**2 * var)), 1e-12, 1 - 1e-12), tie  # P(the first answer wins)


def predictive_surprise(mean: np.ndarray, cov: np.ndarray, rows: np.ndarray, tie: np.ndarray | None = None) -> float:
    """How much worse the posterior N(mean (D,), cov (D, D)) predicts the answers rows (N, D) (`answer_losses`' form) than
    it expects to, in standard deviations under its own predictions: a posterior predictive check with the log score
    (Box 1980; Gelman, Meng and Stern 1996; the calibrated check of `recent_surprise`). With p_i the predictive probability of answer
    i's first answer, each comparison's loss -log2 p_i is compared with what the posterior expects of it, H(p_i), and
    z = sum_i (loss_i - H(p_i)) / sqrt(sum_i p_i (1 - p_i) log2(p_i / (1 - p_i))^2). A tie is read as Davidson's half a
    comparison won each way, (-log2 p_i - log2 (1 - p_i)) / 2 (the fitted tie term without its constant): H(p_i) for
    a pair the posterior finds even, growing like |margin| / 2 for one it is sure of. Each answer is measured against
    its own pair's uncertainty, so pairs chosen because the posterior was unsure of them (chat's `compare`) are not
    surprising for being hard; but the z is about normal only if the predictions are calibrated, which a posterior
    fitted on few noisy answers is not (`recent_surprise` takes it with `rank_shift`). Returns the z (0 with no
    answers, or when every prediction is a coin flip). Raises ValueError as `answer_losses`."""
    p, tie = _predictive(mean, cov, rows, tie, False)
    spread = float((p * (1.0 - p) * np.log2(p / (1.0 - p)) ** 2).sum())
    if spread <= 1e-12:
        return 0.0
    loss = np.where(tie, -(np.log2(p) + np.log2(1.0 - p)) / 2.0, -np.log2(p))
    return float((loss - _entropy_bits(p)).sum() / math.sqrt(spread))


def _midranks(values: np.ndarray) -> np.ndarray:
    """(n,) ranks 1..n of values (n,), equal values sharing their mean rank (scipy.stats.rankdata's `average`, without
    importing scipy.stats: a second at a process's first refit)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))  # first index of each run of equals
    ends = np.concatenate([starts[1:], [len(values)]])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # a run at positions s..e-1 shares (s + 1 + e) / 2
    return ranks


def rank_shift(baseline: np.ndarray, recent: np.ndarray) -> float:
    """How far the `recent` (r,) losses, oldest first, rank above the `baseline` (b,) ones, in standard deviations under
    exchangeability: the larger of two linear rank statistics T = sum_j a_j R_j over all n = b + r losses' midranks R,
    each standardized by its exact mean and spread over the n! equally likely orders (Hajek and Sidak, "Theory of Rank
    Tests", 1967, ch. 3: E T = n a_bar R_bar, Var T = sum (a - a_bar)^2 sum (R - R_bar)^2 / (n - 1); the z is sqrt(n - 1)
    times the correlation of scores and ranks). Scores 0 for the baseline and, for the recent ones, 1 each (the
    Wilcoxon-Mann-Whitney rank sum: a window wholly changed) or 1, 2, .., r (the newest weighing most: a change at the
    window's end, read sooner; after 5 contrary answers of 20, at most 3.86 where the rank sum reaches 2.45).

    Distribution-free: if the user's answers are alike, old and new, every order of their losses is as likely as the
    one seen, whatever the losses' scale or calibration, and the z is about normal; the larger of the two reached 3 in
    at most 0.14% of 20,000 exchangeable heavy-tailed draws (b = 5 to 90, r = 10), where a z of the mean losses with the
    same exact spread reached 1.3% (`tests/unit/test_surprise52.py`). 0 when either is empty or every loss is the same.
    Raises ValueError on losses that are not finite."""
    baseline = _finite("baseline", np.asarray(baseline, np.float64).ravel())
    recent = _finite("recent", np.asarray(recent, np.float64).ravel())
    r, n = len(recent), len(baseline) + len(recent)
    if not r or r == n:
        return 0.0
    ranks = _midranks(np.concatenate([baseline, recent]))  # (n,)
    spread = float(((ranks - ranks.mean()) ** 2).sum()) / (n - 1.0)
    if spread <= 1e-12:
        return 0.0
    z = []
    for rising in (np.ones(r), np.arange(1.0, r + 1)):
        scores = np.concatenate([np.zeros(n - r), rising])  # (n,)
        centred = scores - scores.mean()
        z.append(float(centred @ ranks / math.sqrt(spread * (centred**2).sum())))
    return max(z)


@dataclass(frozen=True)
class Recent:
    """A user's newest answers, oldest first (`pluralign.store.history.History.newest_answers`): each a comparison with
    a winner, `index` into their comparisons, or where `tie` is true a tie, `index` into their ties."""

    index: np.ndarray  # (R,) ints
    tie: np.ndarray  # (R,) bools

    @staticmethod
    def comparisons(index) -> Recent:
        """Comparisons only, `index` (R,) into them, oldest first."""
        index = np.asarray(index, np.int64).ravel()
        return Recent(index=index, tie=np.zeros(len(index), bool))


def recent_surprise(mean: np.ndarray, cov: np.ndarray, older: np.ndarray, recent: np.ndarray,
                    older_tie: np.ndarray | None = None, recent_tie: np.ndarray | None = None) -> float:
    """Whether a user's recent answers contradict what their older ones taught: the smaller of two z's of the recent
    answers' log losses under the posterior N(mean (D,), cov (D, D)) fitted on the older ones (a held-out, prequential
    check: Dawid 1984), so the check fails (>= SURPRISE_Z) only when both do.

    - `rank_shift` of those losses against each older answer's own held-out loss (`answer_losses(held_out=True)`), which
      needs no calibrated posterior (its older answers' held-out losses are overconfident alike): users who never
      changed but answer noisily are not flagged for it (the calibrated check alone flagged coin flippers at 12 of 88
      refits). It assumes the answers exchangeable, old and new, and the pairs chat's `compare` asks about are not:
      chosen as those the posterior is least sure of, the newest are harder than the older ones have become, and alone
      it flagged firm, consistent users answering them (through `UserModel.fit_user`: 4 of 20, up to z 4.1).
    - `predictive_surprise` of the recent answers, each against its own pair's uncertainty (the calibrated check), which
      needs no exchangeable pairs but a calibrated posterior.

    A user who never changed is flagged by both about as rarely as the one whose assumption holds allows (the
    intersection-union principle: Berger, "Multiparameter hypothesis testing and acceptance sampling", Technometrics
    1982); one who changed fails both, the rank z later (flip delays: BENCHMARKS.md, session 52 and reviewmind52). older (N, D) and recent (R, D, oldest first): chosen-minus-rejected rows, or
    where `older_tie` (N,) / `recent_tie` (R,) bools are true a tie's first-minus-second row, read through the fitted
    tie term (`answer_losses`, `predictive_surprise`): a user sure of one answer who starts to tie such pairs fails
    the check too. Returns the z (0 without recent or older answers). Raises ValueError on mismatched shapes or values
    that are not finite."""
    baseline = answer_losses(mean, cov, older, older_tie, held_out=True)
    losses = answer_losses(mean, cov, recent, recent_tie)
    if not len(baseline) or not len(losses):
        return 0.0
    return min(rank_shift(baseline, losses), predictive_surprise(mean, cov, recent, recent_tie))


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


def most_informative_pair(x: np.ndarray, mean: np.ndarray, cov: np.ndarray, min_bits: float = 0.0,
                          target: str = "coefficients", gate: str | None = None, surprised: bool = False) -> PairChoice | None:
    """The most informative of the pairs of N candidates with coordinates x (N, D) for a user with
    posterior N(mean (D,), cov (D, D)); None when N < 2 or when even the best pair carries fewer
    than `min_bits` (the user is well known on these candidates) by the `gate` criterion (None: `target`
    itself). `target` and `gate`: `coefficients` (BALD, `pair_information`) or `best` (information about
    which candidate is best, `best_information`). Chat's `compare` gates by `best`: variance of the
    coefficients that cannot change which answer is best for the user (pairs they are indifferent
    between, once their ties are fitted) does not keep them being asked (BENCHMARKS.md, session 49).
    `surprised`: the user's recent answers contradict the posterior (`recent_surprise` >= SURPRISE_Z): the
    `min_bits` gate is lifted, so a user who changed their mind is asked again: the `target`'s best pair, or BALD's
    when every posterior sample agrees on the best candidate (`best` then carries 0 bits everywhere).
    Identical candidates (a zero difference) carry nothing and are never chosen. Raises ValueError on
    an unknown target or gate and on candidates that are not finite."""
    for name, value in (("target", target), ("gate", gate if gate is not None else target)):
        if value not in CRITERIA:
            raise ValueError(f"{name} must be one of {CRITERIA}, got {value!r}")
    x = np.asarray(x, np.float64)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(-1) if x.ndim else np.array([])
    if bad.any():
        raise ValueError(f"`x` row {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf): a question chosen on it would mean nothing")
    if len(x) < 2:
        return None
    first, second = all_pairs(len(x))
    bits = _pair_bits(target, x, first, second, mean, cov)  # (P,)
    if surprised and bits.max() <= 0.0:  # every posterior sample agrees on the best: ask what BALD finds in the coefficients
        bits = _pair_bits("coefficients", x, first, second, mean, cov)
    best = int(np.argmax(bits))
    if bits[best] <= 0.0:
        return None
    if not surprised:
        asked = bits if gate in (None, target) else _pair_bits(gate, x, first, second, mean, cov)
        if asked.max() <= 0.0 or asked.max() < min_bits:
            return None
    return PairChoice(first=int(first[best]), second=int(second[best]), bits=float(bits[best]))


def _pair_bits(criterion: str, x: np.ndarray, first: np.ndarray, second: np.ndarray, mean: np.ndarray,
               cov: np.ndarray) -> np.ndarray:
    """(P,) bits of each pair (first, second) of candidates x (N, D) by `criterion` (`CRITERIA`)."""
    if criterion == "best":
        bits = best_information(x, first, second, mean, cov)
        bits[np.all(x[first] == x[second], axis=1)] = 0.0
        return bits
    return pair_information(x[first] - x[second], mean, cov)


def select_active(design: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray, k: int,
                  newton_steps: int = 25, tol: float = 1e-7, target: str = "coefficients") -> list[int]:
    """Offline active selection: indices of k of the P comparisons whose outcomes are known
    (design (P, D), chosen minus rejected), chosen one at a time, each the most informative under
    the posterior fitted on the ones chosen before it (what a live questionnaire does, one answer at
    a time). `target`: `coefficients` (BALD, `pair_information`) or `predictive` (EPIG with the
    pool as the targets, `predictive_information`); BENCHMARKS.md compares them on persona users. prior_mean, prior_precision (D,) are the user
    model's diagonal Gaussian prior. Returns min(k, P) distinct indices in the order chosen. Raises
    ValueError on an unknown target or a `k` that is not a whole number >= 0 (and, `fit_posterior`, a design that is
    not finite)."""
    whole("select_active", 0, k=k)
    from pluralign.user.model import _checked, fit_posterior

    if target not in ("predictive", "coefficients"):
        raise ValueError(f"target must be `predictive` or `coefficients`, got {target!r}")
    # checked before the prior's covariance is made from them: a zero precision would be a covariance of inf, named
    # `cov`, and a (D,) design named by the shape of its first choice, (1,)
    design, _, prior_mean, prior_precision = _checked(design, None, prior_mean, prior_precision)
    if prior_precision.ndim != 1:  # a full one's elementwise inverse is no covariance
        raise ValueError(f"`prior_precision` must be a diagonal prior's (D,), got shape {prior_precision.shape}")
    mean, cov = prior_mean, np.diag(1.0 / prior_precision)
    chosen: list[int] = []
    left = np.ones(len(design), bool)
    for _ in range(min(k, len(design))):
        if target == "predictive":
            value = predictive_information(design, design, mean, cov)
        else:
            value = pair_information(design, mean, cov)
        bits = np.where(left, value, -1.0)
        best = int(np.argmax(bits))
        chosen.append(best)
        left[best] = False
        mean, cov = fit_posterior(design[chosen], prior_mean, prior_precision, newton_steps, tol)
    return chosen
