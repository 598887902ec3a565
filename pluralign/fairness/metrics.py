"""Small pure metrics over predicted probabilities that the chosen response wins."""

from __future__ import annotations

import numpy as np


def _numbers(p) -> np.ndarray:
    """`p` (a numpy array, a list, or a torch tensor as a model returns it, gradient or not) as float64, its shape kept."""
    if hasattr(p, "detach"):  # a torch tensor; the library does not import torch here for it
        p = p.detach().cpu()
    return np.asarray(p, np.float64)


def _checked(p: np.ndarray, name: str) -> np.ndarray:
    """`p` itself; ValueError naming `name` and the first element (flat index) that is not a number in [0, 1]."""
    flat = p.reshape(-1)
    bad = ~((flat >= 0) & (flat <= 1))  # NaN fails both comparisons
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`{name}` must be probabilities in [0, 1]: element {i} is {flat[i]!r}")
    return p


def probabilities(p, name: str = "p") -> np.ndarray:
    """`p` (a numpy array, a list, or a torch tensor as a model returns it, gradient or not) as a
    float64 array (N,) of probabilities (one number: (1,)); ValueError naming `name` when it has more
    than one dimension (a table of them is not one per comparison, and is not
    flattened) and naming the first element that is not a number in [0, 1] (a NaN would otherwise
    count as a wrong prediction)."""
    p = _numbers(p)
    if p.ndim > 1:
        raise ValueError(f"`{name}` must be one probability per comparison, (N,), got shape {p.shape}")
    return _checked(p.reshape(-1), name)


def credit(p: np.ndarray) -> np.ndarray:
    """Per-comparison accuracy credit: 1 when P(chosen) > 0.5, 0.5 on an exact tie, else 0, per
    element: (N,) -> (N,), a table (U, n) -> (U, n) (one number: (1,)). Raises ValueError when `p`
    holds a value that is not a probability (NaN included)."""
    p = _checked(_numbers(p), "p")
    p = p.reshape(-1) if p.ndim == 0 else p
    return (p > 0.5).astype(np.float64) + 0.5 * (p == 0.5)


def brier_score(p: np.ndarray) -> float | None:
    """Mean squared error of P(chosen wins) against the outcome, which is always "chosen won": mean((1 - p)^2) (Brier
    1950, "Verification of forecasts expressed in terms of probability"), a proper scoring rule: 0 for certainty
    rightly held, 0.25 for 0.5, 1 for certainty wrongly held; unlike accuracy's credit, a prediction near 0.5 on
    either side costs about what 0.5 does. `p`: (N,) probabilities. None when there is nothing to score; ValueError
    as `probabilities` raises it."""
    p = probabilities(p)
    return float(np.mean(np.square(1.0 - p))) if p.size else None


