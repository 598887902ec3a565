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


# The Bradley-Terry loss, in nats per pair, of a constant model (every margin 0: each side chosen with
# probability 1/2). A model kept for its validation loss is never much worse than that one.
CONSTANT_BT_LOSS = math.log(2)
# A kept model whose validation loss is over this many times CONSTANT_BT_LOSS (10 bits per pair worse than a
# coin flip: it puts about 1/1000 on the answers users gave) learned numbers, not preferences: on the
# project's runs the kept epoch's loss stays under CONSTANT_BT_LOSS (docs/operations.md, "A training run that diverges")
ABSURD_BT_LOSS = 10 * CONSTANT_BT_LOSS
# The fewest validation pairs whose mean loss PAL's guard judges (training pairs are always judged). A mean over a
# few pairs can be absurd with nothing wrong: a model confident from many consistent training pairs scores ~25 nats
# on the one validation pair where their user answered the other way (a case seen in a replay: 13 answers one way, 1 the other).
# From 20 pairs on, one such pair adds ~1.2 to the mean, so over 10 x log 2 takes a quarter of them contradicted: the
# validation pairs disagree with the training ones as a whole (swapped sides), which is worth stopping for.
MIN_JUDGED_VAL_PAIRS = 20


class TrainingDiverged(ValueError):
    """A training loop's loss became NaN or inf, or (PAL) the best model it kept scores an absurd
    loss (over ABSURD_BT_LOSS) on its training pairs or its validation pairs (MIN_JUDGED_VAL_PAIRS or more): the parameters are no longer numbers worth keeping, and no
    earlier state is kept either. Raised by PAL's, FSPO's (adapters') and MaxMin's loops; the message names
    where (epoch or step), the loss seen and its likely causes, in one line."""


def bradley_terry_loss(chosen_reward: torch.Tensor, rejected_reward: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_c - r_r), averaged: the pairwise preference likelihood. Rewards (N,) each;
    ValueError when their shapes differ."""
    _alike(chosen_reward=chosen_reward, rejected_reward=rejected_reward)
    return -F.logsigmoid(chosen_reward - rejected_reward).mean()


def margin_credit(margin: torch.Tensor) -> torch.Tensor:
    """Accuracy credit of comparisons from their margins (the chosen answer's score less the rejected one's), (N,) ->
    (N,) float: 1 above 0, 0.5 at exactly 0 (a tie: the model cannot tell the answers apart), 0 below; as
    `pluralign.fairness.metrics.credit` credits P(chosen) = sigmoid(margin), so a training loop's accuracy and
    `pluralign eval`'s agree. Counting a tie as wrong put a model that scores two alike answers evenly (PAL on two
    answers one embedding reads alike, a policy at its first step, equal to its reference) below chance."""
    return (margin > 0).float() + 0.5 * (margin == 0).float()


def _log_ratio_margin(policy_chosen_logp: torch.Tensor, policy_rejected_logp: torch.Tensor,
                      ref_chosen_logp: torch.Tensor, ref_rejected_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """(N,) log(pi / pi_ref) of the chosen answer less that of the rejected one, in nats: the margin DPO and IPO
    score. ValueError when the four log-probabilities' shapes differ or `beta` is not a finite number > 0."""
    _beta(beta)
    _alike(policy_chosen_logp=policy_chosen_logp, policy_rejected_logp=policy_rejected_logp,
           ref_chosen_logp=ref_chosen_logp, ref_rejected_logp=ref_rejected_logp)
    return (policy_chosen_logp - ref_chosen_logp) - (policy_rejected_logp - ref_rejected_logp)


def dpo_loss(
    policy_chosen_logp: torch.Tensor,
    policy_rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO (Rafailov et al.): BT loss on implicit rewards beta * log(pi / pi_ref); per-row, not averaged.
    Log-probabilities (N,) each, in nats; ValueError when their shapes differ or `beta` is not > 0."""
    margin = _log_ratio_margin(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)
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
    margin = _log_ratio_margin(policy_chosen_logp, policy_rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)
    return (margin - 1.0 / (2.0 * beta)) ** 2


def davidson_tie_nll(margin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tie's negative log-likelihood under Davidson's model, with its first and second derivatives in the margin,
    for a Laplace (Newton) step. margin (M,): beta . (x_a - x_b) of each tied pair, in nats (either order: the value
    is even in it). Returns (value, gradient, curvature), (M,) each.

    P(tie) = 2 sqrt(p (1 - p)), p = sigmoid(margin): Davidson's tie term ("On extending the Bradley-Terry model to
    accommodate ties in paired comparison experiments", JASA 1970), nu sqrt(p (1 - p)) / (1 + nu sqrt(p (1 - p))),
    without its normaliser, so a strict answer keeps its Bradley-Terry likelihood, and with nu = 2, which makes the
    value 0 at m = 0 (nu shifts the value only, never the fit); as `pluralign.user.active.particle_posterior` reads ties.
    -log P(tie) = (softplus(-m) + softplus(m)) / 2 - log 2: 0 at m = 0, growing like |m| / 2, i.e. half a
    comparison won each way. Its gradient is p - 1/2 (it pulls the margin towards 0: the user is indifferent
    there) and its curvature p (1 - p), largest (1/4) at m = 0, where the pairs a user has no preference between
    sit; convex, so a posterior with ties keeps a single mode."""
    margin = np.asarray(margin, np.float64)
    p = 1.0 / (1.0 + np.exp(-margin))
    value = 0.5 * (np.logaddexp(0.0, -margin) + np.logaddexp(0.0, margin)) - math.log(2.0)
    return value, p - 0.5, p * (1.0 - p)
