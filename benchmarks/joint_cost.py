"""What the joint direction (`pluralign.user.collinear.joint_beliefs`) adds to a refit, beside the
posterior fit itself (`fit_posterior`), for users of 400 to 10,000 comparisons: D = 76 coefficients
(1 + K 4 + 7 named + 64 latent), one group of three named features that moved together, 30% of the
choices flipped (a noisy user). Medians of 7, milliseconds, one thread. A refit also
integrates each named feature's own sign (`feature_signs`, all 7 moved here): its column, and their sum.

    OMP_NUM_THREADS=1 python benchmarks/joint_cost.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from pluralign.user.collinear import joint_beliefs

try:  # the tree before session 44 has none
    from pluralign.user.collinear import feature_signs
except ImportError:
    feature_signs = None
from pluralign.user.model import fit_posterior


def main() -> None:
    print("| comparisons | fit_posterior (ms) | joint_beliefs (ms) | feature_signs (ms) | all (ms) | groups |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for n in (400, 2000, 10_000):
        d = 76
        design = rng.normal(size=(n, d)) * 0.3
        size = rng.uniform(0.8, 1.2, n) * 1.4
        design[:, 5], design[:, 9] = -size, -size * rng.uniform(0.9, 1.1, n)
        design[:, 6] = design[:, 5] * 0.9 + rng.normal(size=n) * 0.1
        design *= np.where(rng.random(n) < 0.3, -1, 1)[:, None]
        names = [f"c{i}" for i in range(d)]
        prior_mean, prior_precision = np.zeros(d), np.full(d, 4.0)
        fits, joints, signs, alls = [], [], [], []
        for _ in range(7):
            t = time.perf_counter()
            mean, cov = fit_posterior(design, prior_mean, prior_precision)
            fits.append(time.perf_counter() - t)
            t = time.perf_counter()
            groups = joint_beliefs(design, names, names[5:12], mean, cov, prior_mean, prior_precision)
            joints.append(time.perf_counter() - t)
            t = time.perf_counter()
            if feature_signs is not None:
                feature_signs(design, names, names[5:12], mean, cov, prior_mean, prior_precision)
            signs.append(time.perf_counter() - t)
            alls.append(fits[-1] + joints[-1] + signs[-1])
        ms = [statistics.median(x) * 1e3 for x in (fits, joints, signs, alls)]
        print(f"| {n} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | {ms[3]:.1f} | {len(groups)} |")


if __name__ == "__main__":
    main()
