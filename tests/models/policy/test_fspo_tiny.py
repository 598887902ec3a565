"""FSPO on a tiny model and a synthetic population whose users each favour one colour."""

from __future__ import annotations

import random

from pluralign.data.record import Preference
from pluralign.policy.fspo import (
    FSPOConfig,
    ReferencePolicy,
    add_lora,
    query_episodes,
    reward_accuracy,
    train,
    training_episodes,
)

COLOURS = ("red", "blue", "green", "yellow")


def population(n_users: int, per_user: int, prefix: str, seed: int) -> dict[str, list[Preference]]:
    """User i prefers the answer naming colour i % 4 over one naming any other colour."""
    rng = random.Random(seed)
    users = {}
    for i in range(n_users):
        user = f"{prefix}{i}"
        liked = COLOURS[i % len(COLOURS)]
        users[user] = [
            Preference(
                user_id=user,
                prompt=f"Which colour for item {rng.randrange(100)}?",
                chosen=f"The {liked} one.",
                rejected=f"The {rng.choice([c for c in COLOURS if c != liked])} one.",
            )
            for _ in range(per_user)
        ]
    return users


def test_fspo_beats_the_untrained_model_on_unseen_users(make_tiny_lm, tokenizer):
    config = FSPOConfig(shots=4, loss="dpo", beta=0.5, lora_rank=8, lr=1e-2, steps=40, batch_size=8, seed=0)
    seen = population(16, 10, "seen", seed=1)
    unseen = population(8, 10, "new", seed=2)
    support = {u: p[:4] for u, p in unseen.items()}
    query = {u: p[4:] for u, p in unseen.items()}
    test_episodes = query_episodes(support, query, config.shots, per_user=4)

    base = make_tiny_lm(hidden=64)
    untrained = reward_accuracy(base, None, tokenizer, test_episodes, config)
    policy = add_lora(base, config)
    reference = ReferencePolicy(policy)
    assert reward_accuracy(policy, reference, tokenizer, test_episodes, config) == 0.5  # pi == pi_ref at init
    train(policy, reference, tokenizer, training_episodes(seen, config.shots, 320, seed=0), config)
    trained = reward_accuracy(policy, reference, tokenizer, test_episodes, config)
    assert trained >= 0.85, (untrained, trained)
    assert trained >= untrained + 0.25, (untrained, trained)
