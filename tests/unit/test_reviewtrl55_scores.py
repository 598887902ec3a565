"""Review of session trl55 (a score is a number, a rating a number or a list of numbers), through `pluralign data
export` as a user runs it (the CLI in-process)."""

from __future__ import annotations

import json

import pytest

from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


@pytest.mark.parametrize("column", ["score_chosen", "score_rejected"])
def test_a_parquet_export_of_a_score_past_64_bits_names_a_way_out_that_reads(tmp_path, capsys, column):
    """Before: "give them as strings", and a score given as a string is a bad row since session trl55."""
    value, way_out = 2**70, float(2**70)
    out = tmp_path / "prefs.parquet"
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", write_jsonl(tmp_path / "big.jsonl", [{**ROW, column: value}]),
                          "--out", str(out))
    assert code == 2 and f"column `{column}`" in stderr and "past 64 bits" in stderr, (code, stderr)
    assert "string" not in stderr and "1.2e21" in stderr, stderr
    assert not out.exists()
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", write_jsonl(tmp_path / "float.jsonl", [{**ROW, column: way_out}]),
                          "--out", str(out))
    assert code == 0 and out.exists(), (code, stderr)


@pytest.mark.parametrize("rating", [[[["n/a"]]], [4, [5, [6, "n/a"]]], [[[[True]]]]])
def test_a_rating_holding_other_than_numbers_however_deep_is_a_bad_row(tmp_path, capsys, rating):
    """A rating is a number or a list of numbers (docs/library.md): one holding text or a boolean past two lists deep
    was read (`extra_type_problem` looked no deeper than MAX_EXTRA_DEPTH) and written back, for the service's import to
    refuse it later. Now `line 1, field `chosen_rating`` where the file is read, nothing written."""
    out = tmp_path / "out.jsonl"
    path = write_jsonl(tmp_path / "prefs.jsonl", [{**ROW, "chosen_rating": rating}])
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", path, "--out", str(out))
    assert code == 2 and f"--path {path}: line 1, field `chosen_rating`: must be a number or a list of numbers" in stderr, (code, stderr)
    assert not out.exists()


def test_a_rating_of_numbers_in_lists_is_read_and_written_back(tmp_path, capsys):
    rows = [{**ROW, "chosen_rating": [4, [5.5, 6]], "rejected_rating": 2, "score_chosen": -0.5}]
    out = tmp_path / "out.jsonl"
    code, _, stderr = cli(capsys, "data", "export", "--source", "jsonl", "--path", write_jsonl(tmp_path / "prefs.jsonl", rows), "--out", str(out))
    assert code == 0, stderr
    (line,) = map(json.loads, out.read_text().splitlines())
    assert (line["chosen_rating"], line["rejected_rating"], line["score_chosen"]) == ([4, [5.5, 6]], 2, -0.5), line


def test_a_long_rating_is_checked_without_python_work_per_number():
    """An import's body is read holding the interpreter lock, while other tenants' requests wait (session perf36). A
    1 MB line whose rating holds 450,000 numbers (the service refuses it past 1024 bytes only once it is read) took
    ~275 ms more to read once session trl55 checked every number with a Python call (`_number`: about twice the read before
    it); now a list of plain numbers is told by their types in C. Counted in Python calls, not timed (2 busy cores):
    before, one a number (150,000 here); now a handful a line."""
    import sys

    from pluralign.data.io import read_preference_lines

    raw = json.dumps({**ROW, "chosen_rating": [4, 5.5] * 50_000, "rejected_rating": [[1] * 50_000, 2]}).encode()
    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        (record,), _ = read_preference_lines([raw])
    finally:
        sys.setprofile(None)
    assert len(record.trl.extra["chosen_rating"]) == 100_000
    assert calls < 1_000, calls
