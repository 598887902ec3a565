"""A toy population for few-shot preference tests: four groups, each favouring one colour.

User `name-i` belongs to group i % 4 and prefers "I like <its colour>" to any other colour. Its
*history* pits its colour against neutral colours; its *held-out* comparisons pit two groups'
favourites against each other, each favourite as often on one side as on the other. So no answer
is better for the population as a whole: a model that ignores a user's history scores ~50% on
held-out comparisons, and one that reads it can score 100%. Answers are "I like X" so the colour
is the same token in a shot and in an answer.
"""

from __future__ import annotations

import random

from pluralign.data.record import Preference

FAVOURITES = ("red", "blue", "green", "yellow")
NEUTRAL = ("grey", "brown", "black", "white")
PROMPT = "Colour?"


def favourite(user: str) -> str:
    return FAVOURITES[int(user.rsplit("-", 1)[1]) % len(FAVOURITES)]


def comparison(user: str, against: tuple[str, ...], rng: random.Random) -> Preference:
    liked = favourite(user)
    other = rng.choice([c for c in against if c != liked])
    return Preference(
        user_id=user,
        prompt=PROMPT,
        chosen=f"I like {liked}",
        rejected=f"I like {other}",
        source="colour_groups",
        attributes={"group": liked},
    )


def history(user: str, n: int, rng: random.Random) -> list[Preference]:
    """n comparisons of the user's colour against neutral colours (what shots are drawn from)."""
    return [comparison(user, NEUTRAL, rng) for _ in range(n)]


def held_out(user: str, n: int, rng: random.Random) -> list[Preference]:
    """n comparisons of the user's colour against the other groups' favourites."""
    return [comparison(user, FAVOURITES, rng) for _ in range(n)]
