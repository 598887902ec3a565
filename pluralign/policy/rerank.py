"""Rerank generated candidates by one user's reward: the best-scored answer is served first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# reward(prompt (N, d), response (N, d)) -> (N,) scores for one user
UserReward = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Reranked:
    """Scores in generation order and the candidate indices from best to worst."""

    scores: list[float]
    order: list[int]

    @property
    def best(self) -> int:
        return self.order[0]


def rerank(reward: UserReward, prompt_vec: np.ndarray, candidate_vecs: np.ndarray) -> Reranked:
    """Score every candidate for the prompt; ties keep generation order (a stable sort)."""
    n = candidate_vecs.shape[0]  # candidate_vecs: (N, d), prompt_vec: (d,)
    if n == 0:
        raise ValueError("no candidates to rerank")
    prompts = np.broadcast_to(prompt_vec.reshape(1, -1), candidate_vecs.shape)  # (N, d)
    scores = np.asarray(reward(prompts, candidate_vecs), dtype=np.float64).reshape(n)
    order = sorted(range(n), key=lambda i: -scores[i])
    return Reranked(scores=scores.tolist(), order=order)
