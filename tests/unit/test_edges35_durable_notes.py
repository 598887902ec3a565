"""What a DELETE notes for the jobs still running (`Admin.forget_vectors_at_exit`) is on disk before its
200 (`pluralign.files.append_durably`), and finding those jobs does not go through every job record
(`JobStore.active`). The kill -9 / power-loss case itself: tests/e2e/test_edges35_forget_at_exit.py."""

from __future__ import annotations

import os

import msgspec

from pluralign.files import append_durably
from training.jobs.record import Job
from training.jobs.store import JobStore


def fsyncs_of(monkeypatch) -> list[str]:
    """The paths os.fsync is called on from now on."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_an_append_is_fsynced_and_so_are_the_folders_it_created(tmp_path, monkeypatch):
    seen = fsyncs_of(monkeypatch)
    path = tmp_path / "jobs" / "forget-at-exit" / "j1.keys"
    append_durably(path, b"a" * 32)
    # the bytes, the file's name in its new folder, each new folder's name in the one above it
    assert seen == [str(path), str(path.parent), str(tmp_path / "jobs"), str(tmp_path)]
    seen.clear()
    append_durably(path, b"b" * 32)
    assert seen == [str(path)]  # an existing file: its folder did not change
    assert path.read_bytes() == b"a" * 32 + b"b" * 32


def test_the_store_lists_its_active_jobs_as_their_states_change(tmp_path):
    store = JobStore(tmp_path)
    jobs = [store.add(Job(id=f"j{i}", kind="pal", created_at=float(i))) for i in range(4)]
    store.put(msgspec.structs.replace(jobs[1], state="running"))
    store.put(msgspec.structs.replace(jobs[2], state="succeeded"))
    store.hold(msgspec.structs.replace(jobs[3], state="failed"))  # a record a full disk refused: held in memory
    store.remove("j0")
    assert [j.id for j in store.active()] == ["j1"]
    assert [(j.id, j.state) for j in JobStore(tmp_path).active()] == [("j1", "running"), ("j3", "queued")]  # as read back


def test_an_atomic_write_returns_with_the_new_file_and_its_name_on_disk(tmp_path, monkeypatch):
    from pluralign.files import write_atomic

    path = tmp_path / "jobs" / "j1.json"
    write_atomic(path, b"old")
    seen = fsyncs_of(monkeypatch)
    write_atomic(path, b"new")
    # the temporary file's bytes, then the folder whose entry the rename changed
    assert len(seen) == 2 and seen[0].startswith(str(path.parent / ".j1.json.")) and seen[1] == str(path.parent)
    assert path.read_bytes() == b"new" and [p.name for p in path.parent.iterdir()] == ["j1.json"]
