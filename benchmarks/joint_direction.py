"""The summary's joint probability (pluralign.user.collinear.direction_probability) against importance
sampling of the same posterior, and against the Laplace Gaussian's Phi(z) the per-feature summary reads.

Two named features that move together in every comparison (always chosen "less", or by a coin), the other
coordinates random, the service's prior scales (features sd 5, the rest sd 0.5). Importance sampling
draws 200,000 points from a multivariate t (4 degrees of freedom) around the Laplace fit, its
covariance widened 4x, weighted by the true posterior; its effective sample size is printed.

    OMP_NUM_THREADS=1 python benchmarks/joint_direction.py
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from pluralign.user.collinear import direction_probability
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


def main() -> None:
    print("| comparisons | coefficients | feature step | choices | Laplace Phi(z) | path (summary) | importance sampling (ESS) |")
    print("|---|---|---|---|---|---|---|")
    for n, d, step, coin in ((8, 10, 1.4, False), (40, 10, 1.4, False), (8, 20, 1.4, False), (400, 10, 8.0, False),
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


if __name__ == "__main__":
    main()
