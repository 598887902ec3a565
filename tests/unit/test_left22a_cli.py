"""Session 22a, crash-safety leftovers at the command line: bad timestamps in imported files,
`pluralign serve` with a data folder it cannot use, trainers' saves that a kill or a second
trainer could leave half done."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
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



def serve(tmp_path, data) -> subprocess.CompletedProcess:
    env = dict(os.environ, PLURALIGN_DATA_DIR=str(data), PLURALIGN_SHARED_DATA=str(tmp_path / "no-shared-data"))
    return subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_serve_on_a_file_as_data_folder_is_one_line_naming_the_setting(tmp_path):
    """Before: `pluralign: error: File exists: <path>`, which named neither PLURALIGN_DATA_DIR nor
    what was wrong with the path."""
    data = tmp_path / "data"
    data.write_text("not a folder")
    result = serve(tmp_path, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"pluralign: error: PLURALIGN_DATA_DIR (setting data_dir) {data}: {data} is a file, not a folder"
    assert "development API key" not in result.stderr


def test_serve_on_a_damaged_data_folder_prints_no_key_and_issues_none(tmp_path):
    """A first start (no key yet) over a data folder whose jobs/promotions.json is damaged. Before:
    the development key was issued into api_keys.json and printed, then the models loaded (~30 s),
    then `pluralign: error: .../promotions.json: not a promotions file`: the service never ran, and
    the next start, once the file was mended, printed no key (one was stored)."""
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    (data / "jobs" / "promotions.json").write_text("{")
    result = serve(tmp_path, data)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "development API key" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("pluralign: error:")]
    assert error.startswith(f"pluralign: error: {data / 'jobs' / 'promotions.json'}: not a promotions file")
    assert not (data / "api_keys.json").exists()
