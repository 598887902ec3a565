"""Review of replicas44: which commits only added rows (`pluralign.store.commits.AddingCommits`), what lets a replica
check a cached history by a count. A version whose operation is unknown, unreadable or not one that only adds rows
counts as one that may have changed them; each version is read once, one read at a time, at most MAX_UNREAD a check."""

from __future__ import annotations

import threading
import time

from pluralign.store import commits
from pluralign.store.commits import KEPT, MAX_UNREAD, AddingCommits


def test_only_commits_that_add_rows_let_a_count_tell_and_each_version_is_read_once(monkeypatch):
    operations = {2: "Append", 3: "CreateIndex", 4: "Rewrite", 5: "Delete", 6: "Append", 7: None, 8: "BaseOperation"}
    asked = []

    def operation(version):
        asked.append(version)
        if version == 9:
            raise OSError("Not found: _versions/9.manifest")  # removed by a purge of old versions
        return operations.get(version, "Append")

    seen = AddingCommits(operation)
    assert seen.only_added(1, 4) and seen.only_added(3, 3)
    assert not seen.only_added(4, 5) and seen.only_added(5, 6)  # the Delete is before 5: not between
    assert not seen.only_added(6, 7) and not seen.only_added(7, 8) and not seen.only_added(8, 9)
    assert sorted(asked) == list(range(2, 10))  # each once
    assert not seen.only_added(6, 5) and not seen.only_added(9, 10 + KEPT)  # backwards, or too far: not read
    assert len(asked) == 8
    assert not seen.only_added(9, 10 + MAX_UNREAD)  # one more unknown than a check reads: none read (the rows are)
    assert len(asked) == 8  # until the session's end: MAX_UNREAD of them read, then the rows, about twice the rows' read
    assert seen.only_added(9, 9 + MAX_UNREAD) and len(asked) == 8 + MAX_UNREAD  # as many as a check reads: read
    monkeypatch.setattr(commits, "KEPT", 3)
    assert seen.only_added(30, 32) and len(seen._adding) == 3  # the oldest versions' operations forgotten


def test_checks_on_several_threads_read_one_transaction_at_a_time():
    """A Lance dataset handle read from two threads at once raises RuntimeError "Already borrowed", which counted the
    version as one that may have changed rows, for good (every history known before it read its rows again)."""
    reading = threading.Lock()

    def operation(version):
        if not reading.acquire(blocking=False):
            raise RuntimeError("Already borrowed")
        try:
            time.sleep(0.002)  # a read in flight while other threads ask
            return "Append"
        finally:
            reading.release()

    seen, answers = AddingCommits(operation), []
    threads = [threading.Thread(target=lambda: answers.append(seen.only_added(0, MAX_UNREAD))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [True] * 6
