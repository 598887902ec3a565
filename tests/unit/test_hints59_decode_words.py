"""Session 59 (hints59): msgspec's wording (`Expected `float | null`, got `str``, `Expected `int` >= 1`, `$[...]`
paths) no longer reaches users: a preference file's bad row, read by the CLI (and the service's import, which reads
it the same way), names the field and says the problem in our words (`pluralign.data.decode_words`)."""

from __future__ import annotations

import json

import pytest

from pluralign.data.decode_words import in_our_words, validation_problem
from tests.unit.clitools import cli

ROW = {"prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "user_id": "ann"}


@pytest.mark.parametrize("extra, field, said", [
    ({"margin": "0.5"}, "margin", "must be a number or null, not text"),
    ({"tie": "yes"}, "tie", "must be true or false, not text"),
    ({"source": 3}, "source", "must be text or null, not an integer"),
])
def test_a_bad_row_of_a_preference_file_is_said_in_our_words(capsys, tmp_path, extra, field, said):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, **extra}) + "\n")
    code, _, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(path), "--out", str(tmp_path / "out.jsonl"))
    line = err.strip().splitlines()[-1]
    assert code == 2 and f"line 2, field `{field}`: {said}" in line, line
    assert "Expected" not in line and "`$" not in line, line



@pytest.mark.parametrize("message, field, said", [
    ("Expected `int | null`, got `str` - at `$.max_tokens`", "max_tokens", "must be an integer or null, not text"),
    ("Expected `str`, got `int` - at `$[0].user`", "[0].user", "must be text, not an integer"),
    ("Expected `int` >= 1 - at `$.params.k`", "params.k", "must be at least 1"),
    ("Expected `float` < 1.0 - at `$.p`", "p", "must be less than 1.0"),
    ("Expected `str` of length >= 1 - at `$.name`", "name", "must be at least 1 character long"),
    ("Expected `str` of length <= 64 - at `$.name`", "name", "must be at most 64 characters long"),
    ("Expected `array` of length <= 16 - at `$.pool`", "pool", "must hold at most 16 items"),
    ("Expected `object` of length >= 1 - at `$.preferences`", "preferences", "must hold at least 1 key"),
    ("Number out of range - at `$.temperature`", "temperature", "a number out of range: no 64-bit integer or float holds it"),
    ("Object missing required field `model`", "model", "missing required field"),
    ("Object contains unknown field `top_k` - at `$.pluralign`", "pluralign.top_k", "unknown field"),
    ("Invalid enum value 'hex' - at `$.encoding_format`", "encoding_format", "'hex' is not one of the values this field takes"),
    ("Expected `str`, got `int` - at `key` in `$.attributes`", "attributes", "a key: must be text, not an integer"),
    ("Expected `object`, got `array`", "", "must be an object, not a list"),
])
def test_msgspec_s_messages_in_our_words(message, field, said):
    assert validation_problem(message) == (field, said)


def test_a_message_of_another_form_is_kept():
    assert in_our_words("Invalid RFC3339 encoded datetime") == "Invalid RFC3339 encoded datetime"
