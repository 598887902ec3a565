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
