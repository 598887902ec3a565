"""left57: an audit's `since` given as a date written in digits (`date +%Y%m%d`: 20260101) was read as Unix seconds,
1970-08-23, and `pluralign audit --since 20260101` silently scored every comparison; one written YYYYMMDDhhmmss was
told to divide it by 1000, as if in milliseconds. Now a usage error naming --since with the date's seconds."""

from __future__ import annotations

import pytest

from tests.unit.clitools import cli


@pytest.mark.parametrize("since, shown", [("20260101", "the date 2026-01-01 written YYYYMMDD"),
                                          ("202601011230", "the date 2026-01-01 12:30:00 written YYYYMMDDhhmm"),
                                          ("20260101123000", "the date 2026-01-01 12:30:00 written YYYYMMDDhhmmss")])
def test_an_audits_since_written_as_a_date_in_digits_is_a_usage_error_with_its_seconds(capsys, since, shown):
    code, out, err = cli(capsys, "audit", "--data", "p.jsonl", "--group-by", "segment", "--since", since)
    assert code == 2 and not out and "argument --since:" in err and shown in err, err
    seconds = "1767225600.0" if since == "20260101" else "1767270600.0"
    assert f"give its Unix time, {seconds} for this one read as UTC" in err and "divide by" not in err, err


@pytest.mark.parametrize("number", [20260101.5, 1767225600, 10000000, 20261301, 19691231, 2026010112, True])
def test_a_number_that_spells_no_date_in_digits_is_none(number):
    """A fraction, a time in seconds, no month 13, a year before 1970, 10 digits, a bool: read as the number it is."""
    from pluralign.data.record import digits_date

    assert digits_date(number) is None