def expected_calibration_error(p: np.ndarray, bins: int = 10) -> float | None:
    """ECE of the predicted winner: |confidence - accuracy| averaged over equal-width confidence bins.

    The outcome is always "chosen won", so confidence is max(p, 1 - p) and a prediction is right when
    p > 0.5. `p`: (N,) probabilities. Returns None when there is nothing to measure. Raises ValueError
    when `p` has more than one dimension, holds a value that is not a probability (NaN included) or
    `bins` is not a whole number >= 1."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"`bins` must be a whole number >= 1, got {bins!r}")
    p = probabilities(p)
    if p.size == 0:
        return None
    confidence = np.maximum(p, 1.0 - p)
    correct = credit(p)
    # confidence lies in [0.5, 1]; bin that range
    which = np.minimum(((confidence - 0.5) * 2 * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=confidence, minlength=bins) - np.bincount(which, weights=correct, minlength=bins))
    return float(gap.sum() / count.sum())


def win_rate(personalized_chosen: np.ndarray) -> float | None:
    """Share of personalized-vs-base comparisons that the personalized response won (None if none):
    `personalized_chosen` (N,) booleans (or 0/1). Raises ValueError for any other value (a
    probability would be cast to a win, NaN included)."""
    if hasattr(personalized_chosen, "detach"):  # a torch tensor
        personalized_chosen = personalized_chosen.detach().cpu()
    values = np.asarray(personalized_chosen).reshape(-1)
    if values.dtype != bool:
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"`personalized_chosen` must be booleans (or 0/1), one per comparison: element {i} is {values[i]!r}")
    personalized_chosen = values.astype(bool)
    return float(personalized_chosen.mean()) if personalized_chosen.size else None


def resampled_means(values: np.ndarray, unit: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster (percentile) bootstrap of a mean over correlated rows (Efron & Tibshirani 1993, ch. 13; Field & Welsh
    2007, "Bootstrapping clustered data"): the units (e.g. users) are drawn with replacement, each bringing all of its
    rows, and the mean of the rows drawn is taken; a single unit's rows are drawn one by one instead (there is no
    spread across units to see). Units alike (the same sum over the same number of rows: one user's comparisons of
    equal credit) are drawn as one kind: how many of each kind a resample holds is multinomial, the same bootstrap in
    resamples x kinds draws rather than resamples x units (per unit, one user's 2 million
    comparisons would take minutes). `values` (N,) numbers, `unit` (N,) each row's unit (any integers). Returns
    (resamples,) float64 means; ValueError when `values` is empty or the two differ in length."""
    values = np.asarray(values, np.float64).reshape(-1)
    unit = np.asarray(unit).reshape(-1)
    if values.size == 0 or values.size != unit.size:
        raise ValueError(f"`values` and `unit` must be non-empty and of one length, got {values.size} and {unit.size}")
    _, which = np.unique(unit, return_inverse=True)
    if which.max() == 0:  # one unit: its rows are the units
        which = np.arange(values.size)
    sums = np.bincount(which, weights=values)  # (U,)
    counts = np.bincount(which).astype(np.float64)  # (U,)
    units = sums.size
    kinds, alike = np.unique(sums + 1j * counts, return_counts=True)  # (K,): sum + 1j count (exact), how many units
    if 4 * kinds.size <= units:  # few kinds: draw how many units of each kind
        drawn = rng.multinomial(units, alike / units, size=resamples).astype(np.float64)  # (resamples, K)
        return (drawn @ kinds.real) / (drawn @ kinds.imag)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // units)  # bounds the (chunk, U) draw's memory on large groups
    for start in range(0, resamples, chunk):
        drawn = rng.integers(0, units, size=(min(chunk, resamples - start), units), dtype=np.int64)  # (b, U)
        means[start : start + drawn.shape[0]] = sums[drawn].sum(1) / counts[drawn].sum(1)
    return means


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> list[float]:
    """[low, high]: the central `level` share of `samples` (B,) (the percentile bootstrap interval). ValueError naming
    `samples` when it holds no number (no resamples drawn) or a NaN or infinity, and `level` when it is not a share in
    (0, 1) (95 for 95%)."""
    _check_level(level)
    values = _numbers(samples).reshape(-1)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"`samples` must be one or more finite numbers (B,), got shape {values.shape}"
                         + ("" if values.size == 0 else " holding NaN or inf"))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [float(low), float(high)]


def _check_level(level: float) -> None:
    """ValueError naming `level` when it is not a share in (0, 1) (95 meant as 95%, 1.0, NaN, a bool)."""
    if isinstance(level, bool | np.bool_) or not isinstance(level, int | float | np.number) or not 0 < level < 1:
        raise ValueError(f"`level` must be a share in (0, 1) (0.95 for 95%), got {level!r}")


def range_half_width(resampled: np.ndarray, estimates: np.ndarray, level: float = 0.95) -> float:
    """Half-width h of simultaneous intervals for every pairwise difference of K statistics (e.g. K groups' accuracies):
    estimate_i - estimate_j +- h holds all K(K-1)/2 true differences at once with probability about `level`, so it still
    holds for a pair picked after looking (the best and the worst), where one pair's own interval is too narrow. The
    single-step max-T bootstrap (Romano & Wolf 2005, "Exact and approximate stepdown methods for multiple hypothesis
    testing"; Westfall & Young 1993): h is the `level` quantile over the resamples of the range, max_k - min_k, of the
    deviations resampled - estimate. `resampled` (K, B): each statistic's B bootstrap resamples, drawn independently;
    `estimates` (K,): the statistics on the data. ValueError when K < 2, B < 1 or the shapes disagree, and naming
    `level` when it is not a share in (0, 1)."""
    _check_level(level)
    resampled = np.asarray(resampled, np.float64)
    estimates = np.asarray(estimates, np.float64).reshape(-1)
    if resampled.ndim != 2 or resampled.shape[0] != estimates.size or estimates.size < 2 or resampled.shape[1] < 1:
        raise ValueError(f"`resampled` must be (K, B) with K >= 2 and B >= 1 and `estimates` (K,), got {resampled.shape} and {estimates.shape}")
    deviations = resampled - estimates[:, None]  # (K, B)
    return float(np.quantile(deviations.max(0) - deviations.min(0), level))
