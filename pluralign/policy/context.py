"""The few-shot preference context: a user's past comparisons shown to the policy.

One format serves FSPO training and the service's chat path, so a policy trained on it reads the
same thing at serving time. The shots go in a system message ahead of the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence

from pluralign.data.record import Base, Preference

MAX_SHOT_CHARS = 600  # each text is cut to this many characters to bound the context


class Shot(Base):
    """One past comparison of the user: for `question`, `preferred` beat `dispreferred`."""

    question: str
    preferred: str
    dispreferred: str

    @classmethod
    def from_preference(cls, p: Preference) -> Shot:
        return cls(question=p.prompt, preferred=p.chosen, dispreferred=p.rejected)


def _clip(text: str, limit: int = MAX_SHOT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def format_shots(shots: Sequence[Shot]) -> str:
    """The system message text: numbered question / preferred / dispreferred blocks."""
    if not shots:
        return "Answer helpfully."
    blocks = [
        f"Example {i}\nQuestion: {_clip(s.question)}\nPreferred: {_clip(s.preferred)}\nDispreferred: {_clip(s.dispreferred)}"
        for i, s in enumerate(shots, start=1)
    ]
    return (
        "These are this user's past preferences between two answers.\n\n"
        + "\n\n".join(blocks)
        + "\n\nAnswer the next question the way this user would prefer."
    )


def with_shots(shots: Sequence[Shot], messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Chat messages with the shots as a leading system message (merged with an existing one)."""
    context = format_shots(shots)
    messages = [dict(m) for m in messages]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = context + "\n\n" + messages[0]["content"]
        return messages
    return [{"role": "system", "content": context}, *messages]
