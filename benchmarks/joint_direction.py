"""The summary's joint probability (pluralign.user.collinear.direction_probability) against importance
sampling of the same posterior, and against the Laplace Gaussian's Phi(z) the per-feature summary of releases before
session 44 read. `--features`: each feature's own probability (`feature_signs`, integrated along its
axis) the same way, for a feature every comparison moved one way and a noisy one beside it, and for
1-3 comparisons; then two features of a collinear group, each alone (the summary keeps their Laplace one).
`--reads`: the path's likelihood as the summary reads it (`path_probabilities`: first points, then wherever
their interpolant misses it) against the same path read in full, on random designs beside a separable feature.

Two named features that move together in every comparison (always chosen "less", or by a coin), the other
coordinates random, the service's prior scales (features sd 5, the rest sd 0.5). Importance sampling
draws 200,000 points from a multivariate t (4 degrees of freedom) around the Laplace fit, its
covariance widened 4x, weighted by the true posterior; its effective sample size is printed.

    OMP_NUM_THREADS=1 python benchmarks/joint_direction.py [--features | --reads]
"""

from __future__ import annotations

import sys
from statistics import NormalDist

import numpy as np

from pluralign.user.collinear import direction_probability, feature_signs, path_probabilities
from pluralign.user.model import fit_posterior


