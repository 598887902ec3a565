"""Named features a user's comparisons cannot tell apart, and the user's direction along them jointly.

When two named features move together in every comparison a user made (the shorter answer also
used shorter words), the comparisons say which way the user leans along the pair but not which
feature they care about: each feature's marginal posterior is wide, while the combination the
comparisons moved is well determined. Reading the marginals alone then calls a plain preference
"uncertain".

Collinear, here, is about the Bradley-Terry design itself: the chosen-minus-rejected differences of
the named features (no intercept, so not centred). Two features are collinear in a user's data when
the cosine between their columns is at least COLLINEAR_COSINE in absolute value (their differences
are nearly proportional, comparison by comparison); collinear pairs are joined into groups. A
group's joint direction v is the unit vector (over the group's features) along which the
comparisons moved them: the leading eigenvector of the group's second moment X_g^T X_g, signed so
its first feature's component is positive.

The user's preference along v is s = v . beta. Its posterior probability of being positive is read
off the posterior's density along the path the Laplace Gaussian's conditional mean takes as s varies
(beta(s) = mode + cov v (s - v . mode) / v^T cov v), integrated numerically over s. For a Gaussian
posterior this is Phi(z) exactly; for a user whose comparisons are all consistent (separable data)
it keeps the posterior's skew: a Bradley-Terry likelihood that falls off a cliff on the wrong side
and is flat on the right one, where the Laplace approximation's curvature at the mode is nearly 0
and its z stays near 1 however many comparisons agree.

Each named feature's own sign is read the same way, along its axis (`feature_signs`):
the readable summary's per-feature confidence, which the Laplace z understated for consistent users too.
The path is exact for a Gaussian posterior and checked against importance sampling elsewhere
(benchmarks/joint_direction.py, BENCHMARKS.md): where one feature's comparisons all agree, the path of
another bends through its cliff, and that other's probability can be off by a few hundredths.

Shapes: N comparisons, D coefficients, F named features, G features in a group.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from statistics import NormalDist

import numpy as np

from pluralign.data.record import Base

COLLINEAR_COSINE = 0.9  # |cos| between two features' difference columns at which the data cannot separate them
# where the likelihood is first read along a path: around the mode, in Laplace sds, and NODES_WIDE points out to the
# prior's tails; then between them wherever the interpolant misses it (`_read_likelihood`: a separable feature's
# cliff, crossed by another feature's path, can make the density along it far narrower than the Laplace sd)
AROUND = np.r_[-10.0, -8.0, -6.0, np.arange(-4.0, 4.01, 1.0), 6.0, 8.0, 10.0]
NODES_WIDE = 9
FINE = 1000  # points of each of the integral's two grids over s (the mode's and the prior's)
CHECK_TOL = 0.001  # nats: the cubic Hermite interpolant of the log-likelihood, checked at each interval's midpoint
MASS_NATS = 20.0  # an interval this far below the path's highest log-posterior holds no mass worth checking
REFINE_ROUNDS = 8  # at most this many halvings of an interval whose midpoint missed (`_read_likelihood`)
_PHI = NormalDist().cdf
MIN_MOVED = 1e-9  # a feature whose differences are all below this never moved: it is in no group


class CollinearFeatures(Base, kw_only=True, forbid_unknown_fields=False):
    """Named features a user's comparisons moved together, and the user's posterior along them jointly.

    Stored inside `UserState` (its `collinear`), it reads a field it does not know by leaving it out, as the state
    does (a later release adds fields to it too, as one added `moved_in`); refused, it would make the whole state
    unreadable, and replicas of two releases would refit each other's users at each read."""

    features: list[str]  # (G,) in FEATURE_NAMES order
    direction: list[float]  # (G,) unit vector v over `features`: how the comparisons moved them (first entry > 0)
    # the smallest |cosine| between two of the features' difference columns: >= COLLINEAR_COSINE for two,
    # possibly below it for features joined through another (a ~ b and b ~ c join a and c)
    cosine: float
    mean: float  # posterior mode of s = v . beta
    sd: float  # Laplace posterior standard deviation of s
    p_more: float  # posterior probability that s > 0 (the user prefers more along v)
    # with stated preferences: the same probability from the comparisons alone (fitted under the
    # model's own prior), so a statement the comparisons contradict along the group is visible
    p_more_from_comparisons: float | None = None
    # how many of the comparisons moved any of `features` (two features that moved in one comparison of
    # 400 have a cosine of 1 too); 0 in a state stored before it was kept
    moved_in: int = 0


