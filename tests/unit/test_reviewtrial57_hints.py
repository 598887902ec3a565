"""review trial57: the "did you mean" of a preference file's misspelt column names only a column close to it, and
repeats the client's key with its control and bidi characters escaped (library readers, as `pluralign data` reads)."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import read_preferences
from pluralign.data.record import PreferenceError

ROW = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user_id": "ann"}


def _error(tmp_path, row: dict) -> PreferenceError:
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    return info.value


@pytest.mark.parametrize(("row", "field", "hint"), [
    # a column's words in another order, or another case: the one meant (difflib named `chosen_model`, or none)
    ({**ROW, "chosen_score": 8}, "chosen_score", " (did you mean `score_chosen`?)"),
    ({**ROW, "rejected_score": 2}, "rejected_score", " (did you mean `score_rejected`?)"),
    ({k: v for k, v in ROW.items() if k != "user_id"} | {"USER_ID": "ann"}, "user_id", "; the row has `USER_ID` (did you mean `user_id`?)"),
    # far from every column: no hint (difflib named `tie`, `source`, and `user_id` for a `source_id`)
    ({**ROW, "title": "Tea"}, "title", ""),
    ({**ROW, "score": 8}, "score", ""),
    ({k: v for k, v in ROW.items() if k != "user_id"} | {"source_id": "s1"}, "user_id", ""),
])
def test_a_misspelt_column_is_hinted_only_with_a_column_close_to_it(tmp_path, row, field, hint):
    error = _error(tmp_path, row)
    assert error.field == field, str(error)
    assert ("did you mean" in error.problem) == bool(hint) and hint in error.problem, error.problem


@pytest.mark.parametrize(("key", "said"), [("chosen\x1b", "chosen\\x1b"), ("cho\u202esen", "cho\\u202esen"),
                                           ("chosen\n", "chosen\\n")])
def test_a_key_named_in_a_hint_has_its_controls_escaped(tmp_path, key, said):
    """A key close to the missing `chosen` is repeated in the hint: a terminal's escape sequence, a bidi override or
    a newline in it is written as its escape, as an error repeats any name a client chose (`controls_escaped`)."""
    error = _error(tmp_path, {"prompt": "Tea?", key: "Yes.", "rejected": "No.", "user_id": "ann"})
    assert error.field == "chosen" and f"the row has `{said}` (did you mean `chosen`?)" in str(error), str(error)
    assert key not in str(error), str(error)


@pytest.mark.parametrize(("key", "held"), [("user", "user_id"), ("chosen_text", "chosen"), ("attribute", "attributes")])
def test_an_unknown_column_is_not_hinted_with_one_the_row_already_holds(tmp_path, key, held):
    """`user` beside a `user_id` is no misspelt `user_id`: the hint named a column the row already holds."""
    error = _error(tmp_path, {**ROW, "attributes": {"g": "x"}, key: "x"})
    assert error.field == key and f"did you mean `{held}`" not in error.problem, error.problem


def test_a_user_column_beside_a_default_user_is_still_hinted_user_id(tmp_path):
    """The default user (`--user`, an import's path) fills `user_id` for a row without one: a `user` column is then
    still the misspelt `user_id`."""
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "Tea?", "chosen": "Yes.", "rejected": "No.", "user": "bob"}) + "\n")
    with pytest.raises(PreferenceError) as info:
        read_preferences(path, default_user="ann")
    assert info.value.field == "user" and "(did you mean `user_id`?)" in info.value.problem, str(info.value)


def test_a_row_of_thousands_of_keys_is_hinted_in_the_time_difflib_took(tmp_path):
    """A 260 kB row (the service takes 1 MB bodies) of 20,000 six-letter keys and no `chosen`: each key was matched
    with its own fuzzy pattern, 2.7 s of CPU to read the row holding the interpreter lock; one pattern matches them all
    (0.06 s; difflib's hint took about as long). The bound is CPU time, not wall time, 16 times that."""
    import time

    row = {"prompt": "Tea?", "rejected": "No.", "user_id": "ann", **{f"c{i:05d}": 0 for i in range(20_000)}}
    started = time.process_time()
    error = _error(tmp_path, row)
    assert time.process_time() - started < 1, "hinting a missing column took over 1 s of CPU"
    assert error.field == "chosen" and error.problem == "missing required field", str(error)
