"""owed59: `retractions-owed.json` (the rows this replica stored that a retraction through another replica took back,
owed a retraction: `service.owed_retractions`) while the service runs.

- An owed file the start could not read at all (an I/O error, a permission) was written over by the next row owed: the
  keys it held were lost, their rows (taken back by their users, or of users deleted) stored for good. Now nothing
  writes over it: each write reads it again first, as the start reads one (`OwedRetractions._take_up`), and once it
  reads, its keys are owed with the others, written with them, and taken back then, as the start takes back a file's.
- An owed file that cannot be written (a full disk, an unreadable file not to be written over) was only logged: the
  rows owed were taken back while the service ran, but a crash before left them stored, and nothing an operator
  watches said so. Now /health's `storage` lists it (`degraded`) until a write of it succeeds.

The rows are owed as the ingest worker's look owes them (`OwedRetractions.owe`): the race that owes one between two
replicas cannot be aimed at from a request."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import msgspec

from service.owed_retractions import OWED_RETRACTIONS_FILE
from tests.files import file_size_limit

WHAT = "the owed retractions file"
OLD = [["acme", "ann", "p-1"], ["globex", "bo", "p-2"]]  # what the last run owed, on disk


def on_disk(path: Path) -> set[tuple[str, str, str]]:
    return {tuple(k) for k in msgspec.json.decode(path.read_bytes())}


def listed(health: dict) -> list[dict]:
    return [{k: p[k] for k in ("action", "problem", "failures")} for p in health["storage"] if p["what"] == WHAT]


def wait_for(check, why: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


READ = Path.read_bytes


def unreadable_owed(tmp_path: Path, monkeypatch) -> tuple[Path, threading.Event]:
    """The owed file a last run left in `tmp_path`/data (`OLD` in it), unreadable until the event is cleared."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / OWED_RETRACTIONS_FILE
    path.write_bytes(msgspec.json.encode(OLD))
    return path, unreadable_until_cleared(monkeypatch, path)


def unreadable_until_cleared(monkeypatch, path: Path) -> threading.Event:
    """`path`'s reads fail (EIO, a disk error) until the event returned is cleared (the operator fixed it)."""
    unreadable = threading.Event()
    unreadable.set()

    def failing(self):
        if self == path and unreadable.is_set():
            raise OSError(errno.EIO, "Input/output error", str(self))
        return READ(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    return unreadable


def test_an_owed_file_the_start_could_not_read_is_read_by_a_later_write_never_written_over(serve, tmp_path, monkeypatch):
    path, unreadable = unreadable_owed(tmp_path, monkeypatch)
    read = READ
    data, server, svc = serve()
    with server, svc.client(None) as anyone:
        owed, store = svc.runtime.owed_retractions, svc.runtime.store
        assert owed.keys() == set()
        health = anyone.get("/health").json()
        assert health["status"] == "degraded" and listed(health) == [{"action": "written", "problem": "unreadable", "failures": 1}]
        owed.owe({("acme", "cy", "p-3")})  # a row owed while it still cannot be read: not written over
        assert read(path) == msgspec.json.encode(OLD)
        assert owed.keys() == {("acme", "cy", "p-3")}  # still taken back while the service runs
        assert listed(anyone.get("/health").json())[0]["failures"] == 2

        # the operator made it readable; the next row owed reads it first. The old rows' retractions wait for the test
        looked, go_on = [], threading.Event()
        look = store.stored_row

        def held(tenant, user_id, pref_id):
            looked.append((tenant, user_id, pref_id))
            assert go_on.wait(60)
            return look(tenant, user_id, pref_id)

        monkeypatch.setattr(store, "stored_row", held)
        unreadable.clear()
        owed.owe({("acme", "dee", "p-4")})
        every = {*map(tuple, OLD), ("acme", "cy", "p-3"), ("acme", "dee", "p-4")}
        assert on_disk(path) == every and owed.keys() == every
        health = anyone.get("/health").json()
        assert listed(health) == [] and health["status"] == "ok", health
        # taken back now, as the start takes back the rows of a file it reads: neither is stored, so owed no more
        wait_for(lambda: looked, "the old rows looked at")
        go_on.set()
        wait_for(lambda: owed.keys() == {("acme", "cy", "p-3"), ("acme", "dee", "p-4")}, f"owed: {owed.keys()}")
        assert sorted(looked) == sorted(map(tuple, OLD))
        wait_for(lambda: on_disk(path) == owed.keys(), "the file written without them")


def test_an_owed_file_a_full_disk_cannot_rewrite_is_in_health_until_a_write_succeeds(serve):
    data, server, svc = serve()
    with server, svc.client(None) as anyone:
        owed = svc.runtime.owed_retractions
        path = data / OWED_RETRACTIONS_FILE
        owed.owe({("acme", "ann", "p-1")})
        assert anyone.get("/health").json()["storage"] == []
        with file_size_limit(16):  # the disk fills
            owed.owe({("acme", "bob", "p-2")})
        assert on_disk(path) == {("acme", "ann", "p-1")}
        health = anyone.get("/health").json()
        assert health["status"] == "degraded" and listed(health) == [{"action": "written", "problem": "full", "failures": 1}]
        assert str(data) not in str(health)  # its name, never the data folder's path
        owed.owe({("acme", "ann", "p-1")})  # room again; a row owed again, nothing new: bob's written now all the same
        assert on_disk(path) == {("acme", "ann", "p-1"), ("acme", "bob", "p-2")}
        assert listed(anyone.get("/health").json()) == []
        owed.owe({("globex", "cy", "p-3")})
        assert on_disk(path) == {("acme", "ann", "p-1"), ("acme", "bob", "p-2"), ("globex", "cy", "p-3")}
        health = anyone.get("/health").json()
        assert listed(health) == [] and health["status"] == "ok", health
