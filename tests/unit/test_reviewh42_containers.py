"""`service.strict.json_containers`: the objects and arrays a JSON body opens, counted from its bytes, equal
what decoding it makes, whatever its strings hold (brackets, quotes, backslashes, a string ending in one)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from service import strict
from service.strict import MAX_JSON_CONTAINERS, PIECE_BYTES, containers_counted, json_containers, too_many_containers

PIECES = ["[", "{", "]", "}", '"', "\\", "\\\\", '\\"', "C:\\", "a", "é", "\u2028", "😀", "\\u0022", " "]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 6)))


def _value(rng: random.Random, depth: int):
    kind = rng.randrange(5 if depth < 4 else 2)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return rng.choice([0, 1.5, None, True])
    if kind == 2:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _opened(value) -> int:
    if isinstance(value, list):
        return 1 + sum(_opened(v) for v in value)
    if isinstance(value, dict):
        return 1 + sum(_opened(v) for v in value.values())
    return 0


def test_the_count_is_what_decoding_makes_whatever_the_strings_hold():
    rng = random.Random(42)
    for _ in range(2_000):
        value = _value(rng, 0)
        for ascii_only in (True, False):
            body = json.dumps(value, ensure_ascii=ascii_only).encode()
            assert json_containers(body) == _opened(value), body


def test_a_string_ending_in_a_backslash_closes_where_json_says():
    """`"C:\\\\"` holds one backslash, then the string ends: the brackets after it are the body's own."""
    body = json.dumps({"path": "C:\\", "rows": [[]] * (MAX_JSON_CONTAINERS + 1)}).encode()
    assert json_containers(body) == MAX_JSON_CONTAINERS + 3
    assert too_many_containers(body) == MAX_JSON_CONTAINERS + 3
    text = json.dumps({"path": "C:\\", "code": "[" * (MAX_JSON_CONTAINERS + 1)}).encode()
    assert too_many_containers(text) is None


def _counted_beside_another_task(body: bytes, limit: int) -> tuple[int, int | None]:
    """How many turns another task had while `containers_counted(body, limit)` ran, and its count."""

    async def counted() -> tuple[int, int | None]:
        counting = asyncio.create_task(containers_counted(body, limit))
        turns = 0
        while not counting.done():  # another request's task: it runs whenever the count lets the loop go
            turns += 1
            await asyncio.sleep(0)
        return turns, counting.result()

    return asyncio.run(counted())


def test_a_large_body_is_counted_with_the_event_loop_taking_turns_between_its_pieces():
    """wire43: a body of more brackets than the cap, most inside strings, was counted in one call on the event loop
    (20-80 ms a MB: every other request waited); `containers_counted` lets the loop run other tasks between each
    PIECE_BYTES, and counts what `json_containers` does, a string crossing a piece's end included."""
    body = json.dumps({"messages": [{"role": "user", "content": '[{"\\' * 25} for _ in range(MAX_JSON_CONTAINERS)]}).encode()
    assert len(body) > 10 * PIECE_BYTES
    turns, opened = _counted_beside_another_task(body, MAX_JSON_CONTAINERS)
    assert opened == json_containers(body) == MAX_JSON_CONTAINERS + 2
    assert turns >= len(body) // PIECE_BYTES > 10, turns  # a turn a piece at least (one in all before: the count was one call)


def test_a_long_run_of_backslashes_is_counted_a_piece_at_a_time_too():
    """reviewwi43: a piece was stretched, a byte at a time in Python, to the end of a run of backslashes crossing its
    end, so a string of 880 KB of escaped backslashes (and the brackets that make the body counted) was one piece:
    ~55 ms of the loop's CPU in a Python loop (benchmarks/json_containers.py; the whole body counted in one call, as
    before wire43, takes ~3 ms). The escape a piece's end cuts is carried into the next piece: a turn a piece,
    whatever the strings hold."""
    body = json.dumps({"chosen": "\\" * (10 * PIECE_BYTES) + "[" * (MAX_JSON_CONTAINERS + 1), "rows": [[]]}).encode()
    turns, opened = _counted_beside_another_task(body, 1)
    assert opened == json_containers(body) == 3
    assert turns >= len(body) // PIECE_BYTES > 10, turns


@pytest.mark.parametrize("piece_bytes", [1, 2, 3, 7])
def test_pieces_cut_anywhere_count_what_decoding_makes(monkeypatch, piece_bytes):
    """The count by pieces of PIECE_BYTES, pieces of a few bytes here: escapes, runs of backslashes, strings and
    brackets cut at every place."""
    monkeypatch.setattr(strict, "PIECE_BYTES", piece_bytes)
    rng = random.Random(43)
    for _ in range(2_000):
        value = _value(rng, 0)
        body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        assert json_containers(body) == _opened(value), body
