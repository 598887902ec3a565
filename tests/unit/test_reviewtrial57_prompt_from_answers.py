"""review trial57: the edges of a text `prompt` beside conversations (HuggingFaceH4/ultrafeedback_binarized's layout,
read as TRL's `maybe_extract_prompt` reads it), through the library's readers as a user calls them."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import read_preferences, read_rows, write_jsonl
from pluralign.data.record import PreferenceError

ASK = {"role": "user", "content": "Tea or coffee?"}
TEA, COFFEE = {"role": "assistant", "content": "Tea."}, {"role": "assistant", "content": "Coffee."}


def test_a_set_aside_text_prompt_holding_a_lone_surrogate_is_a_bad_row_naming_it(tmp_path):
    """The text prompt TRL sets aside is kept for the export: one holding a lone surrogate (Python's `json` reads one
    from "\\ud83d") was taken, and writing the record then raised UnicodeEncodeError; it is refused as every other
    text of a row holding one is."""
    row = {"prompt": "Tea or coffee? \ud83d", "chosen": [ASK, TEA], "rejected": [ASK, COFFEE], "user_id": "ann"}
    with pytest.raises(PreferenceError, match="lone UTF-16 surrogate") as info:
        records, _ = read_rows([row])
        write_jsonl(records, tmp_path / "out.jsonl")  # before: UnicodeEncodeError here
    assert info.value.field == "prompt", str(info.value)


@pytest.mark.parametrize(("chosen", "rejected", "field"), [([ASK], [ASK, COFFEE], "chosen"), ([ASK, TEA], [ASK], "rejected")])
@pytest.mark.parametrize("prompt", ["Tea or coffee?", None])  # beside a text prompt, and in the implicit form
def test_an_answer_that_is_only_the_shared_turns_is_named_so(tmp_path, chosen, rejected, field, prompt):
    """An answer that holds only the turns the other opens with has nothing after the prompt. The error said the
    answers "share no opening turn" (so give the prompt as messages: read as the whole conversation, `user: ...`),
    or that they "share no prompt"; it names the empty answer."""
    row = {"chosen": chosen, "rejected": rejected, "user_id": "ann"} | ({"prompt": prompt} if prompt else {})
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    assert info.value.field == field and "no answer after them" in info.value.problem, str(info.value)
    assert "share no" not in info.value.problem, str(info.value)
