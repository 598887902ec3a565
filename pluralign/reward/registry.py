"""Preference models by name, as `pluralign eval --model NAME` knows them."""

from __future__ import annotations

from collections.abc import Callable

from pluralign.reward.base import PreferenceModel
from pluralign.reward.bt import BTConfig, PerUserBT, SingleBT
from pluralign.reward.em import EMConfig, EMMixture


def _pal(variant: str) -> Callable[[int | None, int], PreferenceModel]:
    def build(k: int | None, seed: int) -> PreferenceModel:
        from pluralign.reward.pal import PALConfig, PALPreference, PALTrainConfig

        return PALPreference(PALConfig(variant=variant, k=k or 4), PALTrainConfig(seed=seed))

    return build


def _residual(variant: str) -> Callable[[int | None, int], PreferenceModel]:
    def build(k: int | None, seed: int) -> PreferenceModel:
        from pluralign.user.preference import ResidualPreference

        return ResidualPreference(_pal(variant)(k, seed))

    return build


# name -> factory(k, seed); k is the number of mixture components where a model has them.
MODELS: dict[str, Callable[[int | None, int], PreferenceModel]] = {
    "bt": lambda k, seed: SingleBT(BTConfig(seed=seed)),
    "per-user-bt": lambda k, seed: PerUserBT(BTConfig(seed=seed)),
    "pal-a": _pal("a"),
    "pal-b": _pal("b"),
    "em": lambda k, seed: EMMixture(EMConfig(k=k or 2, seed=seed)),
    # the user model: PAL's prototypes plus a per-user Bayesian residual (pluralign.user)
    "pal-a+residual": _residual("a"),
    "pal-b+residual": _residual("b"),
}


def build_model(name: str, k: int | None = None, seed: int = 0) -> PreferenceModel:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name](k, seed)
