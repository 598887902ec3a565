"""Prequential evaluation: each comparison is predicted by its user's model before it is learned from.

Users are independent, so the t-th comparison of every user is one batched step: a population with
T comparisons per user takes T steps however many users it has. The per-user model is a strategy
(`OnlineUserModel`); `OnlineLogistic` is the default, a Bayesian logistic regression per user
updated by one extended-Kalman step per comparison (a Laplace approximation in closed form).

numpy only: an audit job's process imports no torch (~1.5 s of CPU at each start); `OnlinePAL`
imports it with the PAL model it is given.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from pluralign.checks import above_zero


class OnlineUserModel(Protocol):
    """A per-user model that predicts a comparison and then learns from it; rows index its features.
    `user` and `rows` are (B,) int64 numpy arrays."""

    name: str

    def predict(self, user: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """P(chosen beats rejected) for each (user, row); each user appears at most once.  # (B,)"""
        ...

    def learn(self, user: np.ndarray, rows: np.ndarray) -> None:
        """Update each user's model with the observation that the row's chosen response won."""
        ...


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in `x`'s dtype; exp's overflow (x below about -88 in float32) is the exact 0 it gives."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class OnlineLogisticConfig:
    prior_variance: float = 1.0  # prior variance of the personal margin (split over the whitened features)
    # prior variance of the weight on the base model's margin (mean 1), widened to base_variance / mean(margin^2) where
    # the base model's margins on a user's comparisons are smaller than 1 (root mean square): the margin along the base
    # model's direction varies a priori by at least base_variance, however weak the base model (`base_weight_variance`)
    base_variance: float = 0.5

    def __post_init__(self) -> None:  # a variance <= 0 or NaN would make every prediction NaN
        above_zero("OnlineLogisticConfig", prior_variance=self.prior_variance, base_variance=self.base_variance)


def base_weight_variance(base_margin: np.ndarray, base_variance: float, user: np.ndarray | None = None,
                         n_users: int = 1) -> np.ndarray:
    """Prior variance of each user's weight on the base model's margin: `base_variance` / mean(margin^2) over the
    user's own comparisons, at least `base_variance`.  # (n_users,)

    `base_margin`: (N,) every comparison's base margin (logits); `user`: (N,) int64 each comparison's user, < n_users
    (None: every comparison is user 0's). A user who disagrees with the consensus is learned through this weight's
    sign; in weight units alone a weak base model's margins (around 0.3) leave that sign out of reach: a
    comparison moves it by about 0.08 against a prior standard deviation of 0.7, and after 12 consistent
    comparisons against the consensus the prediction is still 0.49 (so is a full Laplace refit's: the prior holds
    it, not the one-step update). Each user's own margins set its scale: one scale over the whole audit would let a
    majority whose comparisons the base model finds clear (margins of 1 or more) keep a minority's weak ones (0.3)
    at the old prior. Only the margins' sizes are used, which do not depend on which
    answer was chosen. A user whose margins are 1 or more (root mean square: as on most of every real set audited,
    persona 1.07 to 6.66 over the population, UKPConvArg1 1.90) keeps `base_variance`; margins all (nearly) 0 carry
    nothing to weigh: `base_variance` too, as for a user with no comparisons."""
    user = np.zeros(len(base_margin), np.int64) if user is None else np.asarray(user, np.int64)
    square = np.square(np.asarray(base_margin, np.float64))
    counts = np.bincount(user, minlength=n_users)[:n_users]
    mean_square = np.bincount(user, weights=square, minlength=n_users)[:n_users] / np.maximum(counts, 1)  # (n_users,)
    weak = (mean_square > 1e-12) & (mean_square < 1.0)
    return np.where(weak, base_variance / np.where(weak, mean_square, 1.0), base_variance)


