"""A new user's trial of the library (session newlib55): what a researcher calling it from a notebook stumbled on."""

from __future__ import annotations

import re

from pluralign.data.record import Preference
from pluralign.policy.fspo import query_episodes


def _shown(episode) -> list[tuple[str, str, str]]:
    """(question, preferred, dispreferred) of each example in the system message the policy reads, in order."""
    return re.findall(r"Example \d+\nQuestion: (.*)\nPreferred: (.*)\nDispreferred: (.*)", episode.messages()[0]["content"])


def test_an_unseen_users_tie_is_never_shown_as_a_preferred_answer_in_the_fspo_context():
    """`query_episodes` takes a new user's first `shots` strict support comparisons as context: a tie (the user found
    both answers equal) is not one, as `training_episodes` and the service's chat path (which drops tied rows from the
    shots) already hold. Before, a tie among the first shots was shown as "Preferred: A / Dispreferred: B", a
    preference the user never stated, and the policy was scored on that context."""
    tie = Preference(user_id="ann", prompt="tea or coffee?", chosen="tea", rejected="coffee", tie=True)
    strict = [Preference(user_id="ann", prompt=f"question {i}?", chosen=f"liked {i}", rejected=f"disliked {i}") for i in range(3)]
    held = Preference(user_id="ann", prompt="held?", chosen="yes", rejected="no")
    (episode,) = query_episodes({"ann": [strict[0], tie, *strict[1:]]}, {"ann": [held]}, shots=2)
    assert _shown(episode) == [("question 0?", "liked 0", "disliked 0"), ("question 1?", "liked 1", "disliked 1")]
    assert [s.question for s in episode.shots] == ["question 0?", "question 1?"]
