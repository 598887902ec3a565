"""Session 58 (hints58): a preference row's `created_at` written as a date in digits (20260101, `date +%Y%m%d`) is a
bad row naming it and giving the date's seconds, as an audit's `since` is refused (one check: `digits_date_problem`);
it was read as seconds (20260101: 1970-08-23)."""

from __future__ import annotations

import pytest

from pluralign.data.io import read_preferences
from pluralign.data.record import PreferenceError
from tests.unit.clitools import cli, write_jsonl

ROW = {"user_id": "ann", "prompt": "Colour?", "chosen": "Red.", "rejected": "Blue."}
DATED = [
    (20260101, "20260101 as seconds is 1970-08-23T11:48:21 UTC (the date 2026-01-01 written YYYYMMDD? give its Unix time, "
               "1767225600.0 for this one read as UTC)"),
    (202601011230, "202601011230 as seconds is 8390-03-04T02:40:30 UTC (the date 2026-01-01 12:30:00 written YYYYMMDDhhmm? "
                   "give its Unix time, 1767270600.0 for this one read as UTC)"),
]


@pytest.mark.parametrize(("created_at", "said"), DATED)
def test_a_created_at_written_as_a_date_in_digits_is_a_bad_row_naming_it(tmp_path, created_at, said):
    """Before: read as seconds, stored as 1970-08-23 (and, 12 digits, a time after the year 8200)."""
    path = write_jsonl(tmp_path / "prefs.jsonl", [{**ROW, "created_at": 1_767_225_600}, {**ROW, "created_at": created_at}])
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    assert info.value.field == "created_at" and info.value.line == 2, str(info.value)
    assert info.value.problem == f"must be a Unix time in seconds, not a date written in digits: {said}", info.value.problem


def test_fourteen_digits_are_told_the_date_not_milliseconds(tmp_path):
    """20260101123000 (`date +%Y%m%d%H%M%S`) is past the end of year 9999 in seconds: refused before too, but told
    "milliseconds? divide by 1000: 20260101123.0", a time in 2611."""
    path = write_jsonl(tmp_path / "prefs.jsonl", [{**ROW, "created_at": 20260101123000}])
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    assert info.value.field == "created_at" and "divide" not in info.value.problem, info.value.problem
    assert info.value.problem.endswith("got 20260101123000 (the date 2026-01-01 12:30:00 written YYYYMMDDhhmmss? give its Unix "
                                       "time, 1767270600.0 for this one read as UTC)"), info.value.problem


def test_data_export_of_a_file_with_a_date_in_digits_is_a_usage_error(tmp_path, capsys):
    path = write_jsonl(tmp_path / "prefs.jsonl", [{**ROW, "created_at": 20260101}])
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(path), "--out", str(tmp_path / "out.jsonl"))
    assert code == 2, (out, err)
    assert err.strip() == (f"pluralign: error: --path {path}: line 1, field `created_at`: must be a Unix time in seconds, not a "
                           f"date written in digits: {DATED[0][1]} (--skip-bad skips bad rows)"), err
    assert not (tmp_path / "out.jsonl").exists()
    path = write_jsonl(tmp_path / "both.jsonl", [{**ROW, "created_at": 20260101}, {**ROW, "created_at": 1_767_225_600}])
    code, out, err = cli(capsys, "data", "export", "--source", "jsonl", "--path", str(path), "--out", str(tmp_path / "out.jsonl"), "--skip-bad")
    assert code == 0 and '"created_at":1767225600' in (tmp_path / "out.jsonl").read_text(), (out, err)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_times_that_spell_no_date_are_read_as_seconds(tmp_path):
    """Other 8-digit numbers are no date (month 13, a year before 1970), and a real time is 10 digits."""
    rows = [{**ROW, "created_at": t} for t in (20261301, 19691231, 12345678, 1_767_225_600, 20260101.5)]
    records, _ = read_preferences(write_jsonl(tmp_path / "prefs.jsonl", rows))
    assert [r.created_at for r in records] == [20261301, 19691231, 12345678, 1_767_225_600, 20260101.5]