class OnlineLogistic:
    """Per-user Bayesian logistic regression over features phi = [base margin, whitened diff].

    Each user starts as the base model (weight 1 on its margin, 0 elsewhere), so a user with no
    history is predicted on the one-size-fits-all model's side of 0.5 (its probability drawn toward 0.5 by the
    prior's uncertainty: the probit approximation, MacKay 1992, Bishop 2006 section 4.5.2), and moves away from it only
    as far as the user's own comparisons justify; the base weight's prior lets a user's margin along the base
    model's direction move by a standard deviation of at least sqrt(base_variance) logits (root mean square over the
    user's comparisons) even where the base model's margins on them are small (`base_weight_variance`), so a user against the consensus in every comparison is learned
    through that weight's sign. The posterior is a Gaussian with diagonal
    covariance (the features are whitened principal directions), updated by one extended-Kalman
    step per comparison; state is two (U, k) tables, so a step costs O(users x k): user identity is
    data, not parameters."""

    name = "online-logistic"

    def __init__(self, features: np.ndarray, n_users: int, config: OnlineLogisticConfig = OnlineLogisticConfig(),
                 user: np.ndarray | None = None):
        """`features`: (N, k) numbers (a numpy array, or a CPU tensor), held as float32; `user`: (N,) int64 each
        row's user, < n_users, which scales each user's base-weight prior by its own rows' margins
        (`base_weight_variance`; None: every row's, as one user's). Raises ValueError naming `user` where it is not
        (N,) indices from 0 to n_users - 1."""
        self.features = np.asarray(features, np.float32)  # (N, k); column 0 is the base margin
        k = self.features.shape[1]
        self.mean = np.zeros((n_users, k), np.float32)  # (U, k)
        self.mean[:, 0] = 1.0
        prior = np.full(k, config.prior_variance / max(1, k - 1), np.float32)
        self.var = np.tile(prior, (n_users, 1))  # (U, k) diagonal of each user's covariance
        if user is None:
            self.var[:, 0] = base_weight_variance(self.features[:, 0], config.base_variance)[0]
        else:
            user = np.asarray(user)
            if user.shape != (len(self.features),) or (len(user) and not (0 <= user.min() and user.max() < n_users)):
                raise ValueError(f"`user` must be one user index from 0 to {n_users - 1} a row of `features` "
                                 f"({len(self.features)} rows), not shape {user.shape}")
            self.var[:, 0] = base_weight_variance(self.features[:, 0], config.base_variance, user, n_users)

    def _moments(self, user: np.ndarray, rows: np.ndarray):
        x = self.features[rows]  # (B, k)
        var = self.var[user]  # (B, k)
        mean = self.mean[user]  # (B, k)
        mu = (mean * x).sum(-1)  # (B,)
        var_x = var * x  # (B, k)
        margin_var = (var_x * x).sum(-1)  # (B,)
        return x, mean, var, mu, var_x, margin_var

    def predict(self, user: np.ndarray, rows: np.ndarray) -> np.ndarray:
        _, _, _, mu, _, margin_var = self._moments(user, rows)
        # probit approximation of the predictive probability under weight uncertainty
        return sigmoid(mu / np.sqrt(1.0 + math.pi * margin_var / 8.0))

    def learn(self, user: np.ndarray, rows: np.ndarray) -> None:
        _, mean, var, mu, var_x, margin_var = self._moments(user, rows)
        p = sigmoid(mu)
        h = p * (1.0 - p)  # curvature of the log-likelihood at the current mean
        shrink = 1.0 / (1.0 + h * margin_var)  # (B,)
        # the diagonal of the rank-one (Sherman-Morrison) covariance update, and a Newton step on the mean
        self.var[user] = var - (h * shrink)[:, None] * var_x * var_x
        self.mean[user] = mean + ((1.0 - p) * shrink)[:, None] * var_x


