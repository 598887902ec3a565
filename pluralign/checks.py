"""Checks of a config's numbers (counts, rates, bounds), each a ValueError naming the config and the field.

Pure Python and numpy: the fairness audit checks its config with them in a process that never imports torch
(`pluralign.reward.inputs`, which re-exports them, checks tensors as well)."""

from __future__ import annotations

import math

import numpy as np


def whole(owner: str, minimum: int, **fields) -> None:
    """ValueError naming the first of `fields` (a config's counts: K, widths, epochs, steps, seeds) that
    is not a whole number >= `minimum` (1.5, True, NaN or "2" would otherwise be kept and fail later,
    inside range() or a layer's constructor)."""
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise ValueError(f"{owner}: `{name}` must be a whole number >= {minimum}, got {value!r}")


SEED_MAX = 2**32 - 1  # numpy's RandomState and sklearn's `random_state` take seeds in [0, 2**32 - 1]


def seed_in_range(owner: str, **fields) -> None:
    """ValueError naming the first of `fields` (seeds that reach sklearn's `random_state`) that is not a whole number in
    [0, 2**32 - 1]: sklearn refuses a larger one naming its own `random_state`, after the model it clusters trained."""
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value <= SEED_MAX:
            raise ValueError(f"{owner}: `{name}` must be a whole number in [0, 2**32 - 1], got {value!r}")


def above_zero(owner: str, **fields) -> None:
    """ValueError naming the first of `fields` (a config's learning rates, temperatures) that is not a
    finite number > 0."""
    for name, value in fields.items():
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{owner}: `{name}` must be a finite number > 0, got {value!r}")


def at_least(owner: str, minimum: float, **fields) -> None:
    """ValueError naming the first of `fields` (a config's) that is not a number >= `minimum`;
    None is allowed only where the caller leaves the field out."""
    for name, value in fields.items():
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < minimum:
            raise ValueError(f"{owner}: `{name}` must be a number >= {minimum:g}, got {value!r}")


def encoder_named(encoder_id) -> str:
    """`encoder_id` itself when it names an encoder (a str with a visible character), as an artifact records it and
    loading checks it; else a ValueError naming `encoder_id`, so that `save_pal` and `EMMixture.save` never write
    None (an artifact their loaders refuse, "Expected `str`, got `null`") or "" (one naming no encoder)."""
    from pluralign.data.text import is_blank  # pure Python

    if not isinstance(encoder_id, str) or is_blank(encoder_id):
        raise ValueError(f"`encoder_id` must name the encoder whose vectors the model reads (a str with a visible "
                         f"character, e.g. encoder.encoder_id), got {encoder_id!r}")
    return encoder_id