def sampled(design, prior_mean, prior_precision, mean, cov, v, n=200_000, df=4, seed=0) -> tuple[float, float]:
    """(posterior P(v . beta < 0) by importance sampling, effective sample size)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(4.0 * cov)
    draws = mean + (rng.standard_normal((n, len(mean))) @ chol.T) / np.sqrt(rng.chisquare(df, n) / df)[:, None]
    margins = draws @ design.T  # (n, N)
    log_lik = -(np.maximum(-margins, 0) + np.log1p(np.exp(-np.abs(margins)))).sum(1)
    log_prior = -0.5 * (((draws - prior_mean) ** 2) * prior_precision).sum(1)
    log_proposal = -0.5 * (df + len(mean)) * np.log1p((np.linalg.solve(chol, (draws - mean).T) ** 2).sum(0) / df)
    w = np.exp((log := log_lik + log_prior - log_proposal) - log.max())
    return float((w * (draws @ v < 0)).sum() / w.sum()), float(w.sum() ** 2 / (w**2).sum())


def read_in_full(design, mean, cov, prior_mean, prior_precision, v, points=20_001) -> float:
    """P(v . beta > 0) along the conditional-mean path (as `path_probabilities`) with the likelihood read at every
    one of ~2 x `points` points, nothing interpolated; a diagonal prior (precision (D,))."""
    var = v @ cov @ v
    step, s0, sd = cov @ v / var, v @ mean, np.sqrt(var)
    half = 10 * max(sd, np.sqrt(v @ (v / prior_precision))) + abs(s0)
    s = np.unique(np.r_[np.linspace(-half, half, points), s0 + np.linspace(-10 * sd, 10 * sd, points), 0.0])
    margins = design @ mean + (s - s0)[:, None] * (design @ step)  # (S, N)
    betas = mean + (s - s0)[:, None] * step  # (S, D)
    log_post = -np.logaddexp(0.0, -margins).sum(1) - 0.5 * (((betas - prior_mean) ** 2) * prior_precision).sum(1)
    density = np.exp(log_post - log_post.max())
    return float(np.trapezoid(density[s >= 0], s[s >= 0]) / np.trapezoid(density, s))


def reads(designs: int = 40) -> None:
    """Feature 0 chosen "less" in every comparison (or 5-50% flipped), 1 random, 2 moved in a fifth of them, each
    moving `moves` times as much: |path_probabilities - read_in_full| over features 0-2, worst of `designs` designs."""
    print("| feature moves | designs | worst |checked - in full| | its comparisons | checked | in full |")
    print("|---|---|---|---|---|---|")
    for moves in (1.0, 2.0, 3.0, 5.0):
        worst = (0.0, 0, 0.0, 0.0)
        for seed in range(designs):
            rng = np.random.default_rng(seed)
            n, d = int(rng.choice([1, 2, 3, 5, 10, 30, 100, 400])), 12
            design = rng.normal(size=(n, d)) * 0.5
            design[:, 0] = -rng.uniform(0.5, 1.5, n) * moves
            if rng.random() < 0.3:
                design[:, 0] *= np.where(rng.random(n) < rng.uniform(0.05, 0.5), -1, 1)
            design[:, 1] = rng.normal(size=n) * moves
            design[:, 2] = np.where(rng.random(n) < 0.2, rng.normal(size=n) * moves * 3, 0)
            prior_mean, prior_precision = np.zeros(d), np.r_[np.full(5, 1 / 25), np.full(d - 5, 4.0)]
            mean, cov = fit_posterior(design, prior_mean, prior_precision)
            for i in np.flatnonzero(np.abs(design[:, :3]).max(0) > 0):
                checked = path_probabilities(design, mean, cov, prior_mean, prior_precision, np.eye(d)[:, [i]])[2][0]
                full = read_in_full(design, mean, cov, prior_mean, prior_precision, np.eye(d)[i], points=6_001)
                worst = max(worst, (abs(checked - full), n, checked, full))
        print(f"| x{moves:g} | {designs} | {worst[0]:.2e} | {worst[1]} | {worst[2]:.4f} | {worst[3]:.4f} |", flush=True)


def main() -> None:
    print("| comparisons | coefficients | feature step | choices | Laplace Phi(z) | path (summary) | importance sampling (ESS) |")
    print("|---|---|---|---|---|---|---|")
    for n, d, step, coin in ((1, 10, 1.4, False), (8, 10, 1.4, False), (40, 10, 1.4, False), (8, 20, 1.4, False), (400, 10, 8.0, False),
                             (40, 10, 1.4, True), (400, 10, 8.0, True)):
        rng = np.random.default_rng(n + d)
        design = rng.normal(size=(n, d)) * 0.5
        size = rng.uniform(0.8, 1.2, n) * step
        design[:, 0], design[:, 1] = -size, -size * rng.uniform(0.9, 1.1, n)
        if coin:  # the same pairs, the winner drawn at random: chosen-minus-rejected flips sign
            design *= np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]
        prior_mean, prior_precision = np.zeros(d), np.r_[np.full(2, 1 / 25), np.full(d - 2, 4.0)]
        mean, cov = fit_posterior(design, prior_mean, prior_precision)
        v = np.r_[np.full(2, 2**-0.5), np.zeros(d - 2)]
        s0, sd, p_more = direction_probability(design, mean, cov, prior_mean, prior_precision, v)
        p_is, ess = sampled(design, prior_mean, prior_precision, mean, cov, v)
        print(f"| {n} | {d} | {step} | {'coin' if coin else 'shorter'} | {NormalDist().cdf(-s0 / sd):.4f} | {1 - p_more:.6f} | {p_is:.6f} ({ess:.0f}) |")


def features() -> None:
    """Feature 0 (every comparison moves it one way, or by a coin) and feature 2 (random, beside it)."""
    print("| comparisons | choices | feature | Laplace Phi(z) | along its axis (summary) | importance sampling (ESS) |")
    print("|---|---|---|---|---|---|")
    for n, coin in ((1, False), (2, False), (3, False), (8, False), (12, False), (40, False), (400, False), (40, True), (400, True)):
        rng = np.random.default_rng(n + 10)
        d = 10
        design = rng.normal(size=(n, d)) * 0.5
        design[:, 0] = -rng.uniform(0.8, 1.2, n) * 1.4
        design[:, 2] = rng.normal(size=n)
        if coin:
            design *= np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]
        prior_mean, prior_precision = np.zeros(d), np.r_[np.full(3, 1 / 25), np.full(d - 3, 4.0)]
        mean, cov = fit_posterior(design, prior_mean, prior_precision)
        names = [f"c{i}" for i in range(d)]
        p_more, _ = feature_signs(design, names, names[:3], mean, cov, prior_mean, prior_precision)
        for i in (0, 2):
            p_is, ess = sampled(design, prior_mean, prior_precision, mean, cov, np.eye(d)[i])
            laplace = NormalDist().cdf(-mean[i] / np.sqrt(cov[i, i]))
            print(f"| {n} | {'coin' if coin else 'less'} | {i} | {laplace:.4f} | {1 - p_more[names[i]]:.6f} | {p_is:.6f} ({ess:.0f}) |")


def grouped_features() -> None:
    """Features 0 and 1 moved in proportion in every comparison (1 moving `scale` times 0), always "less": each
    one's own probability along its axis (which the summary does not use for them) against sampling."""
    print("| comparisons | feature 1 moves | feature | Laplace Phi(z) (summary) | along its axis (not used) | importance sampling (ESS) |")
    print("|---|---|---|---|---|---|")
    for n, step, scale in ((8, 1.4, 1.0), (40, 1.4, 1.0), (400, 8.0, 1.0), (40, 1.4, 5.0), (400, 1.4, 5.0)):
        rng = np.random.default_rng(n + 10)
        d = 10
        design = rng.normal(size=(n, d)) * 0.5
        size = rng.uniform(0.8, 1.2, n) * step
        design[:, 0], design[:, 1] = -size, -size * rng.uniform(0.9, 1.1, n) * scale
        prior_mean, prior_precision = np.zeros(d), np.r_[np.full(2, 1 / 25), np.full(d - 2, 4.0)]
        mean, cov = fit_posterior(design, prior_mean, prior_precision)
        names = [f"c{i}" for i in range(d)]
        p_more, _ = feature_signs(design, names, names[:2], mean, cov, prior_mean, prior_precision)  # not told they are a group
        for i in (0, 1):
            p_is, ess = sampled(design, prior_mean, prior_precision, mean, cov, np.eye(d)[i])
            laplace = NormalDist().cdf(-mean[i] / np.sqrt(cov[i, i]))
            print(f"| {n} | {scale}x | {i} | {laplace:.4f} | {1 - p_more[names[i]]:.6f} | {p_is:.6f} ({ess:.0f}) |")


if __name__ == "__main__":
    if "--reads" in sys.argv[1:]:
        reads()
    elif "--features" in sys.argv[1:]:
        features()
        grouped_features()
    else:
        main()
