"""Preference records and files: TRL forms load, bad rows are named, nothing half-written."""

import json

import msgspec
import pytest

from pluralign.data.io import read_preferences, write_jsonl, write_parquet
from pluralign.data.record import Preference, PreferenceError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plain_and_conversational_trl_rows_load(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            json.dumps({"user_id": "u1", "prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}),
            json.dumps(
                {
                    "user_id": 7,
                    "prompt": [{"role": "user", "content": "Tea or coffee?"}],
                    "chosen": [{"role": "assistant", "content": "Tea."}],
                    "rejected": [{"role": "assistant", "content": "Coffee."}],
                    "attributes": {"segment": "b"},
                }
            ),
        ],
    )
    records, report = read_preferences(path)
    assert report.loaded == 2 and report.skipped == 0
    assert records[0] == Preference(user_id="u1", prompt="Hi?", chosen="Hello.", rejected="Go away.")
    assert records[1].user_id == "7" and records[1].prompt == "Tea or coffee?" and records[1].chosen == "Tea."
    assert records[1].attributes == {"segment": "b"}


@pytest.mark.parametrize(
    "line, field, words",
    [
        ('{"user_id": "u", "prompt": "p", "chosen": "c"', None, "malformed JSON"),
        ('{"user_id": "u", "prompt": "p", "chosen": "c"}', "rejected", "missing"),
        ('{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": 5}', "rejected", "string"),
        ('{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r", "tie": "yes"}', "tie", "true or false"),
        ('{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r", "colour": 1}', "colour", "unknown"),
        ('{"user_id": "", "prompt": "p", "chosen": "c", "rejected": "r"}', None, "empty"),
        ("[1, 2]", None, "JSON object"),
    ],
)
def test_bad_row_names_line_and_field_and_loads_nothing(tmp_path, line, field, words):
    good = '{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r"}'
    path = write_lines(tmp_path / "bad.jsonl", [good, line, good])
    with pytest.raises(PreferenceError) as info:
        read_preferences(path)
    assert info.value.line == 2
    if field:
        assert info.value.field == field
    assert words.lower() in str(info.value).lower()
    assert str(info.value).startswith(f"{path}: line 2")  # the file too (break session 19)


def test_skip_bad_reports_how_many(tmp_path):
    good = '{"user_id": "u", "prompt": "p", "chosen": "c", "rejected": "r"}'
    path = write_lines(tmp_path / "mixed.jsonl", [good, "{oops", '{"user_id": "u"}', good])
    records, report = read_preferences(path, skip_bad=True)
    assert len(records) == 2 and report.skipped == 2
    assert report.errors[0].startswith("line 2")


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(PreferenceError, match="no preference rows"):
        read_preferences(path)


def test_jsonl_and_parquet_round_trip(tmp_path):
    records = [
        Preference(user_id="a", prompt="p", chosen="c", rejected="r", margin=0.5, attributes={"g": "x"}),
        Preference(user_id="b", prompt="p2", chosen="c2", rejected="r2", tie=True, created_at=1.5),
    ]
    for name, write in (("out.jsonl", write_jsonl), ("out.parquet", write_parquet)):
        assert write(records, tmp_path / name) == 2
        loaded, _ = read_preferences(tmp_path / name)
        assert loaded == records
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "keep.jsonl"
    write_jsonl([Preference(user_id="a", prompt="p", chosen="c", rejected="r")], path)
    before = path.read_bytes()

    def exploding():
        yield Preference(user_id="b", prompt="p", chosen="c", rejected="r")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(exploding(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.jsonl"]


def test_record_rejects_unknown_fields_on_the_wire():
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"user_id":"u","prompt":"p","chosen":"c","rejected":"r","x":1}', type=Preference)
