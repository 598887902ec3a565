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

Shapes: N comparisons, D coefficients, F named features, G features in a group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pluralign.data.record import Base

COLLINEAR_COSINE = 0.9  # |cos| between two features' difference columns at which the data cannot separate them
GRID = 101  # points of each of the numerical integral's two grids over s (2 * GRID + 1 in all)
MIN_MOVED = 1e-9  # a feature whose differences are all below this never moved: it is in no group


class CollinearFeatures(Base, kw_only=True):
    """Named features a user's comparisons moved together, and the user's posterior along them jointly."""

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


def direction_probability(design: np.ndarray, mean: np.ndarray, cov: np.ndarray, prior_mean: np.ndarray,
                          prior_precision: np.ndarray, v: np.ndarray) -> tuple[float, float, float]:
    """The posterior of s = v . beta for a Bayesian logistic (Bradley-Terry) model: design (N, D),
    its Laplace posterior mode (D,) and covariance (D, D), its Gaussian prior's mean (D,) and
    precision (D,) or (D, D), and a direction v (D,). Returns (mode of s, Laplace sd of s, posterior
    probability that s > 0), the last integrated along the conditional-mean path (module docstring)."""
    prec = np.diag(prior_precision) if np.ndim(prior_precision) == 1 else np.asarray(prior_precision)
    var = float(v @ cov @ v)
    s0 = float(v @ mean)
    if var <= 0:
        return s0, 0.0, float(s0 > 0)
    step = cov @ v / var  # (D,) how the conditional mean moves per unit of s
    sd = np.sqrt(var)
    prior_sd = float(np.sqrt(v @ np.linalg.solve(prec, v)))  # the prior's own spread of s: the right side's long tail
    # fine around the mode (the Laplace spread), coarse out to the prior's tails, and 0 itself: the
    # probability is cut there, and a 400-comparison posterior can be narrower than the coarse steps
    half = 10.0 * max(sd, prior_sd) + abs(s0)
    s = np.unique(np.concatenate([np.linspace(-half, half, GRID), s0 + np.linspace(-10 * sd, 10 * sd, GRID), [0.0]]))  # (S,)
    at_mode, per_s = design @ mean, design @ step  # (N,) each
    margins = at_mode[None, :] + (s - s0)[:, None] * per_s[None, :]  # (S, N)
    # log sigmoid(m) = -(max(-m, 0) + log1p(exp(-|m|))), ~5x faster here than np.logaddexp
    log_lik = -(np.maximum(-margins, 0.0) + np.log1p(np.exp(-np.abs(margins)))).sum(axis=1)  # (S,)
    off = mean - prior_mean  # the prior's quadratic along the path, in t = s - s0: off + t step
    t = s - s0
    log_prior = -0.5 * (off @ prec @ off + 2 * t * (off @ prec @ step) + t**2 * (step @ prec @ step))
    log_post = log_lik + log_prior
    density = np.exp(log_post - log_post.max())
    total = np.trapezoid(density, s)
    right = s >= 0
    more = np.trapezoid(density[right], s[right])
    return s0, float(sd), float(more / total) if total > 0 else 0.5


def joint_beliefs(design: np.ndarray, names: Sequence[str], feature_names: Sequence[str], mean: np.ndarray,
                  cov: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray) -> list[CollinearFeatures]:
    """The collinear groups of the named features in a user's design (N, D) (columns `names`, the
    named ones `feature_names`), each with the posterior along its joint direction."""
    if not len(design):
        return []
    cols = [list(names).index(f) for f in feature_names]
    out = []
    for members, v_group, cosine in collinear_groups(design[:, cols]):
        v = np.zeros(len(names))
        v[[cols[i] for i in members]] = v_group
        s0, sd, p_more = direction_probability(design, mean, cov, prior_mean, prior_precision, v)
        moved_in = int((np.abs(design[:, [cols[i] for i in members]]) > MIN_MOVED).any(axis=1).sum())
        out.append(CollinearFeatures(features=[feature_names[i] for i in members], direction=[round(float(x), 6) for x in v_group],
                                     cosine=round(cosine, 4), mean=s0, sd=sd, p_more=p_more, moved_in=moved_in))
    return out
