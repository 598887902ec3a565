"""A hostile pass on today's fixes (break session 18d): a JSON line or file nested deeper than the
decoder goes was no error naming its line or file. A preference line nested thousands of levels deep
raised RecursionError out of the reader: `pluralign audit --data`, `data stats` and the trainers
printed a traceback, and POST /v1/users/{id}/import answered `body` (the generic handler's name),
not `line N` as for every other malformed line. `audit --user-groups` (read with `json.loads` since
its errors name lines) printed a traceback where its typed decode had been a one-line error."""

from __future__ import annotations

import contextlib
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


class _Counts:
    def __init__(self):
        self.counted: dict[str, float] = {}

    def inc(self, name: str, value: float = 1.0, help: str = "", **labels) -> None:
        self.counted[name] = self.counted.get(name, 0) + value


def test_a_stream_read_to_its_end_is_not_counted_as_cancelled():
    """The producer read `gone` after its events ran out: a client that had read every event, [DONE]
    included, and closed the connection before the relay read the end set `gone` first whenever the
    producer thread had not yet got past its last `yield` (a busy machine), and the whole chat was
    counted in pluralign_chat_cancelled_total (it was counted as completed too)."""
    import asyncio
    import threading
    import time
    from types import SimpleNamespace

    from service.chat.controllers import scheduled_stream
    from service.scheduler import FairScheduler
    from service.stopping import GeneratingChats

    rt = SimpleNamespace(scheduler=FairScheduler(workers=1), metrics=_Counts(), chats=GeneratingChats(),
                         settings=SimpleNamespace(sse_keepalive_s=15.0))  # the relay reads it (reviewbr43); the default

    def events(gone: threading.Event):
        yield b"data: {}\n\n"
        yield b"data: [DONE]\n\n"
        gone.wait(5)  # the producer thread, descheduled after its last event, runs on once the client has left

    def make_events(gone: threading.Event):
        return "chatcmpl-1", events(gone)  # (its response id, its events)

    async def client_reads_everything_then_leaves() -> list[bytes]:
        relay = await scheduled_stream(rt, "acme", make_events)
        got = [await relay.__anext__(), await relay.__anext__()]
        await relay.aclose()  # the connection closes after [DONE]: the server stops the response
        return got

    try:
        got = asyncio.run(client_reads_everything_then_leaves())
        assert got[-1] == b"data: [DONE]\n\n"
        deadline = time.monotonic() + 5
        while rt.scheduler.stats()["running"] and time.monotonic() < deadline:  # the producer has ended
            time.sleep(0.01)
        assert rt.metrics.counted.get("pluralign_chat_cancelled_total", 0) == 0, rt.metrics.counted
    finally:
        rt.scheduler.shutdown()


@contextlib.contextmanager
def _one_slot_taken(keepalive_s: float):
    """A runtime for `scheduled_stream` whose one generation slot another tenant's chat holds until the block ends (a
    chat of tenant acme waits in the queue), and whose relay sends `: keep-alive` every `keepalive_s` seconds; yields
    it. After: the slot freed, the scheduler shut down."""
    import threading
    from types import SimpleNamespace

    from service.scheduler import FairScheduler
    from service.stopping import GeneratingChats

    rt = SimpleNamespace(scheduler=FairScheduler(workers=1), metrics=_Counts(), chats=GeneratingChats(),
                         settings=SimpleNamespace(sse_keepalive_s=keepalive_s))
    freed = threading.Event()
    holder = rt.scheduler.submit("globex", lambda: freed.wait(10))  # the one slot, taken by another tenant's chat
    try:
        yield rt
    finally:
        freed.set()
        holder.result(10)
        rt.scheduler.shutdown()


def _never_planned(gone):
    raise AssertionError("a refused chat is never planned")


def test_a_stream_opened_by_a_keep_alive_while_queued_is_told_by_an_event_when_the_stop_refuses_it():
    """wire44b: a stream waiting for a generation slot sends its headers and `: keep-alive` after `sse_keepalive_s`;
    when the service's stop then refuses the waiting chat (never begun), it can no longer be a plain 503: it ends with
    the 503's error event (`code` unavailable, the stop named) and `data: [DONE]`, and the chat is counted as refused
    waiting. Before, nothing went while it was queued (the first event was awaited past the 5 s here)."""
    import asyncio

    from service.chat.controllers import KEEPALIVE, scheduled_stream
    from service.stopping import STOPPING

    async def queued_then_refused(rt) -> list[bytes]:
        relay = await asyncio.wait_for(scheduled_stream(rt, "acme", _never_planned), 5)
        got = [await relay.__anext__()]
        rt.scheduler.close(STOPPING)
        got += [event async for event in relay]
        return got

    with _one_slot_taken(keepalive_s=0.05) as rt:
        got = asyncio.run(queued_then_refused(rt))
    assert got[0] == KEEPALIVE and set(got[1:-2]) <= {KEEPALIVE} and got[-1] == b"data: [DONE]\n\n", got
    error = json.loads(got[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "unavailable" and error["type"] == "service_unavailable_error" and STOPPING in error["message"], error
    assert rt.metrics.counted.get("pluralign_chat_stopped_total") == 1, rt.metrics.counted


def test_a_queued_stream_refused_after_several_keep_alives_leaves_no_unretrieved_exception(caplog):
    """wire44b's `_refused` fix had no test (reviewwb44): each keep-alive's wait wraps the queued chat's future anew;
    when the stop then refuses the chat (Stopping), every wrap cut by a keep-alive's timeout held that exception
    unread, and asyncio logged "Future exception was never retrieved" once per keep-alive that had gone."""
    import asyncio
    import gc
    import logging

    from service.chat.controllers import KEEPALIVE, scheduled_stream
    from service.stopping import STOPPING

    async def queued_then_refused(rt) -> list[bytes]:
        relay = await asyncio.wait_for(scheduled_stream(rt, "acme", _never_planned), 5)
        got = [await relay.__anext__() for _ in range(3)]  # three keep-alives: three waits cut by their timeout
        rt.scheduler.close(STOPPING)
        got += [event async for event in relay]
        await asyncio.sleep(0)  # the wraps' callbacks run
        gc.collect()  # an unread exception is logged as its future is collected
        return got

    caplog.set_level(logging.ERROR, logger="asyncio")
    # the objects made before this test frozen (`gc.freeze`): the collections below go through this test's own, not the
    # heap of every module run before it in this process (5.3 CPU-s in session 63's full run, 0.01 s alone)
    gc.freeze()
    try:
        with _one_slot_taken(keepalive_s=0.01) as rt:
            got = asyncio.run(queued_then_refused(rt))
            gc.collect()
    finally:
        gc.unfreeze()
    assert got[:3] == [KEEPALIVE] * 3 and got[-1] == b"data: [DONE]\n\n", got
    unread = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not unread, unread
