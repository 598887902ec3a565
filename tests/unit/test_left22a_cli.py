"""Session 22a, crash-safety leftovers at the command line: bad timestamps in imported files,
`pluralign serve` with a data folder it cannot use, trainers' saves that a kill or a second
trainer could leave half done."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.unit.clitools import cli

ROW = {"user_id": "ann", "prompt": "Colour?", "chosen": "Red.", "rejected": "Blue."}


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_a_parquet_created_at_that_is_no_time_is_an_error_naming_the_row_and_field(tmp_path, capsys, when):
    """Before: `data export` of a Parquet file whose created_at is NaN exited 0 and wrote
    `"created_at":null` (inf: `"created_at":null` too), as if the row had no time."""
    path = tmp_path / "prefs.parquet"
    pq.write_table(pa.Table.from_pylist([{**ROW, "created_at": 1.7e9}, {**ROW, "created_at": when}]), path)
    code, out, err = cli(capsys, "data", "export", "--source", "parquet", "--path", str(path), "--out", str(tmp_path / "out.jsonl"))
    assert code == 2, (out, err)
    assert err.strip() == (f"pluralign: error: --path {path}: line 2, field `created_at`: must be a finite time "
                           f"(seconds since the epoch), got {when} (--skip-bad skips bad rows)")
    assert not (tmp_path / "out.jsonl").exists()

