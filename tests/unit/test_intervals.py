"""The shared interval helper of the benchmarks: mean over seeds, spread, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.intervals import clears, summarize, summarize_unpaired


def test_mean_spread_and_a_bootstrap_interval_around_the_mean():
    rng = np.random.default_rng(0)
    values = rng.choice([0.0, 0.5, 1.0], size=(3, 48), p=[0.2, 0.1, 0.7])
    out = summarize(values, seeds=[0, 1, 2])
    per_seed = values.mean(1)
    assert out["mean"] == pytest.approx(per_seed.mean())
    assert out["sd_over_seeds"] == pytest.approx(per_seed.std(ddof=1))
    assert out["per_seed"] == {str(s): pytest.approx(v) for s, v in zip([0, 1, 2], per_seed, strict=True)}
    lo, hi = out["interval"]
    assert lo < out["mean"] < hi
    assert 0.05 < hi - lo < 0.3  # 3 x 48 questions: about +-0.06 to +-0.1 on a win rate
    # the envelope of the per-seed intervals is at least as wide as the pooled one
    assert out["seed_interval"][0] <= lo and out["seed_interval"][1] >= hi
    assert out["units"] == 48 and out["seeds"] == [0, 1, 2]


def test_a_seed_that_fails_shows_in_the_seed_interval():
    good = np.ones((2, 40))
    bad = np.r_[np.ones(10), np.zeros(30)][None]
    out = summarize(np.vstack([good, bad]), seeds=[0, 1, 2])
    assert clears([out["mean"], out["mean"]], 0.5)
    assert not clears(out["seed_interval"], 0.5)  # seed 2 alone sits near 0.25
    assert out["seed_interval"][1] == 1.0


def test_identical_values_give_a_point_interval_and_one_seed_no_spread():
    out = summarize([[1.0] * 12], seeds=[7])
    assert out["interval"] == [1.0, 1.0] == out["seed_interval"]
    assert out["sd_over_seeds"] == 0.0


def test_more_units_narrow_the_interval():
    rng = np.random.default_rng(1)
    small = summarize(rng.integers(0, 2, size=(1, 24)).astype(float), seeds=[0])
    large = summarize(rng.integers(0, 2, size=(1, 480)).astype(float), seeds=[0])
    width = lambda s: s["interval"][1] - s["interval"][0]  # noqa: E731
    assert width(large) < width(small) / 2


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="seeds"):
        summarize([[1.0, 0.0]], seeds=[0, 1])
    with pytest.raises(ValueError, match="finite"):
        summarize([[1.0, float("nan")]], seeds=[0])
    assert clears([-0.04, 0.02], -0.05) and not clears([-0.06, 0.02], -0.05)
    assert clears([0.1, 0.19], 0.2, above=False)


def test_seeds_with_their_own_units_resample_each_seed_on_its_own():
    rng = np.random.default_rng(2)
    seeds = [rng.integers(0, 2, size=n).astype(float) for n in (20, 18, 20)]
    out = summarize_unpaired(seeds, seeds=[0, 1, 2])
    assert out["mean"] == pytest.approx(np.mean([x.mean() for x in seeds]))
    assert out["units"] == [20, 18, 20]
    lo, hi = out["interval"]
    assert lo < out["mean"] < hi and hi - lo < out["seed_interval"][1] - out["seed_interval"][0]
    # the same units in every seed: close to the paired interval of the same numbers
    same = [seeds[0]] * 3
    assert summarize_unpaired(same, [0, 1, 2])["mean"] == pytest.approx(summarize(np.vstack(same), [0, 1, 2])["mean"])
    with pytest.raises(ValueError, match="per seed"):
        summarize_unpaired([[1.0, 0.0], []], seeds=[0, 1])
    with pytest.raises(ValueError, match="2 units"):
        summarize_unpaired([[1.0, 0.0], [0.5]], seeds=[0, 1])
    assert summarize_unpaired([[1.0, 1.0], [1.0]], seeds=[0, 1])["interval"] == [1.0, 1.0]
