"""Two Stores on one table folder, as two replicas have: each sees the other's writes within
`sync_seconds`, and user rows are ordered by `updated_at` rather than by arrival."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from pluralign.store import Store, UserRecord
from pluralign.store.tables import owner_filter
from tests.service.test_store import DIM, prefs

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def test_a_cached_history_sees_another_stores_rows_within_sync_seconds(tmp_path):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0.2)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0.2)
    a.add_preferences(*prefs("t", "u", 2))
    time.sleep(0.25)  # b's handle looks for new versions at most every 0.2 s
    assert len(b.history("t", "u")) == 2  # b caches the user's two rows
    later = prefs("t", "u", 3, start=2)
    a.add_preferences(*later)
    # b looked last before a's write: its first read once sync_seconds have passed sees a's rows. (Before: polled with
    # an upper bound of sync_seconds + 0.5 s on the wall clock, which the reads' own time under load ran past.)
    time.sleep(0.25)
    assert b.count_preferences("t", "u") == 5, "b's read after sync_seconds did not see a's rows"
    hits = b.search("t", "u", later[1][2], 1)
    assert hits[0][0].pref_id == "t-u-4"  # the nearest row is one that a wrote after b cached
    a.delete_user("t", "u")
    time.sleep(0.25)
    assert b.count_preferences("t", "u") == 0 and b.search("t", "u", np.ones(DIM, np.float32), 4) == []


def test_without_sync_a_cached_history_stays_as_loaded(tmp_path):
    """The single-process default, what the sync setting changes: b's table handle never looks for
    a's commits, so b keeps answering from the version it opened."""
    a = Store(str(tmp_path), "enc", DIM)
    b = Store(str(tmp_path), "enc", DIM)
    a.add_preferences(*prefs("t", "u", 2))
    time.sleep(0.3)
    assert len(b.history("t", "u")) == 0
    a.add_preferences(*prefs("t", "u", 3, start=2))
    time.sleep(0.3)
    assert b.count_preferences("t", "u") == 0


def test_an_older_user_row_never_replaces_a_newer_one(tmp_path):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    row = lambda updated, logits: UserRecord(tenant="t", user_id="u", created_at=1.0, updated_at=updated, pal_logits=logits)  # noqa: E731
    a.put_user(row(10.0, [1.0, 0.0]))
    b.put_user(row(20.0, [0.0, 1.0]))  # newer, through the other store
    a.put_user(row(15.0, [5.0, 5.0]))  # a slow writer that started before b's: dropped
    for store in (a, b):
        found = store.get_user("t", "u")
        assert (found.updated_at, found.pal_logits) == (20.0, [0.0, 1.0])
    a.put_user(row(30.0, [2.0, 2.0]))
    assert b.get_user("t", "u").pal_logits == [2.0, 2.0]
    assert a.users.count_rows() == 1


def test_a_replicas_delete_leaves_another_processs_write_in_flight_alone(tmp_path):
    """Before: a DELETE's purge removed every file no table version named (Lance's
    `delete_unverified`), so another replica's append written but not yet committed lost its data
    file, committed anyway, and every read of the table then failed with Lance "Not found" (seen as
    500s when two replicas answered DELETEs at once). With replicas the purge leaves such files."""
    import lance

    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "gone", 2))
    a.add_preferences(*prefs("t", "kept", 2))
    uri = str(tmp_path / "preferences.lance")
    before = lance.dataset(uri)
    # another replica's append: its data file written, its commit not yet made
    other = prefs("t", "late", 3)
    staged = Store(str(tmp_path / "scratch"), "enc", DIM)
    staged.add_preferences(*other)
    fragments = lance.fragment.write_fragments(staged.preferences.to_arrow(), uri, schema=before.schema)
    assert a.delete_user("t", "gone")["preferences"] == 2
    lance.LanceDataset.commit(uri, lance.LanceOperation.Append(fragments), read_version=lance.dataset(uri).version)
    time.sleep(0.05)
    assert a.count_preferences("t", "late") == 3 and a.count_preferences("t", "kept") == 2
    assert sorted(r["user_id"] for r in lance.dataset(uri).to_table(columns=["user_id"]).to_pylist()) == \
        ["kept"] * 2 + ["late"] * 3


