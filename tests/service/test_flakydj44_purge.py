"""A purge that leaves a table empty, on a store two replicas share (session 44's flaky DELETE test).

The purge of a table emptied by the delete had nothing to rewrite; it dropped the table's indexes, and when
there were none (another replica's purge had dropped them, and this replica, which had made them, did not make
them again at its next write) it committed nothing. The delete was then the table's newest version, which
Lance's removal of old versions always keeps: its transaction file (named by the version it was read from,
`users.lance/_transactions/8-*.txn` in the CI failure) and its manifest kept the delete's filter, the user's id,
after the DELETE (or the withdrawn row's purge) was done."""

from __future__ import annotations

import pytest

from pluralign.store import Store, UserRecord, tables
from tests.files import files_holding
from tests.service.test_store import DIM
from tests.stores import withdrawn_purge_given_up

GONE = "zed-q7x"


@pytest.mark.parametrize("second", ["withdrawn", "deleted"])
def test_a_table_emptied_again_after_another_replicas_purge_keeps_no_deleted_id(tmp_path, monkeypatch, second):
    monkeypatch.setattr(tables, "READ_MARGIN_S", 0.0)  # no reader to wait for: both stores are here
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    row = UserRecord(tenant="t", user_id=GONE, created_at=1.0, updated_at=1.0, pal_logits=[1.0, 0.0])
    b.put_user(row)  # b's refit: b makes the users table's indexes
    assert a.delete_user("t", GONE)["users"] == 1  # the table empty: a's purge drops them
    b.put_user(UserRecord(tenant="t", user_id=GONE, created_at=1.0, updated_at=2.0, pal_logits=[0.0, 1.0]))  # a refit drawn from the deleted rows
    if second == "withdrawn":  # b's refit found the rows gone (`_deleted_meanwhile`)
        b.withdraw_user("t", GONE, 2.0)
        assert b.wait_withdrawn(30)
    else:  # the user's DELETE sent again, through a
        assert a.delete_user("t", GONE)["users"] == 1
    assert b.get_user("t", GONE) is None
    assert files_holding(tmp_path, GONE) == []
    assert a.purges_left() == set()


KILLED_WITHDRAWING = """
import os, signal, sys
from pluralign.store import Store, UserRecord
b = Store(sys.argv[1], "enc", 8, sync_seconds=0, withdrawn_note=sys.argv[3])
b.put_user(UserRecord(tenant="t", user_id=sys.argv[2], created_at=1.0, updated_at=2.0, pal_logits=[0.0, 1.0]))
b.withdraw_user("t", sys.argv[2], 2.0)  # gone from reads; its purge waits for the lease, which another replica holds
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow  # ~7 s: the killed process imports lancedb (3 s alone); fast: the one below, whose purge gives up
def test_a_withdrawn_rows_purge_killed_before_its_turn_is_finished_at_the_next_start(tmp_path, monkeypatch):
    """Replica b withdraws a refit's row (`Store.withdraw_user`: deleted at once, purged in a maintenance turn of its
    own) while another replica holds the store's lease, and is killed (or stops, its stop's wait over) before its
    turn: the purge had not marked the table yet (a mark is written only in a turn), so no later turn purged it."""
    import signal
    import subprocess
    import sys

    monkeypatch.setattr(tables, "READ_MARGIN_S", 0.0)
    store, note = tmp_path / "store", tmp_path / "b" / "withdrawn-purge"  # b's note: in its own data folder
    note.parent.mkdir()
    a = Store(str(store), "enc", DIM, sync_seconds=0)
    a.put_user(UserRecord(tenant="t", user_id="ann", created_at=1.0, updated_at=1.0, pal_logits=[1.0, 0.0]))
    with a.lease:  # another replica's turn
        killed = subprocess.run([sys.executable, "-c", KILLED_WITHDRAWING, str(store), GONE, str(note)], capture_output=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert a.get_user("t", GONE) is None and files_holding(store, GONE)  # gone from reads, not from the files
    assert note.exists() and files_holding(note.parent, GONE) == []  # the note names no one
    b = Store(str(store), "enc", DIM, sync_seconds=0, withdrawn_note=note)  # b's next start
    assert b.finish_withdrawn() and b.wait_withdrawn(30)
    assert files_holding(store, GONE) == [] and not note.exists()
    assert b.get_user("t", "ann") is not None


def test_a_withdrawn_rows_purge_that_never_had_its_turn_is_finished_at_the_next_open(tmp_path, monkeypatch, caplog):
    """As above in one process: b's purge gives up waiting for the lease (a stop's wait over, the process about to
    end), the row deleted and not purged; the next open of b's store purges it."""
    store, note = withdrawn_purge_given_up(tmp_path, monkeypatch, GONE)
    assert "the purge of withdrawn users rows failed" in caplog.text
    again = Store(str(store), "enc", DIM, sync_seconds=0, withdrawn_note=note)  # b's next start
    assert again.finish_withdrawn() and again.wait_withdrawn(30)
    assert files_holding(store, GONE) == [] and not note.exists()
    assert again.get_user("t", "ann") is not None
