"""Small pure loss functions over named tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class TrainingDiverged(ValueError):
    """A training loop's loss became NaN or inf (too high a learning rate): the parameters are no longer
    numbers worth keeping, and no earlier state is kept either. Raised by PAL's and FSPO's (adapters')
    loops; the message names where (epoch or step) and the loss, in one line."""


def bradley_terry_loss(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_c - r_r), averaged: the pairwise preference likelihood."""
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al.): BT loss on implicit rewards beta * log(pi / pi_ref); per-row, not averaged."""
    margin = (policy_chosen_logp - ref_chosen_logp) - (policy_rejected_logp - ref_rejected_logp)
    return -F.logsigmoid(beta * margin)


def ipo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """IPO (Azar et al.): squared distance of the log-ratio margin from 1/(2 beta); per-row."""
    margin = (policy_chosen_logp - ref_chosen_logp) - (policy_rejected_logp - ref_rejected_logp)
    return (margin - 1.0 / (2.0 * beta)) ** 2
