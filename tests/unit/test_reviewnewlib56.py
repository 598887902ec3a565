"""reviewnewlib56: what newlib56's preference-file hints (pandas' whole-table JSON, CSV headers) misread, driven as a
user runs the `pluralign` commands (in-process CLI, tests/unit/clitools.py)."""

from __future__ import annotations

import json

from tests.unit.clitools import cli, write_jsonl

GOOD = [{"user_id": "ann", "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": "Coffee, please."} for i in range(3)]


def test_a_row_whose_answers_are_single_messages_is_a_bad_row_naming_chosen_not_a_pandas_table(capsys, tmp_path):
    """A conversational row whose chosen and rejected are one message object each, not a list of them (a common slip:
    TRL's form is a list), was named by newlib56's whole-table check as "one JSON object holding a whole table, as
    pandas' DataFrame.to_json writes it with orient='columns'" at line 4 of a file whose other rows read, without the
    --skip-bad hint. It is one bad row, named by its field as before newlib56."""
    slip = {"user_id": "ann", "prompt": [{"role": "user", "content": "Milk or lemon?"}],
            "chosen": {"role": "assistant", "content": "Lemon."}, "rejected": {"role": "assistant", "content": "Milk."}}
    path = write_jsonl(tmp_path / "chat prefs.jsonl", [*GOOD, slip])
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--json")
    assert code == 2, (code, out, err)
    assert "line 4, field `chosen`: expected a string or a non-empty list of messages" in err, err
    assert "pandas" not in err and "(--skip-bad skips bad rows)" in err, err
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--skip-bad", "--json")
    assert (code, json.loads(out.strip().splitlines()[-1])["pairs"]) == (0, 3), err
    assert "skipped 1 bad row" in err and "line 4, field `chosen`" in err, err
