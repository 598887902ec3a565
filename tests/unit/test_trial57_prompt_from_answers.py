"""Session trial57: a text `prompt` beside conversations that open with it (HuggingFaceH4/ultrafeedback_binarized's
layout) is read as TRL's `maybe_extract_prompt` reads it, through the library's readers and writers."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import file_trl, read_preferences, write_jsonl, write_parquet
from pluralign.data.record import PreferenceError, TrlRow

ASK = {"role": "user", "content": "Tea or coffee?"}
ROW = {"prompt": "Tea or coffee?", "chosen": [ASK, {"role": "assistant", "content": "Tea."}],
       "rejected": [ASK, {"role": "assistant", "content": "Coffee."}], "score_chosen": 9.0, "user_id": "ann"}


def test_a_text_prompt_beside_conversations_holding_it_reads_as_trl_reads_it_and_writes_back_as_it_came(tmp_path):
    path = tmp_path / "h4.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    records, _ = read_preferences(path)  # before: PreferenceError naming `prompt`
    assert [(r.prompt, r.chosen, r.rejected) for r in records] == [("Tea or coffee?", "Tea.", "Coffee.")]
    for name, write in (("out.jsonl", write_jsonl), ("out.parquet", write_parquet)):
        write(records, tmp_path / name)
        again, _ = read_preferences(tmp_path / name)
        assert again == records, name  # lossless through either file
    written = json.loads((tmp_path / "out.jsonl").read_text())
    assert {k: written[k] for k in ROW} == ROW  # the form it came in


def test_a_text_prompt_beside_answers_sharing_no_turn_is_still_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({**ROW, "chosen": ROW["chosen"][1:], "rejected": ROW["rejected"][1:]}) + "\n")
    with pytest.raises(PreferenceError, match="give the prompt as messages too") as info:
        read_preferences(path)
    assert info.value.field == "prompt"


@pytest.mark.parametrize("column", ["messages", "text", "completion", "label"])
def test_another_trl_types_column_beside_a_preference_is_named_for_what_it_is(tmp_path, column):
    path = tmp_path / "extra.jsonl"
    path.write_text(json.dumps({**ROW, column: ROW["chosen"]}) + "\n")
    with pytest.raises(PreferenceError, match=rf"remove_columns\(\['{column}'\]\)") as info:
        read_preferences(path)
    assert info.value.field == column


def test_such_a_row_an_older_release_stored_as_whole_conversations_still_exports_in_the_conversational_form():
    """Before session trl55 an import stored the layout with each whole conversation as the answer's text; its export
    stays the conversational form with that text (`file_trl`), so it imports into its user again as the row held. A
    row stored since is kept as it came."""
    trl = TrlRow(prompt=ROW["prompt"], chosen=ROW["chosen"], rejected=ROW["rejected"])
    old = file_trl(trl, "user: Tea or coffee?\nassistant: Tea.")
    assert old.prompt == [ASK] and old.chosen == ROW["chosen"], old
    assert file_trl(trl, "Tea.") == trl


@pytest.mark.parametrize(("row", "field", "said"), [
    ({"prompt": "p", "choosen": "a", "rejected": "b", "user_id": "u"}, "chosen", "the row has `choosen` (did you mean `chosen`?)"),
    ({"promt": "p", "chosen": "a", "rejected": "b", "user_id": "u"}, "prompt", "the row has `promt` (did you mean `prompt`?)"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "user": "u"}, "user_id", "the row has `user` (did you mean `user_id`?)"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "user_id": "u", "chosen-rating": 5}, "chosen-rating", "(did you mean `chosen_rating`?)"),
    ({"prompt": "p", "chosen": "a", "rejected": "b", "user_id": "u", "attribute": {"g": "x"}}, "attribute", "(did you mean `attributes`?)"),
])
def test_a_misspelt_column_is_named_with_the_one_meant(tmp_path, row, field, said):
    """A misspelt column of a preference file (`choosen`, `promt`; `user` as the chat API names the end user;
    `chosen-rating` as argilla's datasets spell it) was "missing required field" or "unknown field" alone."""
    path = tmp_path / "typo.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    assert info.value.field == field and said in str(info.value), str(info.value)


@pytest.mark.parametrize("row", [ROW, {**ROW, "chosen": [{"role": "system", "content": "Be brief."}, *ROW["chosen"]],
                                       "rejected": [{"role": "system", "content": "Be brief."}, *ROW["rejected"]]}])
def test_the_typed_one_step_reading_reads_such_a_row_as_the_reference_does(row):
    """An import's lines are read in one typed decoding (`_line_record`) where they can be; such a row was left to the
    row-by-row reading (20,000 rows: 0.68 s CPU, now 0.28 s), which both must agree with."""
    from pluralign.data.io import _line_record, row_to_preference

    raw = json.dumps(row).encode()
    fast, reference = _line_record(raw, None), row_to_preference(json.loads(raw), 1)
    assert fast is not None and fast == reference, (fast, reference)
    shares_none = json.dumps({**row, "chosen": row["chosen"][-1:], "rejected": row["rejected"][-1:]}).encode()
    assert _line_record(shares_none, None) is None  # left to the reading that names the problem
