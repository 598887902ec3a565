"""Session 28: a write that meets Lance's "Not found" (another replica's removal of old versions took
a file of the version this process's table looks at) is made again on the newest version, as a read
is (`Store._read`), without storing anything twice.

Seen with two Stores on one folder (/tmp script in the session's report): once a replica's handle
was left on a version another one's cleanup removed, its appends failed ("cannot be written: a file
of it is damaged or unreadable", nothing written) and so did every later append, thousands in a row,
until a read happened to refresh the table. Here the first commit attempt meets that "Not found",
before committing (the usual case) or after (a commit is whole or absent: its rows tell)."""

from __future__ import annotations

import time

import pytest

from pluralign.store import Store, UserRecord
from pluralign.store.deletions import Deletion
from pluralign.store.failures import StoreUnavailable
from pluralign.store.tables import Interaction
from tests.service.test_store import DIM, prefs

GONE = "lance error: Not found: t/preferences.lance/_versions/18446744073709551077.manifest"


def meets_not_found(monkeypatch, table, method: str, committed: bool) -> list:
    """The table's next `method` call raises Lance's "Not found", after doing its work when
    `committed`; returns the list of calls made."""
    calls = []
    real = getattr(table, method)

    def once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            if committed:
                real(*args, **kwargs)
            raise RuntimeError(GONE)
        return real(*args, **kwargs)

    monkeypatch.setattr(table, method, once)
    return calls


def interaction(response_id: str) -> Interaction:
    return Interaction(tenant="t", user_id="u", response_id=response_id, created_at=time.time(), prompt="q", messages=[],
                       candidates=["a"], scores=[0.0], chosen_index=0, history=[], model="m")


@pytest.mark.parametrize("committed", [False, True], ids=["before its commit", "after its commit"])
def test_an_append_that_met_not_found_is_stored_once(tmp_path, monkeypatch, committed):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)  # one of several replicas on the store
    calls = meets_not_found(monkeypatch, a.preferences, "add", committed)
    a.add_preferences(*prefs("t", "u", 3))  # raised StoreUnavailable ("cannot be written") before
    assert a.count_preferences("t", "u") == 3 and len(calls) == 2 - committed
    meets_not_found(monkeypatch, a.tables["interactions"], "add", committed)
    a.add_interaction(interaction("r1"))
    assert a.count_interactions("t", "u") == 1
    meets_not_found(monkeypatch, a.tables["stated_changes"], "add", committed)
    a.add_stated_changes("t", "u", [{"version": 1, "at": time.time(), "feature": "length", "direction": "less"}])
    assert len(a.stated_changes("t", "u")) == 1
    meets_not_found(monkeypatch, a.deletions, "add", committed)
    a.record_deletion(Deletion(deletion_id="d1", tenant="t", user_hash="ab", deleted_at=time.time(), replica=0))
    assert len(a.deletions_since(0)) == 1


def test_an_upsert_that_met_not_found_is_made_again(tmp_path, monkeypatch):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    meets_not_found(monkeypatch, a.users, "merge_insert", committed=False)
    a.put_user(UserRecord(tenant="t", user_id="u", created_at=time.time(), updated_at=time.time()))
    assert a.get_user("t", "u") is not None


def test_alone_on_the_store_not_found_is_a_damaged_table_at_once(tmp_path, monkeypatch):
    """Nothing removes what a write uses when no other process is on the store: as before."""
    a = Store(str(tmp_path), "enc", DIM)
    calls = meets_not_found(monkeypatch, a.preferences, "add", committed=False)
    with pytest.raises(StoreUnavailable, match="cannot be written"):
        a.add_preferences(*prefs("t", "u", 1))
    assert len(calls) == 1
