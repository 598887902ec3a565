"""newlib56: what a new user of the `pluralign` CLI met, driven as they ran it (in-process CLI, tests/unit/clitools.py)."""

from __future__ import annotations

import json

from tests.unit.clitools import cli


def _rows_with_a_user_left_unnamed() -> list[dict]:
    rows = [{"user_id": user, "prompt": f"When shall we meet, option {i}?", "chosen": f"At {i}.", "rejected": f"Never, {i}."}
            for user in ("ann", "bob") for i in range(3)]
    rows[0]["user_id"] = None  # a TRL dataset with a user_id column where one row names no user
    return rows


def test_a_null_user_id_written_by_datasets_to_json_is_the_user_option_s_as_in_parquet(capsys, tmp_path, hf):
    """`datasets.Dataset.to_json` writes a row's missing user_id as `"user_id": null`; `--user NAME` (rows without
    `user_id`) took the same rows from `to_parquet` but refused the JSON lines, "line 1, field `user_id`: Expected `str`,
    got `null` (--skip-bad skips bad rows)", pointing at --skip-bad and not --user. Without --user both name --user."""
    jsonl, parquet = tmp_path / "prefs with ü.jsonl", tmp_path / "prefs with ü.parquet"
    hf.run("ds = datasets.Dataset.from_list(rows)\nds.to_json(jsonl)\nds.to_parquet(parquet)",  # in its own process
           rows=_rows_with_a_user_left_unnamed(), jsonl=str(jsonl), parquet=str(parquet))
    assert '"user_id":null' in jsonl.read_text().splitlines()[0]
    for path in (jsonl, parquet):
        code, out, err = cli(capsys, "data", "stats", "--source", "file", "--path", str(path), "--user", "carol", "--json")
        assert (code, err) == (0, ""), (path.suffix, err)
        assert json.loads(out.strip().splitlines()[-1])["users"] == 3, path.suffix  # carol, ann, bob
        code, out, err = cli(capsys, "data", "stats", "--source", "file", "--path", str(path), "--json")
        assert code == 2 and "field `user_id`: missing required field" in err and "--user NAME" in err, (path.suffix, err)


def test_a_preference_table_pandas_wrote_as_csv_or_as_json_of_columns_is_named_for_what_it_is(capsys, tmp_path):
    """pandas' to_csv and its default to_json (orient='columns': one object of columns) are how a DataFrame is saved
    first. The CSV was 'line 1: malformed JSON (JSON is malformed: invalid character (byte 0)) (--skip-bad skips bad
    rows)', the JSON 'line 1, field `prompt`: expected a string or a non-empty list of messages (--skip-bad ...)', as if
    one row were bad; --skip-bad then skipped the whole file. Each now says what the file is and how pandas writes
    JSON lines, without the --skip-bad hint. orient='index' and 'split' likewise."""
    import pandas as pd

    frame = pd.DataFrame([{"user_id": user, "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": "Coffee, please."}
                          for user in ("ann", "bob") for i in range(3)])
    frame.to_csv(csv := tmp_path / "prefs ü.csv", index=False)
    frame.to_json(columns := tmp_path / "columns.json")
    frame.to_json(index := tmp_path / "index.json", orient="index")
    frame.to_json(split := tmp_path / "split.json", orient="split")
    wanted = {csv: "a CSV file", columns: "orient='columns'", index: "orient='index'", split: "orient='split'"}
    for path, named in wanted.items():
        code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(path), "--json")
        assert code == 2 and named in err and "orient='records', lines=True" in err, (path.name, err)
        assert "--skip-bad" not in err, (path.name, err)
    frame.to_json(lines := tmp_path / "lines.jsonl", orient="records", lines=True)  # what the message says to write
    code, out, err = cli(capsys, "data", "stats", "--source", "jsonl", "--path", str(lines), "--json")
    assert (code, json.loads(out.strip().splitlines()[-1])["pairs"]) == (0, 6), err


def test_user_ids_pandas_made_floats_are_named_with_how_to_keep_them_whole(capsys, tmp_path):
    """A DataFrame's int user_id column holding one missing id is float64 (0.0, 1.0, NaN): its Parquet file was refused
    'row 2, field `user_id`: Expected `str`, got `float`', not saying where the float came from nor how to keep the ids
    whole. The missing id is --user's, as a null is."""
    import pandas as pd

    frame = pd.DataFrame([{"user_id": u, "prompt": f"Tea or coffee, {i}?", "chosen": "Tea.", "rejected": "Coffee, please."}
                          for u in (1, 2) for i in range(3)])
    frame.loc[0, "user_id"] = None
    assert str(frame["user_id"].dtype) == "float64"
    frame.to_parquet(floats := tmp_path / "float ids.parquet")
    code, out, err = cli(capsys, "data", "stats", "--source", "parquet", "--path", str(floats), "--user", "carol", "--json")
    assert code == 2 and "row 2, field `user_id`: a float, 1.0" in err and "astype('Int64')" in err, err
    frame["user_id"] = frame["user_id"].astype("Int64")  # what the message says to do
    frame.to_parquet(whole := tmp_path / "whole ids.parquet")
    code, out, err = cli(capsys, "data", "stats", "--source", "parquet", "--path", str(whole), "--user", "carol", "--json")
    assert (code, json.loads(out.strip().splitlines()[-1])["users"]) == (0, 3), err
