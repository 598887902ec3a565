"""Rerank generated candidates by one user's reward: the best-scored answer is served first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pluralign.data.text import pickable
from pluralign.policy.rerank_maxmin import select_maxmin

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


def ranked_by(scores: np.ndarray) -> Reranked:
    """Candidates ordered by their scores (N,), best first; ties keep generation order (a stable sort).
    Raises ValueError for no candidates or a NaN score (it compares false with every other, so the
    order around it would be arbitrary); +-inf order as the largest and smallest."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(scores):
        raise ValueError("no candidates to rerank")
    nan = np.isnan(scores)
    if nan.any():
        raise ValueError(f"`scores` of candidate {int(np.flatnonzero(nan)[0])} is NaN: no order among the candidates")
    return Reranked(scores=scores.tolist(), order=sorted(range(len(scores)), key=lambda i: -scores[i]))


def pickable_first(order: Sequence[int], texts: Sequence[str]) -> list[int]:
    """`order` (candidate indices, best first) with the answers a person can pick between first (`pickable`: each
    visible answer once, its best-ranked spelling), then the rest (blank answers, second spellings of one), each part in
    `order`'s order. Ranked by reward alone, an answer with nothing visible (a Hangul filler, which the encoder embeds
    like any text) was served ahead of visible ones: an answer the user can neither pick nor rate."""
    ranked = [texts[i] for i in order]
    kept = pickable(ranked)
    rest = set(range(len(ranked))).difference(kept)
    return [order[k] for k in kept] + [order[k] for k in sorted(rest)]


def rerank(reward: UserReward, prompt_vec: np.ndarray, candidate_vecs: np.ndarray) -> Reranked:
    """Score every candidate for the prompt; ties keep generation order (a stable sort)."""
    if candidate_vecs.shape[0] == 0:  # candidate_vecs: (N, d), prompt_vec: (d,)
        raise ValueError("no candidates to rerank")
    prompts = np.broadcast_to(prompt_vec.reshape(1, -1), candidate_vecs.shape)  # (N, d)
    return ranked_by(reward(prompts, candidate_vecs))


def rerank_maxmin(group_rewards: Sequence[UserReward], population: UserReward, prompt_vec: np.ndarray, candidate_vecs: np.ndarray) -> Reranked:
    """For a user with no history: serve the candidate whose worst-off group fares best.

    Each group's rewards are standardized over the candidates before the minimum is taken
    (`select_maxmin`); the other candidates follow in the population reward's order, and the scores
    reported are the population's."""
    base = rerank(population, prompt_vec, candidate_vecs)
    prompts = np.broadcast_to(prompt_vec.reshape(1, -1), candidate_vecs.shape)  # (N, d)
    table = np.stack([np.asarray(r(prompts, candidate_vecs), dtype=np.float64).reshape(-1) for r in group_rewards], 1)  # (N, G)
    best = select_maxmin(table)
    return Reranked(scores=base.scores, order=[best] + [i for i in base.order if i != best])
