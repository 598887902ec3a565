"""newlib56: what a new user of the `pluralign` CLI met, driven as they ran it (in-process CLI, tests/unit/clitools.py)."""

from __future__ import annotations

import json

import datasets

from tests.unit.clitools import cli


def _rows_with_a_user_left_unnamed() -> list[dict]:
    rows = [{"user_id": user, "prompt": f"When shall we meet, option {i}?", "chosen": f"At {i}.", "rejected": f"Never, {i}."}
            for user in ("ann", "bob") for i in range(3)]
    rows[0]["user_id"] = None  # a TRL dataset with a user_id column where one row names no user
    return rows


def test_a_null_user_id_written_by_datasets_to_json_is_the_user_option_s_as_in_parquet(capsys, tmp_path):
    """`datasets.Dataset.to_json` writes a row's missing user_id as `"user_id": null`; `--user NAME` (rows without
    `user_id`) took the same rows from `to_parquet` but refused the JSON lines, "line 1, field `user_id`: Expected `str`,
    got `null` (--skip-bad skips bad rows)", pointing at --skip-bad and not --user. Without --user both name --user."""
    dataset = datasets.Dataset.from_list(_rows_with_a_user_left_unnamed())
    jsonl, parquet = tmp_path / "prefs with ü.jsonl", tmp_path / "prefs with ü.parquet"
    dataset.to_json(str(jsonl))
    dataset.to_parquet(str(parquet))
    assert '"user_id":null' in jsonl.read_text().splitlines()[0]
    for path in (jsonl, parquet):
        code, out, err = cli(capsys, "data", "stats", "--source", "file", "--path", str(path), "--user", "carol", "--json")
        assert (code, err) == (0, ""), (path.suffix, err)
        assert json.loads(out.strip().splitlines()[-1])["users"] == 3, path.suffix  # carol, ann, bob
        code, out, err = cli(capsys, "data", "stats", "--source", "file", "--path", str(path), "--json")
        assert code == 2 and "field `user_id`: missing required field" in err and "--user NAME" in err, (path.suffix, err)