def test_replicas_take_turns_at_maintenance(tmp_path):
    """Two Stores on one folder (two replicas): while one holds the maintenance lease, the other's
    compaction waits; the lease is free again once the first is done, and taken again within a process."""
    import threading

    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    done = threading.Event()
    versions = tmp_path / "maintenance_lease.lance" / "_versions"
    with a.lease, a.lease:  # re-entrant in one process
        worker = threading.Thread(target=lambda: (b.compact(every_table=True), done.set()))
        worker.start()
        held = len(list(versions.iterdir()))
        assert not done.wait(0.5)  # b waits for a
        assert len(list(versions.iterdir())) == held  # without committing a version at each look
    assert done.wait(10)
    worker.join()
    assert a.lease.holder == "" and b.lease.holder == ""


def test_delete_feedback_before_takes_rows_another_replica_committed_within_sync_seconds(tmp_path):
    """Another replica's DELETE record applied here (`delete_feedback_before`, as `service.deletions` applies it)
    just after a third replica moved the user's feedback into the store. Before: it counted on this replica's view
    of the tables, up to `sync_seconds` old, found none of the rows and deleted nothing, so feedback received before
    the DELETE began stayed for good (no later pass looks again: the record is noted applied). Now it counts on the
    tables' newest versions, as a DELETE does (dupdel42)."""
    # a's reads may be 2 s stale: no new version looked for that long after its count below (its purge then waits as
    # long for other readers, so not longer)
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=2)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=2)
    assert a.count_preferences("t", "ann") == 0  # a's view of the table, taken now
    b.add_preferences(*prefs("t", "ann", 2))  # received by b, before the DELETE began
    assert a.delete_feedback_before("t", "ann", time.time() + 1.0) == 2
    b.refresh("preferences")
    assert b.count_preferences("t", "ann") == 0


