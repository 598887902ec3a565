"""An empirical-Bayes prior for a new user: how a tenant's fitted users actually differ.

The user model's own prior (`ResidualPrior`) treats every named feature alike (sd 5) and every other
coordinate alike (sd 0.5), so the first comparisons a new user is asked are chosen, and fitted, as
if any direction were as likely as any other. A population of users says otherwise: their answers
go together (users who pick the casual answer also tend to pick prose over lists), and some
directions nobody's answers ever moved. Parametric empirical Bayes (Morris, JASA 1983; Efron and
Morris 1975) estimates the prior from the other users' fitted coefficients:

    mean = the mean over users of their posterior means
    cov  = the covariance of those means + spread * diag(the mean of their posterior variances)

The first term is how far apart users are; the second keeps room for what one user's comparisons
left open (without it a direction every user's data left at the prior would be closed to the next
user). The estimate reads each user's posterior under the model's own prior (`UserState.unpooled_*`
when the state was fitted under a pooled prior, else the state itself), so a prior is never
estimated from means it shrank itself (repeated refits would otherwise narrow it every round).

Shapes: D coefficients (`UserModel.names`), U users. Everything is numpy float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pluralign.user.model import UserState

SPREAD = 0.2  # weight of the users' mean posterior variance (chosen in a scratch simulation, before any replay)
RIDGE = 1e-6  # added to the covariance's diagonal, so its inverse exists with fewer users than coefficients


@dataclass(frozen=True)
class PooledPrior:
    """A Gaussian prior on a user's coefficients estimated from `users` other users (of one tenant)."""

    names: tuple[str, ...]  # (D,) the coefficients, `UserModel.names`
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    users: int  # how many users it was estimated from
    spread: float = SPREAD

    @property
    def precision(self) -> np.ndarray:
        """(D, D) the inverse of `cov`."""
        return np.linalg.inv(self.cov)


def unpooled(state: UserState) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), variances (D,)) of a user's posterior under the model's own prior."""
    if state.unpooled_mean:
        return np.asarray(state.unpooled_mean, np.float64), np.asarray(state.unpooled_var, np.float64)
    return state.mean_array(), np.diag(state.cov_array()).copy()


def pooled_prior(states: Sequence[UserState], names: Sequence[str], spread: float = SPREAD) -> PooledPrior:
    """The empirical-Bayes prior of the module docstring from fitted users' states (each fitted on at
    least one answer, a comparison or a tie of two answers, `UserState.answers`; on the coefficients `names`). Raises ValueError with fewer than 2 states, a
    state on other coefficients, or a negative or infinite `spread`."""
    if len(states) < 2:
        raise ValueError(f"a pooled prior needs at least 2 fitted users, got {len(states)}")
    if not 0 <= spread < float("inf"):
        raise ValueError(f"spread must be >= 0 and finite, got {spread}")
    names = tuple(names)
    for state in states:
        if tuple(state.names) != names:
            raise ValueError("every state must be on the same coefficients as the model")
    means, variances = zip(*(unpooled(s) for s in states), strict=True)
    return pooled_from_fits(np.stack(means), np.stack(variances), names, spread)


def pooled_from_fits(means: np.ndarray, variances: np.ndarray, names: Sequence[str], spread: float = SPREAD) -> PooledPrior:
    """`pooled_prior` from U users' posterior means (U, D) and variances (U, D) under the model's
    own prior. Raises ValueError with fewer than 2 users or mismatched shapes."""
    means, variances = np.asarray(means, np.float64), np.asarray(variances, np.float64)
    if means.ndim != 2 or means.shape != variances.shape or means.shape[1] != len(names):
        raise ValueError(f"means and variances must both be (users, {len(names)}), got {means.shape} and {variances.shape}")
    if len(means) < 2:
        raise ValueError(f"a pooled prior needs at least 2 fitted users, got {len(means)}")
    cov = np.cov(means.T) + np.diag(spread * variances.mean(0) + RIDGE)
    return PooledPrior(names=tuple(names), mean=means.mean(0), cov=cov, users=len(means), spread=spread)
