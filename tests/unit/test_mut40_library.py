"""The library as its users call it: what survived mutation testing (session 40)."""

from __future__ import annotations

import re

from pluralign.data.record import Preference
from pluralign.policy.fspo import query_episodes, training_episodes


def comparisons(user: str, n: int, ties: int = 0) -> list[Preference]:
    strict = [Preference(user_id=user, prompt=f"{user} question {i}?", chosen=f"{user} liked {i}", rejected=f"{user} disliked {i}")
              for i in range(n)]
    return strict + [Preference(user_id=user, prompt=f"{user} tie {i}?", chosen=f"{user} either {i}a", rejected=f"{user} either {i}b", tie=True)
                     for i in range(ties)]


def shown(episode) -> list[tuple[str, str, str]]:
    """(question, preferred, dispreferred) of each example in the system message the policy reads, in order."""
    system = episode.messages()[0]
    assert system["role"] == "system"
    return re.findall(r"Example \d+\nQuestion: (.*)\nPreferred: (.*)\nDispreferred: (.*)", system["content"])


def test_an_fspo_context_shows_each_shot_chosen_as_preferred_in_the_users_order():
    """`query_episodes` (unseen users' evaluation): the first `shots` support comparisons, in order, each
    with its chosen answer as Preferred and its rejected one as Dispreferred; a tie is never held out.
    `training_episodes`: every example and held-out comparison is one of the user's strict comparisons,
    its chosen answer Preferred."""
    support = {"ann": comparisons("ann", 4)}
    query = {"ann": [*comparisons("ann", 0, ties=1), Preference(user_id="ann", prompt="held?", chosen="yes", rejected="no")]}
    (episode,) = query_episodes(support, query, shots=2)
    assert shown(episode) == [("ann question 0?", "ann liked 0", "ann disliked 0"), ("ann question 1?", "ann liked 1", "ann disliked 1")]
    assert (episode.question, episode.chosen, episode.rejected) == ("held?", "yes", "no")

    users = {u: comparisons(u, 3, ties=3) for u in ("bob", "cy")}
    strict = {(p.prompt, p.chosen, p.rejected) for ps in users.values() for p in ps if not p.tie}
    episodes = training_episodes(users, shots=2, count=40, seed=1)
    assert len(episodes) == 40
    for e in episodes:
        examples = shown(e)
        assert len(examples) == 2 and set(examples) <= strict, examples
        assert (e.question, e.chosen, e.rejected) in strict


def test_a_conversation_turn_without_a_role_is_read_as_the_users(tmp_path):
    """TRL's conversational form with a prompt of several turns: each is read as `role: content`, a turn
    without a role (or a null one) as the user's, as `messages_to_text` documents. The text is what the
    models read and what the service shows of the comparison."""
    import json

    from pluralign.data.io import read_preferences

    row = {"user_id": "u1", "prompt": [{"content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": None, "content": "Tea?"}],
           "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,), _ = read_preferences(path)
    assert record.prompt == "user: Hi\nassistant: Hello.\nuser: Tea?"
    assert (record.chosen, record.rejected) == ("Yes.", "No.")


def test_an_implicit_prompt_whose_chosen_answer_is_a_prefix_of_the_rejected_one_leaves_each_answer_a_character(tmp_path):
    """TRL's implicit-prompt form (`chosen` and `rejected` whole, no `prompt`): when one is a prefix of the
    other, the last common character is left to the answers (as `trl.data_utils.extract_prompt` does), so
    neither answer is empty and the row reads, the file's form kept for its export."""
    import json

    from pluralign.data.io import preference_row, read_preferences

    row = {"user_id": "u1", "chosen": "The answer is yes", "rejected": "The answer is yes, surely"}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (record,), _ = read_preferences(path)
    assert (record.prompt, record.chosen, record.rejected) == ("The answer is ye", "s", "s, surely")
    assert {k: preference_row(record)[k] for k in ("chosen", "rejected")} == {"chosen": row["chosen"], "rejected": row["rejected"]}
    assert "prompt" not in preference_row(record)
