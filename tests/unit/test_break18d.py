"""A hostile pass on today's fixes (break session 18d): a JSON line or file nested deeper than the
decoder goes was no error naming its line or file. A preference line nested thousands of levels deep
raised RecursionError out of the reader: `pluralign audit --data`, `data stats` and the trainers
printed a traceback, and POST /v1/users/{id}/import answered `body` (the generic handler's name),
not `line N` as for every other malformed line. `audit --user-groups` (read with `json.loads` since
its errors name lines) printed a traceback where its typed decode had been a one-line error."""

from __future__ import annotations

import json

import pytest

from pluralign.data.io import read_preference_lines
from pluralign.data.record import PreferenceError
from training.cli import main

OK = {"user_id": "u0", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee.", "attributes": {"g": "a"}}
DEPTH = 100_000


def deep_line() -> bytes:
    return b'{"user_id":"u1","prompt":"p","chosen":"a","rejected":"b","attributes":{"g":' + b"[" * DEPTH + b"]" * DEPTH + b"}}"


def cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_a_deeply_nested_line_is_malformed_json_naming_its_line():
    with pytest.raises(PreferenceError) as caught:
        read_preference_lines([json.dumps(OK).encode(), b"", deep_line()])
    assert caught.value.line == 3 and caught.value.field is None, caught.value
    assert caught.value.problem.startswith("malformed JSON") and "nested too deeply" in caught.value.problem, caught.value
    records, report = read_preference_lines([json.dumps(OK).encode(), deep_line()], skip_bad=True)
    assert len(records) == 1 and report.skipped == 1


def test_audit_data_nested_too_deeply_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    data.write_bytes(json.dumps(OK).encode() + b"\n" + deep_line() + b"\n")
    code, err = cli(capsys, "audit", "--data", str(data), "--group-by", "g")
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"pluralign: error: --data {data}: line 2: malformed JSON") and len(err.strip().splitlines()) == 1, err


def test_user_groups_nested_too_deeply_is_a_one_line_error(tmp_path, capsys):
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps(OK) + "\n")
    groups = tmp_path / "groups.json"
    groups.write_text('{"u0": ' + "[" * DEPTH + "]" * DEPTH + "}")
    code, err = cli(capsys, "audit", "--data", str(data), "--group-by", "g", "--user-groups", str(groups))
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"pluralign: error: --user-groups {groups}: ") and "nested too deeply" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_user_groups_over_json_loads_limits_is_an_error_naming_the_file(tmp_path, capsys):
    """An integer of 5,000 digits: json.loads raises a plain ValueError (not JSONDecodeError), which
    reached the user as 'pluralign: error: Exceeds the limit (4300 digits) ...' naming no file."""
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps(OK) + "\n")
    groups = tmp_path / "groups.json"
    groups.write_text('{"u0": ' + "1" * 5000 + "}")
    code, err = cli(capsys, "audit", "--data", str(data), "--group-by", "g", "--user-groups", str(groups))
    assert code == 2 and err.startswith(f"pluralign: error: --user-groups {groups}: malformed JSON"), err
