"""FSPO on a tiny model and a synthetic population of four groups, each favouring one colour."""

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

FAVOURITES = ("red", "blue", "green", "yellow")  # group g's colour; one token each
NEUTRAL = ("brown", "black", "white", "grey", "orange", "purple", "gold", "cat")


def comparisons(user: str, n: int, against: tuple[str, ...], rng: random.Random) -> list[Preference]:
    """User i (group i % 4) prefers its group's colour to any colour in `against`."""
    liked = FAVOURITES[int(user.rsplit("-", 1)[1]) % len(FAVOURITES)]
    others = [c for c in against if c != liked]
    return [Preference(user_id=user, prompt="Colour?", chosen=liked, rejected=rng.choice(others)) for _ in range(n)]


def test_fspo_beats_the_untrained_model_on_unseen_users(make_tiny_lm, tokenizer):
    rng = random.Random(0)
    everything = FAVOURITES + NEUTRAL
    seen = {u: comparisons(u, 10, everything, rng) for u in (f"seen-{i}" for i in range(16))}
    new_users = [f"new-{i}" for i in range(8)]
    support = {u: comparisons(u, 4, everything, rng) for u in new_users}
    # held-out pairs oppose two groups' favourites, each group equally often on each side, so an
    # untrained model's liking for particular words averages out (it scores near 50%)
    query = {u: comparisons(u, 4, FAVOURITES, rng) for u in new_users}
    config = FSPOConfig(shots=4, loss="dpo", beta=1.0, lora_rank=16, lr=3e-2, steps=24, batch_size=8, seed=0)
    test_episodes = query_episodes(support, query, config.shots)

    base = make_tiny_lm()
    untrained = reward_accuracy(base, None, tokenizer, test_episodes, config)
    policy = add_lora(base, config)
    reference = ReferencePolicy(policy)
    assert reward_accuracy(policy, reference, tokenizer, test_episodes, config) == 0.5  # pi == pi_ref at init
    train(policy, reference, tokenizer, training_episodes(seen, config.shots, 192, seed=0), config)
    trained = reward_accuracy(policy, reference, tokenizer, test_episodes, config)
    assert trained >= 0.8, (untrained, trained)
    assert trained >= untrained + 0.2, (untrained, trained)
