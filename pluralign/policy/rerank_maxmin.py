"""Inference-time MaxMin: among n candidate answers, the one whose worst-off group fares best.

For a user with no history the service cannot tell which group it belongs to; answering with the
candidate that maximizes the minimum normalized group reward protects every group at once. Each
group's rewards are standardized over the candidates (or by a given reference mean and scale, e.g.
of that group's reward on the base model's samples), because raw reward scales of different heads
are not comparable.
"""

from __future__ import annotations

import numpy as np


def _reference(name: str, value, groups: int) -> np.ndarray:
    """A reference `mean` or `scale` as (G,) float64 (one number: every group's); ValueError naming it when it holds
    another count of numbers than 1 or G, or one that is not finite, or (`scale`) one below 0. Unchecked, a NaN mean
    made every score NaN (select_maxmin: "attempt to get argmax of an empty sequence"), and a NaN or negative scale
    was taken as 1 without a word."""
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be numbers, one per group ({groups},), got {value!r}") from None
    if values.size not in (1, groups):
        raise ValueError(f"`{name}` has shape {values.shape}: one number per group, ({groups},)")
    values = np.broadcast_to(values.reshape(-1), (groups,))
    bad = ~np.isfinite(values) | ((values < 0) if name == "scale" else False)
    if bad.any():
        g = int(np.flatnonzero(bad)[0])
        raise ValueError(f"`{name}` of group {g} is {values[g]!r}: " + ("not finite (NaN or inf)" if not np.isfinite(values[g])
                                                                       else "a scale must be a number >= 0 (0: the group is not scaled)"))
    return values


def normalize_rewards(rewards: np.ndarray, mean: np.ndarray | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """(n, G) rewards standardized per group: by the given reference (`mean`, `scale`: (G,) each, or one number for
    every group; a scale of 0 leaves its group unscaled), else over the n candidates. Raises ValueError on another
    shape or rewards that are not finite, and naming `mean` or `scale` when it is not 1 or G finite numbers (a scale
    >= 0)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or 0 in rewards.shape:  # no group (n, 0) too, named here, not as "shares must be 0 ... weights"
        raise ValueError(f"rewards must be (n candidates, G groups) with n >= 1 and G >= 1, got shape {rewards.shape}")
    bad = ~np.isfinite(rewards).all(1)
    if bad.any():
        raise ValueError(f"`rewards` of candidate {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)")
    groups = rewards.shape[1]
    mean = rewards.mean(0) if mean is None else _reference("mean", mean, groups)
    scale = rewards.std(0) if scale is None else _reference("scale", scale, groups)
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
    lowest index. A group of share 0 (a mixture's head no user chose, its rewards constant) is no one's: it is
    left out of the minimum, which it would otherwise cap at its constant. With two candidates that are each one group's favourite, standardized over the
    candidates (no `mean` or `scale`), the minimum always ties (every group's rewards are -1 and +1): equal weights leave the first,
    shares give the one the larger group prefers (as `maxmin.maxmin_scores` does for training).
    Raises ValueError for an empty table, `mean` or `scale` as `normalize_rewards` does, or `shares` of another length
    than G, negative, not finite or summing to 0."""
    z = normalize_rewards(rewards, mean, scale)  # (n, G)
    weights = share_weights(shares, z.shape[1])
    worst = z[:, weights > 0].min(1)  # (n,): over the groups someone is in
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
