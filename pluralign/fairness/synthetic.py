"""Synthetic comparisons with known groups, for audit tests and the 1M-comparison benchmark.

Each group has an ideal direction in embedding space; a user of group g prefers the response whose
embedding lies further along that direction (a noisy Bradley-Terry choice). The minority's ideal
differs from the majority's on the first `disagree` dimensions, so a model fitted to everyone
serves the minority worse by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pluralign.fairness.audit import Comparisons


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 1000
    comparisons_per_user: int = 100
    dim: int = 384
    minority_share: float = 0.1  # share of users in group "minority"
    disagree: int = 8  # leading dimensions on which the minority's ideal is the majority's negated
    temperature: float = 0.5  # Bradley-Terry choice noise; smaller is more decisive
    seed: int = 0


def synthetic_comparisons(config: SyntheticConfig = SyntheticConfig()) -> Comparisons:
    rng = np.random.default_rng(config.seed)
    n_users, per_user, d = config.users, config.comparisons_per_user, config.dim
    ideal = np.zeros((2, d), np.float32)
    ideal[0, : 2 * config.disagree] = 1.0
    ideal[1] = ideal[0]
    ideal[1, : config.disagree] *= -1.0  # the minority disagrees on half of what matters
    ideal /= np.linalg.norm(ideal, axis=1, keepdims=True)
    n_minority = int(round(n_users * config.minority_share))
    user_group = np.r_[np.zeros(n_users - n_minority, np.int64), np.ones(n_minority, np.int64)]
    user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)  # (N,)
    n = len(user)
    # embeddings vary most along a few directions: the spread decays with the dimension index
    spread = (1.0 / (1.0 + np.arange(d) / 8.0)).astype(np.float32)
    diff = rng.standard_normal((n, d), dtype=np.float32) * spread  # (N, d)
    utility = np.einsum("nd,nd->n", diff, ideal[user_group[user]])  # (N,) how much the first is better
    first_wins = rng.random(n) < 1.0 / (1.0 + np.exp(-utility / config.temperature))
    diff[~first_wins] *= -1.0  # rows are chosen minus rejected
    return Comparisons(
        diff=diff,
        user=user,
        users=[f"u{i:05d}" for i in range(n_users)],
        group=user_group[user],
        groups=["majority", "minority"],
        time=np.tile(np.arange(per_user, dtype=np.float64), n_users) + rng.random(n),
        policy_win=np.zeros(n, np.int8),
        encoder_id="synthetic",
    )
