"""Small pure loss functions over named tensors."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _alike(**named: torch.Tensor) -> None:
    """ValueError naming the first tensor whose shape is not the first's: (N,) against (N, 1) would
    broadcast to an (N, N) table of every chosen against every rejected, averaged without a word."""
    first, *rest = named
    shape = named[first].shape
    for name in rest:
        if named[name].shape != shape:
            raise ValueError(f"`{name}` has shape {tuple(named[name].shape)}, `{first}` {tuple(shape)}: one value per comparison in each")


def _beta(beta: float) -> None:
    # numpy numbers too, as the configs that hold beta take them (`pluralign.reward.inputs.above_zero`)
    number = isinstance(beta, int | float | np.integer | np.floating) and not isinstance(beta, bool | np.bool_)
    if not (number and math.isfinite(beta) and beta > 0):
        raise ValueError(f"`beta` must be a finite number > 0, got {beta!r}")


class TrainingDiverged(ValueError):
    """A training loop's loss became NaN or inf (too high a learning rate): the parameters are no longer
    numbers worth keeping, and no earlier state is kept either. Raised by PAL's and FSPO's (adapters')
    loops; the message names where (epoch or step) and the loss, in one line."""


def bradley_terry_loss(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_c - r_r), averaged: the pairwise preference likelihood. Rewards (N,) each;
    ValueError when their shapes differ."""
    _alike(chosen_reward=chosen_reward, rejected_reward=rejected_reward)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al.): BT loss on implicit rewards beta * log(pi / pi_ref); per-row, not averaged.
    Log-probabilities (N,) each, in nats; ValueError when their shapes differ or `beta` is not > 0."""
    _beta(beta)
    _alike(policy_chosen_logp=policy_chosen_logp, policy_rejected_logp=policy_rejected_logp,
           ref_chosen_logp=ref_chosen_logp, ref_rejected_logp=ref_rejected_logp)
    margin = (policy_chosen_logp - ref_chosen_logp) - (policy_rejected_logp - ref_rejected_logp)
    return -F.logsigmoid(beta * margin)


def ipo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO (Azar et al.): squared distance of the log-ratio margin from 1/(2 beta); per-row.
    Log-probabilities (N,) each, in nats; ValueError when their shapes differ or `beta` is not > 0."""
    _beta(beta)
    _alike(policy_chosen_logp=policy_chosen_logp, policy_rejected_logp=policy_rejected_logp,
           ref_chosen_logp=ref_chosen_logp, ref_rejected_logp=ref_rejected_logp)
    margin = (policy_chosen_logp - ref_chosen_logp) - (policy_rejected_logp - ref_rejected_logp)
    return (margin - 1.0 / (2.0 * beta)) ** 2