def test_a_cached_history_is_not_served_after_another_replica_deleted_and_reimported_as_many_rows(tmp_path):
    """Review of replicas43. The cached history was checked against the table by the user's row count only: another
    replica's DELETE of the user, then an import of as many rows (other prompts, other vectors), left the count as it
    was, and this replica's refit (`latest`) and reranking kept fitting and searching the deleted rows for as long as
    the history stayed cached. A row sent again (`received_again`: its `received_at` moved) was not seen either."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    assert b.history("t", "u").meta.column("pref_id").to_pylist() == ["t-u-0", "t-u-1"]  # cached by b
    a.delete_user("t", "u")
    later = prefs("t", "u", 2, start=5)
    a.add_preferences(*later)
    assert sorted(b.history("t", "u", latest=True).meta.column("pref_id").to_pylist()) == ["t-u-5", "t-u-6"]
    assert sorted(b.history("t", "u").meta.column("pref_id").to_pylist()) == ["t-u-5", "t-u-6"]
    assert b.search("t", "u", later[1][1], 1)[0][0].pref_id == "t-u-6"  # before: a deleted row, t-u-1
    before = b.history("t", "u").meta.column("received_at").to_pylist()
    assert a.received_again("t", "u", ["t-u-5"]) == 1
    assert b.history("t", "u").meta.column("received_at").to_pylist() != before


def test_a_history_found_stale_is_not_served_by_a_read_that_peeked_it_before_another_read_reloaded_it(tmp_path):
    """Review of replicas44. A read of a cached history (`_cached`) took the history, then asked the cache for the
    table version "the" history was last found to match: when another read of the user had meanwhile found that
    history stale (another replica's DELETE and an import of as many rows) and loaded it again, that version was the
    new history's, the table's own, so the first read served the old history unchecked (a deleted row as a chat's
    nearest shot). The other read is made right after the first took the history, as a concurrent request would."""
    import threading

    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    assert len(b.history("t", "u")) == 2  # cached by b
    a.preferences.delete(owner_filter("t", "u"))  # another replica's DELETE (its purge not yet made)
    later = prefs("t", "u", 2, start=5)
    a.add_preferences(*later)
    peek, raced = b.histories.peek, []

    def peek_then_another_read(key):
        found = peek(key)
        if not raced:
            raced.append(True)
            reader = threading.Thread(target=lambda: raced.append(b.history(*key)))
            reader.start()
            reader.join()
        return found

    b.histories.peek = peek_then_another_read
    hits = b.search("t", "u", later[1][1], 1)
    assert sorted(raced[1].meta.column("pref_id").to_pylist()) == ["t-u-5", "t-u-6"]  # the other read reloaded it
    assert hits[0][0].pref_id == "t-u-6"  # before: t-u-1, a row deleted


def test_a_cached_history_is_checked_by_a_count_while_other_replicas_only_add_rows_and_by_its_rows_after_a_delete(tmp_path):
    """Review of replicas44. Under load other users' feedback commits every moment, so the table is never at the
    version a cached history matched, and each check (a chat of every user idle past `sync_seconds`) read the user's
    ids and arrival times (~3x a count's cost). While every commit since only added rows, a count tells: no row of the
    user is read. A commit that deleted or changed rows (a DELETE and an import of as many rows, a `received_again`)
    still has them read and compared."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    assert len(b.history("t", "u")) == 2  # cached by b, at the table's version
    read_rows, row_keys = [], b._row_keys
    b._row_keys = lambda tenant, user_id: read_rows.append(user_id) or row_keys(tenant, user_id)
    for i in range(3):  # another replica's feedback of other users
        a.add_preferences(*prefs("t", f"other{i}", 2))
        assert b.count_preferences("t", "u") == 2
    assert read_rows == []  # before: one read of u's rows per check
    a.compact(keep_versions_for=timedelta(minutes=5))  # rows rewritten, none changed (read once: Lance's
    assert b.count_preferences("t", "u") == 2  # ReserveFragments reaches Python as an unnamed operation)
    read_rows.clear()
    a.add_preferences(*prefs("t", "other9", 2))
    assert b.count_preferences("t", "u") == 2 and read_rows == []
    a.add_preferences(*prefs("t", "u", 1, start=2))  # u's own rows grow: the count differs
    assert b.count_preferences("t", "u") == 3 and len(b.history("t", "u")) == 3

    a.preferences.delete(owner_filter("t", "u"))  # another replica's DELETE of u (its purge not yet made) ...
    later = prefs("t", "u", 3, start=5)
    a.add_preferences(*later)  # ... and an import of as many rows
    assert b.search("t", "u", later[1][1], 1)[0][0].pref_id == "t-u-6" and read_rows == ["u"]
    before = b.history("t", "u").meta.column("received_at").to_pylist()
    assert a.received_again("t", "u", ["t-u-5"]) == 1
    assert b.history("t", "u").meta.column("received_at").to_pylist() != before


def test_a_delete_and_import_landing_while_a_cached_history_is_counted_is_seen(tmp_path):
    """Review of replicas44: the count of `_matches` stands for the version read before it only if the table did not
    move on meanwhile; another replica's DELETE and an import of as many rows landing between that look and the
    count (the count made on the newer version) are caught by looking at the version again and reading the rows."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    assert len(b.history("t", "u")) == 2
    a.add_preferences(*prefs("t", "other", 1))  # the table moves on by an append: b's check counts
    table, later = b.preferences, prefs("t", "u", 2, start=5)
    count = table.count_rows

    def count_after_a_delete_and_an_import(where=None):
        del table.count_rows  # once
        a.preferences.delete(owner_filter("t", "u"))
        a.add_preferences(*later)
        return count(where)

    table.count_rows = count_after_a_delete_and_an_import
    assert b.search("t", "u", later[1][1], 1)[0][0].pref_id == "t-u-6"  # without the second look: t-u-1, deleted


def test_a_history_grown_by_the_replicas_own_write_is_still_checked_by_a_count(tmp_path):
    """Review of replicas44: a write of the user's rows through this replica (their feedback: with affinity, where
    their chats go) grew the cached history and dropped the version it was known to match, so the check after it (the
    user's next chat) read their rows. The rows a write adds are an append, which the check's count counts: the
    version stays, and while the commits since only added rows no row of the user is read."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b.add_preferences(*prefs("t", "u", 2))
    assert len(b.history("t", "u")) == 2
    read_rows, row_keys = [], b._row_keys
    b._row_keys = lambda tenant, user_id: read_rows.append(user_id) or row_keys(tenant, user_id)
    b.add_preferences(*prefs("t", "u", 1, start=2))  # the user's feedback through b: the cached history grows
    a.add_preferences(*prefs("t", "other", 2))  # another replica's feedback of another user
    assert b.count_preferences("t", "u") == 3 and read_rows == []  # before: u's rows read
    a.add_preferences(*prefs("t", "u", 1, start=3))  # u's row through the other replica: the count differs
    assert b.count_preferences("t", "u") == 4 and len(b.history("t", "u")) == 4  # dropped, and cached again
    a.preferences.delete(owner_filter("t", "u") + " AND pref_id = 't-u-0'")  # one deleted and one added there,
    a.add_preferences(*prefs("t", "u", 1, start=5))
    b.add_preferences(*prefs("t", "u", 1, start=4))  # one added here: as many rows as the grown history holds
    assert sorted(b.history("t", "u").meta.column("pref_id").to_pylist()) == [f"t-u-{i}" for i in range(1, 6)]
