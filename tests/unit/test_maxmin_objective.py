"""The MaxMin objective on a policy small enough to solve exactly: a softmax over four answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.losses import dpo_loss
from pluralign.policy.maxmin import maxmin_scores, ranked_pairs
from pluralign.policy.rerank_maxmin import normalize_rewards, select_maxmin
from pluralign.policy.style_groups import (
    GROUP_REWARDS,
    answer_features,
    feature_pairs,
    preference_pairs,
    style_variants,
    win_rates,
)
from pluralign.reward.em import EMConfig, EMMixture

ANSWER = "Rainbows form when sunlight bends in raindrops. Each color bends by a different angle. So we see a band."
PROMPT = "Why are there rainbows?"


def group_heads(shares: dict[str, float], k: int) -> EMMixture:
    """Reward heads learned from unlabelled users' comparisons: K=1 is the single pooled reward."""
    records = preference_pairs([PROMPT], [ANSWER], shares, users=50, pairs_per_user=8, seed=0)
    model = EMMixture(EMConfig(k=k, restarts=2))
    model.fit(feature_pairs(records), feature_pairs(records[:0]))
    return model


def train_categorical(heads: EMMixture, steps: int = 300, beta: float = 0.5) -> tuple[np.ndarray, list[str]]:
    """DPO-train a softmax policy over the four answers on pairs ranked by min over the heads."""
    candidates = sorted(style_variants(ANSWER).values())
    features = answer_features(candidates)
    rewards = heads.rewards(torch.ones_like(features), features).numpy()  # (4, K)
    pairs = ranked_pairs(PROMPT, candidates, maxmin_scores(rewards), source="test")
    index = {c: i for i, c in enumerate(candidates)}
    chosen = torch.tensor([index[p.chosen] for p in pairs])
    rejected = torch.tensor([index[p.rejected] for p in pairs])
    logits = torch.zeros(len(candidates), requires_grad=True)  # the reference policy is uniform
    ref_logp = torch.log_softmax(torch.zeros(len(candidates)), 0)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        logp = torch.log_softmax(logits, 0)  # (4,)
        loss = dpo_loss(logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], beta).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.softmax(logits.detach(), 0).numpy(), candidates


def expected_normalized_rewards(pi: np.ndarray, candidates: list[str]) -> dict[str, float]:
    """Each group's true (rule) reward, standardized over the candidates, in expectation under pi."""
    rewards = np.array([[GROUP_REWARDS[g](c) for g in sorted(GROUP_REWARDS)] for c in candidates])  # (4, G)
    return dict(zip(sorted(GROUP_REWARDS), pi @ normalize_rewards(rewards), strict=True))


@pytest.mark.parametrize("majority", [0.8, 0.9])
def test_maxmin_raises_the_worst_group_where_single_does_not(majority):
    shares = {"enthusiastic": majority, "concise": 1 - majority}
    pi_single, candidates = train_categorical(group_heads(shares, k=1))
    pi_maxmin, _ = train_categorical(group_heads(shares, k=2))
    at_start = expected_normalized_rewards(np.full(4, 0.25), candidates)  # uniform: every group at 0
    single = expected_normalized_rewards(pi_single, candidates)
    maxmin = expected_normalized_rewards(pi_maxmin, candidates)
    assert max(abs(v) for v in at_start.values()) < 1e-9
    assert single["enthusiastic"] > 0.5  # the single reward serves the majority...
    assert single["concise"] < 0  # ...at the minority's cost
    assert min(maxmin.values()) > 0.2  # MaxMin lifts the worst-off group above where it started
    assert min(maxmin.values()) > min(single.values()) + 0.5
    assert candidates[int(pi_maxmin.argmax())] == style_variants(ANSWER)["brief_excited"]  # the compromise


def test_select_maxmin_picks_the_candidate_whose_worst_group_fares_best():
    rewards = np.array([[10.0, -30.0], [0.0, -5.0], [8.0, -12.0], [0.0, -25.0]])  # (n, G): "!" count, -words
    assert select_maxmin(rewards) == 2  # best for no group, good for both
    assert select_maxmin(rewards[:, :1]) == 0  # one group: its favourite
    with pytest.raises(ValueError):
        select_maxmin(np.zeros((0, 2)))


def test_win_rates_follow_each_groups_rule():
    base = ["A plain answer with several words in it.", "Another plain answer here."]
    policy = ["Great question! Short!", "Great question! A much longer answer with many more words than before!"]
    rates = win_rates(policy, base)
    assert rates == {"enthusiastic": 1.0, "concise": 0.5}
