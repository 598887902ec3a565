"""Session trial54: `pluralign data stats` without --json printed its table alone, where README says each command prints
a JSON summary as its last line and `eval` and `audit` do (their --json prints the JSON line alone): a script's
`pluralign data stats ... | tail -1 | jq .pairs` read `ties  0`."""

from __future__ import annotations

import json

from tests.unit.clitools import cli, write_jsonl

ROWS = [{"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."},
        {"user_id": "bo", "prompt": "Tea?", "chosen": "No.", "rejected": "Yes.", "tie": True}]


def test_data_stats_ends_with_its_json_summary(tmp_path, capsys):
    path = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path)
    assert code == 0, err
    *table, last = out.strip().splitlines()
    summary = {"source": "jsonl", "pairs": 2, "judgments": 2, "users": 2, "ties": 1}
    assert json.loads(last) == summary, out
    assert [line.split() for line in table] == [[k, str(v)] for k, v in summary.items()], out  # the table first, as before
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", path, "--json")
    assert code == 0 and json.loads(out) == summary, out  # --json: the JSON line alone
