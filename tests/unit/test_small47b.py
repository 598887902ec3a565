"""Small library input checks a researcher's trial (trial47b) noticed and left alone (session small47b): each
argument that cannot mean what it claims is refused naming it, on tiny data, before anything is computed."""

from __future__ import annotations

import pytest

from pluralign.data.record import Preference

ROW = dict(user_id="ann", prompt="p", chosen="c", rejected="r")


@pytest.mark.parametrize("created_at", [-5, -0.5, 1e300, 1.7e12, float("nan"), float("inf")])
def test_a_preference_refuses_a_created_at_that_is_no_unix_time_in_seconds(created_at, tmp_path):
    # before: -5, 1e300 and 1.7e12 (milliseconds) were kept, and write_jsonl wrote a file read_jsonl refuses
    with pytest.raises(ValueError, match=r"`created_at` must be a Unix time in seconds"):
        Preference(**ROW, created_at=created_at)


def test_a_preference_keeps_a_time_a_file_takes_and_a_same_answer_tie(tmp_path):
    from pluralign.data.io import read_preferences, write_jsonl

    records = [Preference(**ROW, created_at=0), Preference(**ROW, created_at=1.7e9), Preference(**ROW, created_at=253402300799.0)]
    write_jsonl(records, tmp_path / "p.jsonl")
    assert [r.created_at for r in read_preferences(tmp_path / "p.jsonl")[0]] == [0, 1.7e9, 253402300799.0]
    assert Preference(**{**ROW, "rejected": "c"}, tie=True, created_at=1.7e9).rejected == "c"  # UKP's same-argument tie
