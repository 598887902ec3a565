"""A batch of a tenant's removal writes its users' DELETE journal entries at once (`DeleteJournal.begin_many`,
`service.users.services.delete_batch`). Review of session 49's batches: a batch refused part way (no room for one
entry) removed every entry it had written, an earlier stopped DELETE's entry of the same user with it (that DELETE
was then never finished); and each entry still fsynced the folder, where the docstring says once a batch."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

import pytest

from service.users.journal import JOURNAL_FOLDER, DeleteJournal, DeleteNotRecorded


@contextlib.contextmanager
def _fsyncs(monkeypatch) -> Iterator[list[bool]]:
    """Each `os.fsync` made inside, in order, as whether it was of a folder (True) or of a file (False); `os.fsync`
    as it was after."""
    fsync = os.fsync
    folders: list[bool] = []

    def counted(fd: int) -> None:
        folders.append(os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counted)
    try:
        yield folders
    finally:
        monkeypatch.setattr(os, "fsync", fsync)


def test_a_batch_refused_for_a_full_disk_leaves_an_earlier_stopped_delete_of_its_user_to_finish(tmp_path, monkeypatch):
    """ann's own DELETE stopped part way (its entry left for `UnfinishedDeletes`); then a removal's batch of ann,
    bob and cat finds no room for bob's entry: the batch is refused (DeleteNotRecorded, nothing deleted) and ann's
    earlier entry is still there to be finished, with no temp file left beside it."""
    folder = tmp_path / JOURNAL_FOLDER
    journal = DeleteJournal(folder)
    earlier = journal.begin("acme", "ann", 100.0)
    journal.release(earlier)  # stopped: its process gave up (a step raised)
    bob = journal.path("acme", "bob").name
    fsync = os.fsync

    def full_for_bob(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{bob}."):  # bob's entry, being written
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_for_bob)
    with pytest.raises(DeleteNotRecorded):
        journal.begin_many("acme", ["ann", "bob", "cat"], 200.0)
    monkeypatch.setattr(os, "fsync", fsync)
    assert journal.pending() == [earlier]
    assert sorted(p.name for p in folder.iterdir()) == [journal.path("acme", "ann").name]


def test_a_batch_of_entries_fsyncs_their_folder_once(tmp_path, monkeypatch):
    """`begin_many` of 8 users: 8 entry files fsynced and their folder once (`write_atomic` fsyncs the folder
    after each file: 8 more), and every entry is there, whole."""
    folder = tmp_path / JOURNAL_FOLDER
    journal = DeleteJournal(folder)
    journal.begin("acme", "zed", 1.0)  # the folder exists
    users = [f"u{i}" for i in range(8)]
    with _fsyncs(monkeypatch) as folders:
        entries = journal.begin_many("acme", users, 5.0)
    assert (folders.count(True), folders.count(False)) == (1, 8), folders
    assert [journal.unfinished("acme", u) for u in users] == entries
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_a_batchs_deletion_records_are_noted_in_its_entries_with_one_fsync_of_their_folder(tmp_path, monkeypatch):
    """With replicas, a batch notes its deletion record's commit in each of its users' entries
    (`DeleteJournal.recorded_many`, `delete_batch`): 8 entries rewritten and fsynced, their folder once (one by one,
    `recorded` fsynced it twice an entry)."""
    journal = DeleteJournal(tmp_path / JOURNAL_FOLDER)
    users = [f"u{i}" for i in range(8)]
    entries = journal.begin_many("acme", users, 5.0)
    with _fsyncs(monkeypatch) as folders:
        journal.recorded_many(entries, 7.0)
    assert (folders.count(True), folders.count(False)) == (1, 8), folders
    assert [journal.unfinished("acme", u).recorded_at for u in users] == [7.0] * 8
    journal.done_many(entries)  # a noted entry is still the same DELETE's
    assert list((tmp_path / JOURNAL_FOLDER).iterdir()) == []
