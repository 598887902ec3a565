"""Review late55a: a Parquet file whose numbers are Arrow decimals (`decimal128`, `decimal256`: what a SQL engine or a
pandas column of `decimal.Decimal` writes for a `NUMERIC` score) read as the numbers they hold, through `pluralign
data export` as a user runs it (the CLI in-process) and `read_rows` on a pyarrow Table."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from pluralign.data.io import read_rows
from tests.unit.clitools import cli


def decimal_table() -> pa.Table:
    return pa.table({
        "user_id": ["ann", "ann"], "prompt": ["Tea?", "Milk?"], "chosen": ["Yes.", "Yes."], "rejected": ["No.", "No."],
        "score_chosen": pa.array([Decimal("8.50"), Decimal("7.25")], pa.decimal128(5, 2)),
        "score_rejected": pa.array([Decimal("-2"), None], pa.decimal256(40, 0)),
        "chosen_rating": pa.array([[Decimal("4.0"), Decimal("5.5")], None], pa.list_(pa.decimal128(3, 1))),
        "margin": pa.array([Decimal("0.5"), Decimal("1.0")], pa.decimal128(3, 1)),
        "created_at": pa.array([Decimal("1700000000.5"), Decimal("1700000001.0")], pa.decimal128(12, 1)),
    })


def test_a_parquet_file_of_decimal_scores_margins_and_times_exports_their_numbers(tmp_path, capsys):
    """Before: `row 1, field `score_chosen`: must be a number ..., got Decimal('8.50')`, nothing written (and a decimal
    `created_at` alone: 'must be a Unix time in seconds ..., got Decimal('1700000000.5')'; a margin was read)."""
    path, out = tmp_path / "decimals.parquet", tmp_path / "out.jsonl"
    pq.write_table(decimal_table(), path)
    code, _, stderr = cli(capsys, "data", "export", "--source", "parquet", "--path", str(path), "--out", str(out))
    assert code == 0, stderr
    first, second = map(json.loads, out.read_text().splitlines())
    assert (first["score_chosen"], first["score_rejected"], first["chosen_rating"]) == (8.5, -2, [4, 5.5]), first
    assert (first["margin"], first["created_at"], second["margin"], second["created_at"]) == (0.5, 1700000000.5, 1.0, 1700000001.0)
    assert second["score_chosen"] == 7.25 and second.get("score_rejected") is None, second


def test_rows_of_a_pyarrow_table_with_decimals_read_as_numbers():
    (first, second), _ = read_rows(decimal_table())
    assert first.trl.extra["score_chosen"] == 8.5 and type(first.trl.extra["score_chosen"]) is float
    assert first.margin == 0.5 and second.created_at == 1700000001.0
