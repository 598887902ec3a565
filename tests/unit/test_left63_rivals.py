"""Task left63 (review spell62 left it): the rivals of a chosen answer (`service.feedback.services._rivals`, a choice's
or a rating's rows) read each text's `look_key` once and the chosen answer's once; before, one more of each kept
text and of the chosen answer for each kept text (`look_key` folds a whole text: ~2 us an ASCII one of 60 words,
more for the others)."""

from __future__ import annotations

import pluralign.data.text as text
import service.feedback.services as feedback


def test_a_choices_rivals_read_each_answers_look_key_once(monkeypatch):
    calls = []
    look_key = text.look_key

    def counted(answer: str) -> str:
        calls.append(answer)
        return look_key(answer)

    monkeypatch.setattr(text, "look_key", counted)
    monkeypatch.setattr(feedback, "look_key", counted)
    texts = ["Yes.", "No.", "\u3164", "yes.", "Maybe.", "Ye\u00ads.", "Later.", "No"]
    assert feedback._rivals(texts, "Yes\u200b.") == ["No.", "yes.", "Maybe.", "Later.", "No"]  # "Ye\xads." is "Yes."
    assert len(calls) == 7 + 1  # the visible texts' and the chosen answer's; before: 19, 7 + 2 x 6 (each of the 6
    # texts `pickable` kept read again, and the chosen answer each time)
