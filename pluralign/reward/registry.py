"""Preference models by name, as `pluralign eval --model NAME` knows them.

For the mixtures (pal-a, pal-b, em), a given K fits that K; without one, K is chosen from the data
by held-out log-likelihood (`pluralign.reward.model_selection`: K = 1, 2, ... on the seen users'
validation pairs, the smallest K within one standard error of the best).

The names cost no import: each model's code (and torch) is imported when it is built, so `pluralign eval` can refuse
an unknown `--model` at once (importing the models would take 5-6 s for a typo's one-line error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluralign.reward.base import PreferenceModel


def _single_bt(k: int | None, seed: int) -> PreferenceModel:
    from pluralign.reward.bt import BTConfig, SingleBT

    return SingleBT(BTConfig(seed=seed))


def _per_user_bt(k: int | None, seed: int) -> PreferenceModel:
    from pluralign.reward.bt import BTConfig, PerUserBT

    return PerUserBT(BTConfig(seed=seed))


def _pal(variant: str) -> Callable[[int | None, int], PreferenceModel]:
    def build(k: int | None, seed: int) -> PreferenceModel:
        from pluralign.reward.model_selection import KSearch, KSelected
        from pluralign.reward.pal import PALConfig, PALPreference, PALTrainConfig

        def at(k: int) -> PALPreference:
            return PALPreference(PALConfig(variant=variant, k=k), PALTrainConfig(seed=seed))

        return at(k) if k else KSelected(f"pal-{variant}", at, KSearch())

    return build


def _residual(variant: str) -> Callable[[int | None, int], PreferenceModel]:
    def build(k: int | None, seed: int) -> PreferenceModel:
        from pluralign.user.preference import ResidualPreference

        return ResidualPreference(_pal(variant)(k, seed))

    return build


def _em(k: int | None, seed: int) -> PreferenceModel:
    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.model_selection import KSearch, KSelected

    def at(k: int) -> EMMixture:
        return EMMixture(EMConfig(k=k, seed=seed))

    return at(k) if k else KSelected("em", at, KSearch())


# name -> factory(k, seed); k is the number of mixture components where a model has them
# (None: chosen from the data).
MODELS: dict[str, Callable[[int | None, int], PreferenceModel]] = {
    "bt": _single_bt,
    "per-user-bt": _per_user_bt,
    "pal-a": _pal("a"),
    "pal-b": _pal("b"),
    "em": _em,
    # the user model: PAL's prototypes plus a per-user Bayesian residual (pluralign.user)
    "pal-a+residual": _residual("a"),
    "pal-b+residual": _residual("b"),
}


WITHOUT_COMPONENTS = frozenset({"bt", "per-user-bt"})  # models of no mixture: a `k` would be ignored


def build_model(name: str, k: int | None = None, seed: int = 0) -> PreferenceModel:
    """A model by name; `k` fixes the mixtures' number of components, None chooses it from the data. Raises
    ValueError for an unknown name, and naming `k` when it is given to a model without components (bt,
    per-user-bt), which would train as if it were not given."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    if k is not None and name in WITHOUT_COMPONENTS:
        raise ValueError(f"`k` ({k}) is a mixture's number of components, and {name} has none (pal-a, pal-b, em and "
                         "their +residual forms have): leave it out")
    return MODELS[name](k, seed)