def collinear_groups(named: np.ndarray) -> list[tuple[list[int], np.ndarray, float]]:
    """named (N, F): the chosen-minus-rejected named features of N comparisons. Returns each group of
    at least two features whose columns have |cosine| >= COLLINEAR_COSINE pairwise-connected, as
    (column indices, v (G,) unit and first entry positive, smallest |cosine| among the group's
    pairs, those joined through another included). Raises ValueError when `named` is not 2-D."""
    named = np.asarray(named, np.float64)
    if named.ndim != 2:
        raise ValueError(f"`named` has shape {named.shape}, expected (N, F)")
    norms = np.linalg.norm(named, axis=0)  # (F,)
    moved = norms > MIN_MOVED
    cos = (named.T @ named) / np.outer(np.where(moved, norms, 1.0), np.where(moved, norms, 1.0))  # (F, F)
    linked = (np.abs(cos) >= COLLINEAR_COSINE) & np.outer(moved, moved)
    np.fill_diagonal(linked, False)
    groups, seen = [], set()
    for start in range(named.shape[1]):
        if start in seen or not linked[start].any():
            continue
        members, todo = {start}, [start]
        while todo:  # the connected component of `start`
            i = todo.pop()
            for j in np.flatnonzero(linked[i]):
                if int(j) not in members:
                    members.add(int(j))
                    todo.append(int(j))
        seen |= members
        cols = sorted(members)
        block = named[:, cols]
        _, vectors = np.linalg.eigh(block.T @ block)
        v = vectors[:, -1] * (1.0 if vectors[0, -1] >= 0 else -1.0)  # the leading eigenvector, first entry positive
        pairs = [abs(cos[i, j]) for i in cols for j in cols if i < j]  # every two, those joined through another too
        groups.append((cols, v, float(min(pairs))))
    return groups


