"""Session rows42: a preference row's `created_at` is a Unix time in seconds from 1970 to the end of year 9999
(`pluralign.data.record.MAX_CREATED_AT`), and a conversational row's message `role` one of the chat route's;
refused, with the line and the field named, by the library's readers and the `pluralign` commands alike
(the import route: tests/service/test_data36_messages.py)."""

from __future__ import annotations

import datetime
import json
import typing

import pytest

from pluralign.data.io import MESSAGE_ROLES, read_rows
from pluralign.data.record import MAX_CREATED_AT, PreferenceError
from tests.unit.clitools import cli

ROW = {"user_id": "ann", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


def conversation(answer: str, role: str = "assistant") -> list[dict]:
    return [{"role": "user", "content": "Tea or coffee?"}, {"role": role, "content": answer}]


@pytest.mark.parametrize(("created_at", "hint"), [
    (-5, ""), (1e300, ""), (MAX_CREATED_AT + 1, ""), (1.7e12, "milliseconds? divide by 1000"),
    ("2024-05-01T12:00:00Z", "a date: give its Unix time"), (datetime.datetime(2024, 5, 1), "a date: give its Unix time"), (True, ""),
])
def test_a_time_outside_unix_seconds_is_a_bad_row_naming_created_at(tmp_path, created_at, hint):
    """Before: -5 (1969), 1e300 and a time in milliseconds (year 55,000) loaded and were stored as they came;
    a date string was refused as "Expected `float | null`, got `str`", saying nothing of the form wanted."""
    with pytest.raises(PreferenceError) as caught:
        read_rows([ROW, {**ROW, "created_at": created_at}])
    assert (caught.value.line, caught.value.field) == (2, "created_at"), caught.value
    assert caught.value.problem.startswith("must be a Unix time in seconds"), caught.value
    assert hint in caught.value.problem, caught.value
    if isinstance(created_at, datetime.datetime):  # no JSON form
        return
    # a JSON line, read by its fast typed path first, names the same
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "created_at": created_at}) + "\n")
    from pluralign.data.io import read_preferences

    with pytest.raises(PreferenceError) as from_file:
        read_preferences(path)
    assert (from_file.value.line, from_file.value.field) == (2, "created_at"), from_file.value


def test_times_within_the_range_load():
    records, _ = read_rows([{**ROW, "created_at": 0}, {**ROW, "prompt": "Milk?", "created_at": MAX_CREATED_AT},
                            {**ROW, "prompt": "Sugar?", "created_at": 1_733_400_000.25}, {**ROW, "prompt": "Lemon?", "created_at": None}])
    assert [r.created_at for r in records] == [0, MAX_CREATED_AT, 1_733_400_000.25, None]


def test_a_messages_role_the_chat_route_refuses_is_a_bad_row_naming_it(tmp_path):
    """Before: `"role": "bot"` loaded and was stored as "bot: ..." text, a role POST /v1/chat/completions refuses."""
    rows = [{"user_id": "ann", "chosen": conversation("Tea."), "rejected": conversation("Coffee.")},
            {"user_id": "ann", "chosen": conversation("Tea.", role="bot"), "rejected": conversation("Coffee.", role="bot")}]
    with pytest.raises(PreferenceError) as caught:
        read_rows(rows)
    assert (caught.value.line, caught.value.field) == (2, "chosen[1].role"), caught.value
    assert "must be one of `system`, `developer`, `user`, `assistant`, `tool`" in caught.value.problem
    assert "got 'bot'" in caught.value.problem, caught.value


def test_a_bad_time_or_role_is_a_cli_error_naming_line_and_field(tmp_path, capsys):
    """`pluralign data import` (and every command reading a preference file) names the line and the field,
    before anything is sent: the URL here answers nothing."""
    for row, field in (({**ROW, "created_at": -5}, "created_at"),
                       ({"user_id": "ann", "chosen": conversation("Tea."), "rejected": conversation("No.", role="bot")}, "rejected[1].role")):
        path = tmp_path / "prefs.jsonl"
        path.write_text(json.dumps(ROW) + "\n" + json.dumps(row) + "\n")
        code, out, err = cli(capsys, "data", "import", "--source", "jsonl", "--path", str(path),
                             "--url", "http://127.0.0.1:9", "--key", "pk-unused")
        assert code == 2 and out == "", (code, out, err)
        assert f"{path}: line 2, field `{field}`: " in err, err


def test_the_roles_a_row_takes_are_the_chat_routes():
    from service.chat.schemas import ChatMessage

    # but the chat's deprecated `function` (a function's result, needing its `name`, which a row's message cannot carry)
    assert set(MESSAGE_ROLES) == set(typing.get_args(typing.get_type_hints(ChatMessage)["role"])) - {"function"}


@pytest.fixture
def new_york(monkeypatch):
    """The process's local time zone set to one that is not UTC (5 hours behind in May), then put back."""
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("created_at", ["2024-05-01", "2024-05-01T00:00:00", datetime.datetime(2024, 5, 1), datetime.date(2024, 5, 1)])
def test_a_dates_hint_gives_its_seconds_read_as_utc_whatever_the_machines_time_zone(new_york, created_at):
    """Review rows43. The hint for a date said "`datetime.fromisoformat(text).timestamp()`", which reads a date without
    a UTC offset in the machine's time zone: 2024-05-01 gave 1714536000 in New York, 1714521600 on a UTC machine.
    The hint gives the date's seconds read as UTC, and says so."""
    import calendar

    with pytest.raises(PreferenceError) as caught:
        read_rows([{**ROW, "created_at": created_at}])
    utc = float(calendar.timegm((2024, 5, 1, 0, 0, 0)))
    assert f"{utc!r} for this one read as UTC" in caught.value.problem, caught.value
    assert repr(datetime.datetime(2024, 5, 1).timestamp()) not in caught.value.problem  # New York's reading
    assert "timezone.utc" in caught.value.problem, caught.value


def test_a_dates_hint_with_an_offset_gives_its_own_seconds():
    with pytest.raises(PreferenceError) as caught:
        read_rows([{**ROW, "created_at": "2024-05-01T02:00:00+02:00"}])
    assert "1714521600.0 for this one" in caught.value.problem, caught.value
