"""review owed59: an owed-retractions file (`service.owed_retractions`) that could not be read, or whose last write
failed, was read or written again only at the next change of the owed rows: the ingest worker's next move (with
replicas) or a row owed or paid. On an idle replica that is never: once the operator had made the file readable, or
room on the disk, /health stayed `degraded` for good and the rows the file named were not taken back until a restart,
though docs/operations.md says "Nothing needs a restart: the next write succeeds and `/health` is `ok` again". Now the
service's pass over the unfinished DELETEs (every `deletion_sweep_s`, as the owed vector purges) reads and writes it
again."""

from __future__ import annotations

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.files import file_size_limit
from tests.service.test_owed59_running import (
    OLD,
    READ,
    listed,
    on_disk,
    unreadable_owed,
    unreadable_until_cleared,
    wait_for,
)

PASS_S = 0.2  # `deletion_sweep_s`: the pass that reads the file again


def test_an_owed_file_made_readable_is_read_and_its_rows_taken_back_with_no_row_owed_meanwhile(serve, tmp_path, monkeypatch):
    path, unreadable = unreadable_owed(tmp_path, monkeypatch)
    read = READ
    data, server, svc = serve(deletion_sweep_s=PASS_S)
    with server, svc.client(None) as anyone:
        owed, finishing = svc.runtime.owed_retractions, server.server.config.app.state.unfinished_deletes
        health = anyone.get("/health").json()
        assert listed(health) == [{"action": "written", "problem": "unreadable", "failures": 1}], health
        passes = finishing.passes
        wait_for(lambda: finishing.passes >= passes + 2, "two passes while it cannot be read")
        assert read(path) == msgspec.json.encode(OLD) and owed.keys() == set()  # not written over, nothing owed from it
        assert listed(anyone.get("/health").json())[0]["failures"] == 1  # a pass that cannot read it is no new failure

        unreadable.clear()  # the operator made it readable; no row is owed or paid meanwhile (no feedback, one replica)
        wait_for(lambda: anyone.get("/health").json()["status"] == "ok", "/health ok once the file reads")
        # its rows taken back (neither is stored here: owed no more), the file removed with them
        wait_for(lambda: owed.keys() == set() and not path.exists(), f"owed: {owed.keys()}")


def test_an_owed_file_that_could_not_be_read_and_is_removed_by_the_operator_is_no_longer_in_health(serve, tmp_path, monkeypatch):
    """The operator gave up the file the service could not read (removed it): its read now finds nothing owed, so nothing
    was written and /health listed it as not written for good."""
    path, unreadable = unreadable_owed(tmp_path, monkeypatch)
    data, server, svc = serve(deletion_sweep_s=PASS_S)
    with server, svc.client(None) as anyone:
        assert anyone.get("/health").json()["status"] == "degraded"
        path.unlink()
        unreadable.clear()
        wait_for(lambda: anyone.get("/health").json()["status"] == "ok", "/health ok once the file is gone")
        assert svc.runtime.owed_retractions.keys() == set() and not path.exists()


def test_an_owed_file_a_full_disk_could_not_write_is_written_once_there_is_room_with_no_row_owed_meanwhile(serve):
    data, server, svc = serve(deletion_sweep_s=PASS_S)
    with server, svc.client(None) as anyone:
        owed = svc.runtime.owed_retractions
        path = data / OWED_RETRACTIONS_FILE
        owed.owe({("acme", "ann", "p-1")})
        with file_size_limit(16):  # the disk fills
            owed.owe({("acme", "bob", "p-2")})
        assert listed(anyone.get("/health").json())[0]["problem"] == "full"
        # room again, and nothing owed or paid since: the pass writes what is owed
        wait_for(lambda: anyone.get("/health").json()["status"] == "ok", "/health ok once there is room")
        assert on_disk(path) == {("acme", "ann", "p-1"), ("acme", "bob", "p-2")}


def test_a_file_that_cannot_be_written_is_logged_once_not_at_each_move(tmp_path, monkeypatch, caplog):
    """With replicas the ingest worker's every move calls `owe` (most often with nothing owed), and each such call
    after a failed write tries the write again: an ERROR each, a line a move for as long as the file could not be
    read. Now the first failure is logged and the tries after it are not, until a write succeeds."""
    from service.owed_retractions import OwedRetractions

    path = tmp_path / OWED_RETRACTIONS_FILE
    path.write_bytes(msgspec.json.encode(OLD))
    unreadable_until_cleared(monkeypatch, path)
    owed = OwedRetractions(path)
    owed.owe({("acme", "cy", "p-3")})  # not written over: logged
    assert any("so it is not written over" in r.getMessage() for r in caplog.records)
    caplog.clear()
    for _ in range(5):  # the worker's next moves, nothing owed by them
        owed.owe(set())
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    assert READ(path) == msgspec.json.encode(OLD) and owed.keys() == {("acme", "cy", "p-3")}
