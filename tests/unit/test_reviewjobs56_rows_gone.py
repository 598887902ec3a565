"""Review of jobs56: a DELETE's journal entry notes when the store's step deleted the user's rows (`rows_left_at`) as
soon as they left the table's newest version, before the purge (`Store.rows_gone`, `DeleteJournal.rows_gone`). Noted
only after the whole step, a process killed in the purge (every fragment with a deletion rewritten) left none, and the
DELETE finished later for a user who came back asked the store's kept versions, which another replica's purge or
compaction meanwhile may have left only from its own commit on: what another replica made in between from the rows the
user sent since (their newer adapter job) went too (tests/service/test_reviewjobs56_versions_dropped.py, slow). Here on a
real store and journal: the note comes before the purge, and only for the one user whose DELETE runs here, when the
rows deleted include all they sent before it began."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pluralign.store import Store, StoredPreference
from service.users.journal import DeleteJournal

DIM = 8


class Killed(BaseException):
    """The process stops here (a SIGKILL, in-process)."""


def stored(tmp_path, users: list[str], received_at: float) -> Store:
    store = Store(str(tmp_path / "store"), "enc", DIM)
    rows = [StoredPreference(tenant="t", user_id=u, pref_id=f"{u}-1", prompt=f"Question of {u}?", chosen="Good.",
                             rejected="Bad.", kind="comparison", created_at=received_at, received_at=received_at)
            for u in users]
    vec = np.zeros((len(rows), DIM), dtype=np.float32)
    store.add_preferences(rows, vec, vec, vec)
    return store


def noting(store: Store, journal: DeleteJournal) -> None:
    store.rows_gone = lambda tenant, users, before: journal.rows_gone(tenant, users, before, time.time())


def test_the_entry_notes_the_rows_gone_before_a_purge_that_is_killed(tmp_path, monkeypatch):
    began = time.time()
    store, journal = stored(tmp_path, ["zed"], began - 10), DeleteJournal(tmp_path / "journal")
    noting(store, journal)
    journal.begin("t", "zed", began)

    def killed_in_the_purge(names):
        raise Killed

    monkeypatch.setattr(store, "_purge_tables", killed_in_the_purge)
    with pytest.raises(Killed):
        store.delete_user("t", "zed")
    killed = time.time()
    entry = journal.unfinished("t", "zed")
    assert entry is not None and entry.rows_left_at is not None and began <= entry.rows_left_at <= killed, entry
    assert store.count_preferences("t", "zed") == 0


def test_no_note_for_a_batch_a_delete_not_running_here_or_rows_received_before_it_left(tmp_path):
    began = time.time()
    store, journal = stored(tmp_path, ["ann", "bob", "cy", "dee"], began - 10), DeleteJournal(tmp_path / "journal")
    noting(store, journal)
    journal.begin_many("t", ["ann", "bob"], began)
    store.delete_users("t", ["ann", "bob"])  # a tenant's removal's batch: its entries are noted as a batch is
    DeleteJournal(tmp_path / "journal").begin("t", "cy", began)  # another process's (its copy of the journal)
    store.delete_user("t", "cy")
    journal.begin("t", "dee", began)
    store.delete_user("t", "dee", before=began - 20)  # the rows deleted leave theirs received since `began - 20`
    for user in ("ann", "bob", "cy", "dee"):
        entry = journal.unfinished("t", user)
        assert entry is not None and entry.rows_left_at is None, entry
