"""Inference-time MaxMin: among n candidate answers, the one whose worst-off group fares best.

For a user with no history the service cannot tell which group it belongs to; answering with the
candidate that maximizes the minimum normalized group reward protects every group at once. Each
group's rewards are standardized over the candidates (or by a given reference mean and scale, e.g.
of that group's reward on the base model's samples), because raw reward scales of different heads
are not comparable.
"""

from __future__ import annotations

import numpy as np


def normalize_rewards(rewards: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """(n, G) rewards standardized per group: by the given reference, else over the n candidates.
    Raises ValueError on another shape or rewards that are not finite."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or 0 in rewards.shape:  # no group (n, 0) too, named here, not as "shares must be 0 ... weights"
        raise ValueError(f"rewards must be (n candidates, G groups) with n >= 1 and G >= 1, got shape {rewards.shape}")
    bad = ~np.isfinite(rewards).all(1)
    if bad.any():
        raise ValueError(f"`rewards` of candidate {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)")
    mean = rewards.mean(0) if mean is None else np.asarray(mean, dtype=np.float64)
    scale = rewards.std(0) if scale is None else np.asarray(scale, dtype=np.float64)
    return (rewards - mean) / np.where(scale > 1e-12, scale, 1.0)


def share_weights(shares: np.ndarray | None, groups: int) -> np.ndarray:
    """(G,) group weights summing to 1: `shares` normalized, or equal weights when None.
    Raises ValueError for another length than `groups`, negative, not finite or summing to 0."""
    weights = np.ones(groups) if shares is None else np.asarray(shares, dtype=np.float64).reshape(-1)
    if weights.shape != (groups,) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"shares must be {groups} finite non-negative weights, not all 0; got {weights.tolist()}")
    return weights / weights.sum()


def select_maxmin(rewards: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None,
                  shares: np.ndarray | None = None) -> int:
    """Index of the candidate maximizing min over groups of the normalized reward.

    rewards: (n, G). Ties on the minimum go to the higher mean normalized reward weighted by
    `shares` ((G,) non-negative group weights, e.g. a mixture's weights; default equal), then the
    lowest index. With two candidates that are each one group's favourite, standardized over the
    candidates (no `mean` or `scale`), the minimum always ties (every group's rewards are -1 and +1): equal weights leave the first,
    shares give the one the larger group prefers (as `maxmin.maxmin_scores` does for training).
    Raises ValueError for an empty table or `shares` of another length than G, negative, not finite
    or summing to 0."""
    z = normalize_rewards(rewards, mean, scale)  # (n, G)
    weights = share_weights(shares, z.shape[1])
    worst = z.min(1)  # (n,)
    best = np.flatnonzero(np.isclose(worst, worst.max()))
    return int(best[np.argmax(z[best] @ weights)])


def select_with_heads(heads, prompt: np.ndarray, candidates: np.ndarray) -> int:
    """The MaxMin candidate under a fitted group mixture (e.g. `EMMixture`, anything with `rewards`;
    ties on the minimum go to the mixture's weights when it has `mixing_weights`, else equal ones).

    prompt: (d,) embedding of the question; candidates: (n, d) embeddings of the answers."""
    import torch

    responses = torch.as_tensor(np.asarray(candidates, dtype=np.float32))  # (n, d)
    prompts = torch.as_tensor(np.asarray(prompt, dtype=np.float32)).expand_as(responses)  # (n, d)
    shares = heads.mixing_weights() if hasattr(heads, "mixing_weights") else None
    return select_maxmin(heads.rewards(prompts, responses).cpu().numpy(), shares=shares)  # rewards: (n, K)
