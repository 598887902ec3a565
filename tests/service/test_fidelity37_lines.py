"""Fidelity session 37: the import route and the `pluralign` commands split a file into the same JSON
lines, so an error names the same line in both: `\\n` ends a line, a `\\r` before it is tolerated (a file
written on Windows), and a lone `\\r` or a U+2028 / U+2029 / U+0085 separates nothing (JSON takes a `\\r`
as whitespace between tokens; the others are text inside a string). Before, the service split the body on
a lone `\\r` too (`bytes.splitlines`): a row with a `\\r` between its keys, which the CLI reads, was a 400,
and every later line's number was one past the CLI's."""

from __future__ import annotations

import json
import re

import pytest

from tests.service.tiny import field_named, start_service
from tests.unit.test_newuser31_cli import one_error_line, pluralign

GOOD = b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}'
BAD = b'{"prompt": "Tea?", "chosen": "Yes.", "rejected": "Yes."}'  # the same answer twice: `rejected`


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("f37-lines"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


BODIES = {
    # Windows line ends: the `\r` before each `\n` is whitespace at the end of its line
    "crlf": (GOOD + b"\r\n" + GOOD + b"\r\n\r\n" + BAD + b"\r\n", "line 4.rejected"),
    # a `\r` between a row's keys: one row (JSON's whitespace), not two halves of one
    "cr-inside-a-row": (b'{"prompt": "Tea?",\r "chosen": "Yes.", "rejected": "No."}\n' + GOOD + b"\n" + BAD + b"\n", "line 3.rejected"),
    # rows joined by a lone `\r` (classic Mac line ends): one line holding two objects
    "cr-between-rows": (GOOD + b"\r" + GOOD + b"\n" + BAD + b"\n", "line 1"),
    # line and paragraph separators, and NEL, inside strings: text, not line ends
    "unicode-separators": ('{"prompt": "Tea?\u2028", "chosen": "Yes.\u2029", "rejected": "No.\u0085"}\n'.encode() + GOOD + b"\n" + BAD,
                           "line 3.rejected"),
}


def cli_line(tmp_path, body: bytes) -> str:
    """The `line N` (and `.field`) the `pluralign data stats` error names for `body` as a file."""
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(body)
    error = one_error_line(pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", "ann"))
    (tmp_path / "error.txt").write_text(error)
    found = re.search(r"line (\d+)(?:, field `([^`]+)`)?", error)
    assert found, error
    return f"line {found[1]}" + (f".{found[2]}" if found[2] else "")


@pytest.mark.parametrize("case", list(BODIES))
def test_the_service_and_the_cli_name_the_same_line(svc, tmp_path, case):
    body, named = BODIES[case]
    assert cli_line(tmp_path, body) == named
    if case == "cr-between-rows":
        assert "lone carriage return (`\\r`, old Mac line ends)" in (tmp_path / "error.txt").read_text()
    with svc.client("acme") as c:
        r = c.post("/v1/users/f37-lines/import", content=body)
        assert r.status_code == 400, r.text
        assert field_named(r) == named, r.json()
        if case == "cr-between-rows":  # said so, the same words by both
            assert "lone carriage return" in r.json()["error"]["message"], r.json()
        assert c.get("/v1/users/f37-lines/preferences").json().get("total", 0) == 0


@pytest.mark.parametrize("case", [case for case, (_, named) in BODIES.items() if named != "line 1"])  # not the joined rows
def test_without_the_bad_row_both_read_the_same_rows(svc, tmp_path, case):
    body = BODIES[case][0].replace(BAD, b"")
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(body)
    stats = pluralign(tmp_path, "data", "stats", "--source", "jsonl", "--path", str(path), "--user", "ann", "--json")
    assert stats.returncode == 0, stats.stderr
    pairs = json.loads(stats.stdout.strip().splitlines()[-1])["pairs"]
    with svc.client("acme") as c:
        r = c.post(f"/v1/users/f37-ok-{case}/import", content=body)
        assert r.status_code == 201, r.text
        assert len(r.json()["stored"]) == pairs == 2
