"""Mean, spread over seeds and a bootstrap interval for a benchmark figure measured on several seeds.

A headline figure is a mean over units (held-out questions, users) and over seeds. `summarize`
takes the per-unit values of each seed, shape (S seeds, N units), the same N units in every seed
(the same held-out questions, the same users), and returns:

- `mean`: the mean over seeds of each seed's mean over units;
- `per_seed`: each seed's mean over units, and `sd_over_seeds` their sample standard deviation
  (ddof 1; 0.0 with one seed);
- `interval`: a `confidence` percentile bootstrap interval of `mean`, resampling units with
  replacement, the same units in every seed (scipy.stats.bootstrap with `paired=True`): the
  uncertainty from which questions or users were drawn, for the seeds that ran;
- `seed_interval`: [min over seeds of the per-seed interval's low end, max of its high end]: the
  envelope of every run's own interval (with one seed it is the interval itself).

When each seed draws its own units (FSPO's unseen users follow the seed's population split), the
units cannot be resampled together: `summarize_unpaired` takes one 1-D array per seed, of any
lengths, and resamples each seed's units on their own (a stratified bootstrap, scipy's unpaired
form); the rest of the summary is the same.

A bar "at the lower end of its interval" is checked with `clears` on `interval`, and `per_seed`
shows a seed that falls short on its own (benchmarks/bars.py requires both). `seed_interval` is
stricter still: with 48 questions, one lost question in a seed already puts its own interval's low
end near -6 points. Win-rate differences take values in
{-1, -0.5, 0, 0.5, 1}: when every unit has the same value the bootstrap distribution is a point and
the interval is [value, value] (scipy would warn and return nan).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


def _interval(samples: Sequence[np.ndarray], paired: bool, confidence: float, resamples: int, seed: int) -> list[float]:
    """Bootstrap interval of the mean over seeds of each seed's mean over units. `samples` holds one
    1-D array per seed: `paired` resamples the same unit positions in every seed (equal lengths);
    otherwise each seed's units are resampled on their own."""
    values = np.concatenate(samples)
    if np.all(values == values[0]):
        return [float(values[0])] * 2
    if min(len(x) for x in samples) < 2:
        raise ValueError("a bootstrap interval needs at least 2 units (questions or users) per seed")

    def statistic(*drawn, axis=-1):
        return np.mean([d.mean(axis=axis) for d in drawn], axis=0)

    result = stats.bootstrap(
        tuple(samples), statistic, paired=paired, vectorized=True, confidence_level=confidence,
        n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def _summary(samples: list[np.ndarray], seeds: Sequence[int], paired: bool, confidence: float, resamples: int, bootstrap_seed: int) -> dict:
    if not all(np.all(np.isfinite(x)) for x in samples):
        raise ValueError("values must be finite")
    per_seed = np.array([x.mean() for x in samples])
    seed_bounds = [_interval([x], paired, confidence, resamples, bootstrap_seed) for x in samples]
    return {
        "mean": float(per_seed.mean()),
        "sd_over_seeds": float(per_seed.std(ddof=1)) if len(seeds) > 1 else 0.0,
        "per_seed": {str(s): float(v) for s, v in zip(seeds, per_seed, strict=True)},
        "interval": _interval(samples, paired, confidence, resamples, bootstrap_seed),
        "seed_interval": [min(b[0] for b in seed_bounds), max(b[1] for b in seed_bounds)],
        "confidence": confidence,
        "seeds": list(seeds),
        "units": len(samples[0]) if paired else [len(x) for x in samples],
    }


def summarize(values: Sequence[Sequence[float]] | np.ndarray, seeds: Sequence[int], confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, bootstrap_seed: int = 0) -> dict:
    """Summary of per-unit `values` (S, N) measured on `seeds` (S,): see the module docstring.

    Raises ValueError when the shape does not match the seeds, a row is empty, or a value is not
    finite."""
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] != len(seeds) or rows.shape[1] == 0:
        raise ValueError(f"values must be (seeds, units) with {len(seeds)} seeds and at least one unit, got shape {rows.shape}")
    return _summary(list(rows), seeds, True, confidence, resamples, bootstrap_seed)


def summarize_unpaired(values: Sequence[Sequence[float]], seeds: Sequence[int], confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES, bootstrap_seed: int = 0) -> dict:
    """`summarize` for seeds that each measured their own units: `values` holds one sequence of
    per-unit values per seed (lengths may differ). `units` is then the list of each seed's count.

    Raises ValueError when the number of sequences does not match the seeds, one is empty or has a
    single unit, or a value is not finite."""
    samples = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if len(samples) != len(seeds) or any(len(x) == 0 for x in samples):
        raise ValueError(f"values must hold one non-empty sequence per seed ({len(seeds)} seeds), got {[len(x) for x in samples]}")
    return _summary(samples, seeds, False, confidence, resamples, bootstrap_seed)


def clears(interval: Sequence[float], bar: float, above: bool = True) -> bool:
    """True when the whole interval lies at or above `bar` (or at or below it with above=False)."""
    return interval[0] >= bar if above else interval[1] <= bar