def path_probabilities(design: np.ndarray, mean: np.ndarray, cov: np.ndarray, prior_mean: np.ndarray,
                       prior_precision: np.ndarray, directions: np.ndarray,
                       tied: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The posterior of s = v . beta along each of M directions v (the columns of `directions`, (D, M))
    for a Bayesian logistic (Bradley-Terry) model: design (N, D), its Laplace posterior mode (D,) and
    covariance (D, D), its Gaussian prior's mean (D,) and precision (D,) or (D, D); `tied` (M', D) the
    ties it was fitted on too (`pluralign.user.model.fit_posterior`: Davidson's term, which is half a
    comparison won each way, so each tie is read as its two directions at weight 1/2). Returns (M,) each:
    the mode of s, its Laplace sd, and the posterior probability that s > 0, integrated along the
    conditional-mean path (module docstring). The likelihood, the costly part (N terms a point), is
    read at len(AROUND) + NODES_WIDE + 1 points of each path, with its slope, and again between them
    wherever their cubic Hermite interpolant misses it (`_read_likelihood`); the prior is exact at each
    of the 2 * FINE points of the integral. 33 fixed points are within 5e-4 of a 20,001-point integral on
    benchmarks/joint_direction.py's cases but up to 0.3 off beside a separable feature whose cliff narrows
    the path (tests/unit/test_collinear.py; BENCHMARKS.md, reviewpf44): the reads are checked, ~37 a path for
    a noisy user of 10,000 comparisons."""
    prec = np.diag(prior_precision) if np.ndim(prior_precision) == 1 else np.asarray(prior_precision)
    weights = None
    if tied is not None and len(tied):  # -log 2 sqrt(p (1 - p)) = (-log p - log (1 - p)) / 2 + const
        design = np.concatenate([design, tied, -np.asarray(tied)])
        weights = np.r_[np.ones(len(design) - 2 * len(tied)), np.full(2 * len(tied), 0.5)]  # (N + 2M',)
    directions = np.asarray(directions, np.float64).reshape(len(mean), -1)  # (D, M)
    along = cov @ directions  # (D, M)
    var = np.einsum("dm,dm->m", directions, along)  # (M,)
    steps = along / np.where(var > 0, var, 1.0)  # (D, M) how the conditional mean moves per unit of s
    per_s = design @ steps  # (N, M)
    at_mode = design @ mean  # (N,)
    prior_sd = np.sqrt(np.einsum("dm,dm->m", directions, np.linalg.solve(prec, directions)))  # the right side's long tail
    s0 = directions.T @ mean  # (M,)
    sd = np.sqrt(np.maximum(var, 0.0))
    p_more = (s0 > 0).astype(np.float64)  # a point mass, where var is 0
    off = mean - prior_mean
    for m in np.flatnonzero(var > 0):
        step = steps[:, m]
        # the prior's quadratic along the path, in t = s - s0: off + t step
        quad = (off @ prec @ off, off @ prec @ step, step @ prec @ step)
        log_prior = lambda s, m=m, q=quad: -0.5 * (q[0] + 2 * (s - s0[m]) * q[1] + (s - s0[m]) ** 2 * q[2])  # noqa: E731
        # around the mode (the Laplace spread), out to the prior's tails, and 0 itself: the probability is
        # cut there, and a 400-comparison posterior can be narrower than the wide steps
        half = 10.0 * max(sd[m], prior_sd[m]) + abs(s0[m])
        nodes = np.unique(np.concatenate([np.linspace(-half, half, NODES_WIDE), s0[m] + sd[m] * AROUND, [0.0]]))  # (S,)
        nodes, log_lik, slope = _read_likelihood(nodes, at_mode, per_s[:, m], s0[m], log_prior, weights)
        s = np.unique(np.concatenate([np.linspace(-half, half, FINE), s0[m] + np.linspace(-10 * sd[m], 10 * sd[m], FINE), nodes]))
        density = np.exp((log_post := _hermite(nodes, log_lik, slope, s) + log_prior(s)) - log_post.max())
        total = np.trapezoid(density, s)
        right = s >= 0
        p_more[m] = np.trapezoid(density[right], s[right]) / total if total > 0 else 0.5
    return s0, sd, p_more


def _log_likelihood(s: np.ndarray, at_mode: np.ndarray, per_s: np.ndarray, s0: float,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Bradley-Terry log-likelihood (S,) at points s (S,) of a path whose margins are at_mode + (s - s0) per_s
    (N,) each (each row's term times its weight (N,), when given), and its slope d/ds (S,)."""
    margins = at_mode[None, :] + (s - s0)[:, None] * per_s[None, :]  # (S, N)
    small = np.exp(-np.abs(margins))
    # log sigmoid(m) = -(max(-m, 0) + log1p(exp(-|m|))), ~5x faster here than np.logaddexp
    terms = -(np.maximum(-margins, 0.0) + np.log1p(small))  # (S, N)
    slopes = np.where(margins >= 0, small, 1.0) / (1.0 + small) * per_s[None, :]  # sigmoid(-m) b
    if weights is not None:
        terms, slopes = terms * weights, slopes * weights
    return terms.sum(axis=1), slopes.sum(axis=1)


