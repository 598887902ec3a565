"""FSPO on a tiny model and a synthetic population of four groups, each favouring one colour."""

from __future__ import annotations

import copy
import random

from pluralign.data.record import Preference
from pluralign.policy.fspo import Episode, FSPOConfig, ReferencePolicy, episode, reward_accuracy, train

FAVOURITES = ("red", "blue", "green", "yellow")  # group g's colour
NEUTRAL = ("grey", "brown", "black", "white")


def comparison(user: str, against: tuple[str, ...], rng: random.Random) -> Preference:
    """User i (group i % 4) prefers its group's colour to any other colour in `against`."""
    liked = FAVOURITES[int(user.rsplit("-", 1)[1]) % len(FAVOURITES)]
    other = rng.choice([c for c in against if c != liked])
    # "I like X": the colour is the same token in the shots and in the answer
    return Preference(user_id=user, prompt="Colour?", chosen=f"I like {liked}", rejected=f"I like {other}")


def episodes(users: list[str], count: int, rng: random.Random) -> list[Episode]:
    """Four shots against neutral colours, then a held-out pair of two groups' favourites.

    The held-out pairs give every favourite as often to one side as to the other, so no answer is
    better for the population as a whole (a no-shot policy and an untrained model score ~50%):
    only the shots tell which answer this user wants."""
    out = []
    for i in range(count):
        user = users[i % len(users)]
        out.append(episode([comparison(user, NEUTRAL, rng) for _ in range(4)], comparison(user, FAVOURITES, rng)))
    return out


def test_fspo_beats_the_untrained_model_on_unseen_users(make_tiny_lm, tokenizer):
    rng = random.Random(0)
    train_episodes = episodes([f"seen-{i}" for i in range(16)], 240, rng)
    test_episodes = episodes([f"new-{i}" for i in range(8)], 32, rng)
    # every weight trains: on CPU a random 2-layer model learns to read the shots within a few
    # dozen steps this way (its LoRA counterpart needs many more; test_adapters checks LoRA training)
    config = FSPOConfig(shots=4, loss="dpo", beta=1.0, full_finetune=True, lr=1e-2, steps=30, batch_size=8, seed=0)

    policy = make_tiny_lm()
    reference = ReferencePolicy(policy, full_copy=copy.deepcopy(policy))
    untrained = reward_accuracy(policy, None, tokenizer, test_episodes, config)
    assert reward_accuracy(policy, reference, tokenizer, test_episodes, config) == 0.5  # pi == pi_ref at init
    train(policy, reference, tokenizer, train_episodes, config)
    trained = reward_accuracy(policy, reference, tokenizer, test_episodes, config)
    assert trained >= 0.75, (untrained, trained)
    assert trained >= untrained + 0.2, (untrained, trained)
