"""Review late55a of review trl55 (a score or rating past 64 bits advised as a float), through `pluralign data export`
as a user runs it (the CLI in-process)."""

from __future__ import annotations

from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def test_a_parquet_export_of_a_rating_past_64_bits_names_a_way_out_that_reads(tmp_path, capsys):
    """Review trl55 changed the advice for `score_chosen`/`score_rejected` only: a rating past 64 bits was still told
    "give them as strings", and a rating given as a string is a bad row ("must be a number or a list of numbers")."""
    out = tmp_path / "prefs.parquet"
    path = write_jsonl(tmp_path / "big.jsonl", [{**ROW, "chosen_rating": 2**70}])
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", path, "--out", str(out))
    assert code == 2 and "column `chosen_rating`" in stderr and "past 64 bits" in stderr, (code, stderr)
    assert "string" not in stderr and "1.2e21" in stderr, stderr
    path = write_jsonl(tmp_path / "float.jsonl", [{**ROW, "chosen_rating": float(2**70)}])
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", path, "--out", str(out))
    assert code == 0 and out.exists(), (code, stderr)


def test_a_parquet_rating_holding_nan_is_a_bad_row_where_it_is_read_not_a_file_that_reads_back_as_one(tmp_path, capsys):
    """A Parquet file (pandas' NaN for a missing aspect) whose `chosen_rating` is [4.0, NaN]: a rating is a number or a
    list of numbers, and a JSON file holds no NaN. Before, the row was read (the rating check told a list by its
    items' types, and NaN is a float) and `data export` wrote `"chosen_rating": [4.0, null]`, which its own reader,
    and the service's import, then refused ("must be a number or a list of numbers"). A NaN score (a number alone,
    pandas' missing one) is still absent, written as null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, out = tmp_path / "nan.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.table({k: [v] for k, v in ROW.items()} | {"chosen_rating": [[4.0, float("nan")]]}), path)
    code, _, stderr = cli(capsys, "data", "export", "--source", "parquet", "--path", str(path), "--out", str(out))
    assert code == 2 and "row 1, field `chosen_rating`: must be a number or a list of numbers" in stderr, (code, stderr)
    assert not out.exists()
    pq.write_table(pa.table({k: [v] for k, v in ROW.items()} | {"chosen_rating": [[4.0, 5]], "score_chosen": [float("nan")]}), path)
    code, _, stderr = cli(capsys, "data", "export", "--source", "parquet", "--path", str(path), "--out", str(out))
    assert code == 0, stderr
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(out), "--out", str(tmp_path / "again.jsonl"))
    assert code == 0, stderr  # what it wrote reads back
