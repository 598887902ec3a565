"""Data session 36: a conversational row's message with a key other than `role` and `content`, through
the real `pluralign` command (every command reads preference files with the library's readers)."""

from __future__ import annotations

import json

from pluralign.data.io import read_rows
from pluralign.data.record import PreferenceError
from tests.unit.test_newuser31_cli import one_error_line, pluralign


def conversation(answer: str, **extra) -> list[dict]:
    return [{"role": "user", "content": "Tea or coffee?"}, {"role": "assistant", "content": answer, **extra}]


def test_a_messages_unknown_key_is_a_cli_error_naming_its_path(tmp_path):
    """Before: exit 0, the row loaded and the key kept in `Preference.trl` (what the service then dropped)."""
    good = {"user_id": "ann", "chosen": conversation("Tea."), "rejected": conversation("Coffee.")}
    bad = {"user_id": "ann", "chosen": conversation("Tea.", foo=1), "rejected": conversation("Coffee.")}
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    line = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path)))
    assert f"{path}: line 2, field `chosen[1].foo`: unknown field" in line, line
    assert "`role` and `content`" in line, line
    skipped = pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--skip-bad", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout.strip().splitlines()[-1])["pairs"] == 1, skipped.stdout
    assert "skipped 1 bad row" in skipped.stderr and "`chosen[1].foo`" in skipped.stderr, skipped.stderr


def test_the_library_refuses_a_messages_unknown_key_and_a_role_that_is_not_text():
    rows = [{"user_id": "ann", "prompt": [{"role": "user", "content": "Tea?", "k" * 500: 1}],
             "chosen": "Tea.", "rejected": "Coffee."}]
    try:
        read_rows(rows)
    except PreferenceError as exc:
        assert exc.field.startswith("prompt[0].kkk") and exc.problem.startswith("unknown field"), exc
        assert len(str(exc)) < 300, str(exc)  # the key is cut, as a row's own unknown key
    else:
        raise AssertionError("accepted")
    rows = [{"user_id": "ann", "chosen": conversation("Tea."), "rejected": [{"role": 7, "content": "Tea or coffee?"}, {"role": "assistant", "content": "No."}]}]
    try:
        read_rows(rows)
    except PreferenceError as exc:
        assert exc.field == "rejected[0].role", exc
    else:
        raise AssertionError("accepted")