def _read_likelihood(nodes: np.ndarray, at_mode: np.ndarray, per_s: np.ndarray, s0: float,
                     log_prior: Callable[[np.ndarray], np.ndarray],
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The likelihood along a path read at sorted `nodes` (S,) and wherever its cubic Hermite interpolant
    between them is not yet within CHECK_TOL of it: the midpoint of each interval that may hold posterior
    mass is read too and kept, and an interval whose midpoint missed is halved again (at most
    REFINE_ROUNDS times). Where another feature's cliff crosses the path, the density along it can be
    far narrower than the Laplace sd the nodes are spaced by (a feature moved in a fifth of 30
    comparisons beside one they all moved one way: 0.111 read off 33 fixed points, 0.169 in full, 0.194
    by sampling). For a Gaussian-like path the first check passes (a cubic is exact for a quadratic), so
    a noisy user's path costs ~37 reads. Returns (nodes, log-likelihood, slope), (S',) each."""
    log_lik, slope = _log_likelihood(nodes, at_mode, per_s, s0, weights)
    open_ = np.ones(len(nodes) - 1, bool)  # (S - 1,) intervals whose interpolant is not yet checked
    for _ in range(REFINE_ROUNDS):
        mid = (nodes[:-1] + nodes[1:]) / 2
        guess = _hermite(nodes, log_lik, slope, mid)
        ends = log_lik + log_prior(nodes)
        top = max(ends.max(), (guess + log_prior(mid)).max())
        # an interval that may hold mass: either end or the interpolant's midpoint within MASS_NATS of the top
        held = np.maximum(np.maximum(ends[:-1], ends[1:]), guess + log_prior(mid)) > top - MASS_NATS
        ask = np.flatnonzero(open_ & held & (mid > nodes[:-1]) & (mid < nodes[1:]))  # (an interval too narrow to halve: done)
        if not len(ask):
            break
        read, read_slope = _log_likelihood(mid[ask], at_mode, per_s, s0, weights)
        order = np.argsort(np.concatenate([nodes, mid[ask]]), kind="stable")
        nodes = np.concatenate([nodes, mid[ask]])[order]
        log_lik, slope = np.concatenate([log_lik, read])[order], np.concatenate([slope, read_slope])[order]
        halved = np.zeros(len(open_), bool)
        halved[ask] = True
        open_[ask] = np.abs(read - guess[ask]) > CHECK_TOL  # both halves of one whose midpoint missed stay open
        open_ = np.repeat(open_, np.where(halved, 2, 1))
    return nodes, log_lik, slope


def _hermite(x: np.ndarray, y: np.ndarray, slope: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The cubic Hermite interpolant through values y and slopes at sorted points x (K,), read at `at`
    (within [x[0], x[-1]])."""
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    u = (at - x[k]) / h
    return ((2 * u**3 - 3 * u**2 + 1) * y[k] + (u**3 - 2 * u**2 + u) * h * slope[k]
            + (3 * u**2 - 2 * u**3) * y[k + 1] + (u**3 - u**2) * h * slope[k + 1])


def direction_probability(design: np.ndarray, mean: np.ndarray, cov: np.ndarray, prior_mean: np.ndarray,
                          prior_precision: np.ndarray, v: np.ndarray, tied: np.ndarray | None = None) -> tuple[float, float, float]:
    """`path_probabilities` along one direction v (D,): (mode of s, Laplace sd of s, posterior
    probability that s > 0)."""
    s0, sd, p_more = path_probabilities(design, mean, cov, prior_mean, prior_precision, np.asarray(v, np.float64)[:, None], tied)
    return float(s0[0]), float(sd[0]), float(p_more[0])


def times_moved(rows: np.ndarray, names: Sequence[str], feature_names: Sequence[str]) -> dict[str, int]:
    """Of each named feature (`feature_names`, of the (M, D) `rows`' columns `names`): how many of the rows (answers'
    feature differences: comparisons' or ties') moved it, by more than MIN_MOVED. Raises ValueError for a feature not
    among `names`."""
    cols = [list(names).index(f) for f in feature_names]
    moved = (np.abs(rows[:, cols]) > MIN_MOVED).sum(axis=0) if len(rows) else np.zeros(len(cols), int)  # (F,)
    return {f: int(k) for f, k in zip(feature_names, moved, strict=True)}


