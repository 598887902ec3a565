"""An error about a bad row of a Parquet preference file names its row ("row 2"), one of a JSON-lines
file its line ("line 2"): `pluralign data stats` (every command reading a preference file reads it so),
`--skip-bad`'s count, and the library's `read_preferences` / `read_rows`. Before: "line 2" for both.
The import's refusals by the service: tests/service/test_break25b_import_lines.py."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pluralign.data.io import read_preferences, read_rows
from pluralign.data.record import PreferenceError
from tests.unit.clitools import cli

ROWS = [{"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."},
        {"user_id": "ann", "prompt": "Coffee?", "chosen": "Yes."},  # no `rejected`
        {"user_id": "ann", "prompt": "Water?", "chosen": "Yes.", "rejected": "No."}]


def write(tmp_path, form: str):
    path = tmp_path / f"prefs.{form}"
    if form == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize(("form", "unit"), [("parquet", "row"), ("jsonl", "line")])
def test_the_cli_names_a_bad_row_by_row_in_parquet_and_by_line_in_json_lines(capsys, tmp_path, form, unit):
    path = write(tmp_path, form)
    code, _, err = cli(capsys, "data", "stats", "--source", form, "--path", str(path), "--json")
    assert code == 2 and f"--path {path}: {unit} 2, field `rejected`: missing required field" in err, err
    code, out, err = cli(capsys, "data", "stats", "--source", form, "--path", str(path), "--json", "--skip-bad")
    assert code == 0 and f"skipped 1 bad row (--skip-bad); first: {unit} 2, field `rejected`" in err, err
    other = {"row": "line", "line": "row"}[unit]
    assert f"{other} 2" not in err


def test_the_library_says_row_for_parquet_and_rows_in_memory(tmp_path):
    for reader, unit in ((lambda: read_preferences(write(tmp_path, "parquet")), "row"), (lambda: read_rows(ROWS), "row"),
                         (lambda: read_preferences(write(tmp_path, "jsonl")), "line")):
        with pytest.raises(PreferenceError) as caught:
            reader()
        assert f"{unit} 2, field `rejected`" in str(caught.value)
    records, report = read_preferences(write(tmp_path, "parquet"), skip_bad=True)
    assert (len(records), report.lines, report.unit, report.errors[0][:5]) == (2, [1, 3], "row", "row 2")
