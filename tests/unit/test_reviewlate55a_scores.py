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