def feature_signs(design: np.ndarray, names: Sequence[str], feature_names: Sequence[str], mean: np.ndarray, cov: np.ndarray,
                  prior_mean: np.ndarray, prior_precision: np.ndarray, only: Sequence[str] | None = None,
                  grouped: Collection[str] = (), tied: np.ndarray | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """Of each named feature (`feature_names`, of the design's (N, D) columns `names`; `only` those): the
    posterior probability that the user's weight on it is positive, and how many comparisons moved it (and
    ties, `tied` (M, D): the posterior was fitted on them too, `path_probabilities`).
    The probability is integrated along the feature's axis as a group's is along its direction: for a user
    whose comparisons all agree, the Laplace z of a feature stays near 1 however many there are (the
    likelihood is flat on the chosen side). Under a diagonal prior (the model's own) a feature no
    comparison moved keeps its Gaussian prior as its posterior, whose Phi(mean / sd) is exact: it is not
    integrated (under a pooled, full prior it is: the prior's correlations move it). Nor is one of a
    collinear group (`grouped`): its axis's path crosses the group's cliff, which a conditional mean cannot
    follow (two features in proportion, 400 agreeing comparisons: the path says 0.70 where sampling says
    0.79, and with one moving 5x the other 1.0 where sampling says 0.98): it keeps the Laplace Phi(mean / sd),
    which stayed below sampling in every such case measured, and the group's own probability says what the
    comparisons settle (benchmarks/joint_direction.py --features, BENCHMARKS.md)."""
    wanted = list(feature_names if only is None else only)
    cols = [list(names).index(f) for f in wanted]
    answers = design if tied is None else np.concatenate([design, tied])  # (N + M, D)
    moved = (np.abs(answers[:, cols]) > MIN_MOVED).sum(axis=0) if len(answers) else np.zeros(len(cols), int)  # (F,)
    sd = np.sqrt(np.maximum(np.diag(cov)[cols], 0.0))
    p_more = np.array([_PHI(mean[c] / s) if s > 0 else float(mean[c] > 0) for c, s in zip(cols, sd, strict=True)])
    integrate = (moved > 0 if np.ndim(prior_precision) == 1 else np.ones(len(cols), bool)) & ~np.isin(wanted, list(grouped))
    if len(answers) and integrate.any():
        axes = np.zeros((len(names), int(integrate.sum())))
        axes[[c for c, k in zip(cols, integrate, strict=True) if k], np.arange(axes.shape[1])] = 1.0
        p_more[integrate] = path_probabilities(design, mean, cov, prior_mean, prior_precision, axes, tied)[2]
    return ({f: float(p) for f, p in zip(wanted, p_more, strict=True)},
            {f: int(k) for f, k in zip(wanted, moved, strict=True)})


def joint_beliefs(design: np.ndarray, names: Sequence[str], feature_names: Sequence[str], mean: np.ndarray,
                  cov: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray,
                  tied: np.ndarray | None = None) -> list[CollinearFeatures]:
    """The collinear groups of the named features in a user's design (N, D) and ties (M, D) (columns `names`,
    the named ones `feature_names`), each with the posterior along its joint direction."""
    answers = design if tied is None else np.concatenate([design, tied])  # (N + M, D)
    if not len(answers):
        return []
    cols = [list(names).index(f) for f in feature_names]
    out = []
    for members, v_group, cosine in collinear_groups(answers[:, cols]):
        v = np.zeros(len(names))
        v[[cols[i] for i in members]] = v_group
        s0, sd, p_more = direction_probability(design, mean, cov, prior_mean, prior_precision, v, tied)
        moved_in = int((np.abs(answers[:, [cols[i] for i in members]]) > MIN_MOVED).any(axis=1).sum())
        out.append(CollinearFeatures(features=[feature_names[i] for i in members], direction=[round(float(x), 6) for x in v_group],
                                     cosine=round(cosine, 4), mean=s0, sd=sd, p_more=p_more, moved_in=moved_in))
    return out