def time_steps(user: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by position in their user's history: step t holds every user's t-th row."""
    by_user_time = np.lexsort((order, user))  # rows sorted by user, then time
    sorted_user = user[by_user_time]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_user)) + 1]
    lengths = np.diff(np.r_[starts, len(user)])
    position = np.arange(len(user)) - np.repeat(starts, lengths)
    by_position = np.argsort(position, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(position))]
    rows = by_user_time[by_position]
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def prequential(
    model: OnlineUserModel,
    user: np.ndarray,
    order: np.ndarray,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """P(chosen wins) for every row, each predicted from its user's strictly earlier rows.  # (N,)"""
    out = np.empty(len(user), np.float64)
    steps = time_steps(user, order)
    user = np.asarray(user, np.int64)
    with single_threaded():
        for i, rows in enumerate(steps):
            users = user[rows]
            out[rows] = model.predict(users, rows)
            model.learn(users, rows)
            if progress and i % 16 == 0:
                progress(i / len(steps))
    return out


@contextlib.contextmanager
def single_threaded():
    """Run the math libraries (numpy's BLAS; torch's, where a model uses it) on one thread: audit steps are small,
    and on a shared machine thread hand-offs cost far more than they save (a 384 x 384 eigendecomposition took 10 s
    on 2 busy threads, 0.05 s on one)."""
    torch = sys.modules.get("torch")  # imported by whoever uses it (OnlinePAL's model); never imported here
    threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(threads)


class OnlinePAL:
    """Per-user PAL mixture weights learned online, the shared PAL model frozen.

    Each user's logits start at the population prior; each comparison is one Gauss-Newton step whose
    curvature accumulates in a (K, K) precision per user (the same extended-Kalman step as
    `OnlineLogistic`, in the K-dimensional logit space). The pair terms of every comparison are
    computed once by the frozen model."""

    name = "online-pal"

    def __init__(self, model, prior_logits, prompt, chosen, rejected, n_users: int, prior_strength: float = 1.0):
        """Comparisons (N, d) each; raises ValueError naming the argument whose embeddings are not
        (N, input_dim) alike or not finite, `prior_logits` not K finite numbers, or `prior_strength`
        not positive."""
        import torch

        from pluralign.reward.inputs import comparison_rows, logits_row, positive

        prior_strength = positive("prior_strength", prior_strength)
        prior_logits = logits_row("prior_logits", prior_logits, model.config.k)
        prompt, chosen, rejected = comparison_rows(model.config.input_dim, next(model.parameters()).device,
                                                   prompt=prompt, chosen=chosen, rejected=rejected)
        with torch.no_grad():
            self.terms = model.pair_terms(prompt, chosen, rejected).numpy()  # float64 arrays, N rows
        self.scorer = model.scorer
        k = model.config.k
        self.logits = np.tile(prior_logits.detach().cpu().double().numpy(), (n_users, 1))  # (U, K)
        self.precision = np.tile(prior_strength * np.eye(k), (n_users, 1, 1))  # (U, K, K)

    def _rows(self, rows: np.ndarray):
        from pluralign.reward.pal import PairTerms

        t = self.terms
        return PairTerms(t.bias[rows], t.pull[rows], None if t.gram is None else t.gram[rows], t.scale)

    def _margin(self, user: np.ndarray, rows: np.ndarray):
        theta = self.logits[user]
        weights = np.exp(theta - theta.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)  # (B, K)
        terms = self._rows(rows)
        return weights, terms, self.scorer.margin(terms, weights)  # (B,)

    def predict(self, user: np.ndarray, rows: np.ndarray) -> np.ndarray:
        _, _, margin = self._margin(user, rows)
        return sigmoid(margin)

    def learn(self, user: np.ndarray, rows: np.ndarray) -> None:
        weights, terms, margin = self._margin(user, rows)
        dm_dw = self.scorer.margin_grad(terms, weights)  # (B, K)
        g = weights * (dm_dw - (weights * dm_dw).sum(-1, keepdims=True))  # d margin / d logits (B, K)
        p = sigmoid(margin)
        precision = self.precision[user] + (p * (1 - p))[:, None, None] * g[:, :, None] * g[:, None, :]
        self.logits[user] += np.linalg.solve(precision, ((1 - p)[:, None] * g)[:, :, None])[:, :, 0]
        self.precision[user] = precision
