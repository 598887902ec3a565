"""Review rr44 of reviewrp44 (`pluralign.store.commits`): what reading the preferences table's commits meets on the
Lance installed here. A compaction of the indexed table commits Lance's ReserveFragments and then a Rewrite naming
its remapped indexes, whose transaction Lance's Python binding cannot build (`read_transaction` raises TypeError:
`RewrittenIndex.__init__() missing 3 required positional arguments`, lance 14.0.2)."""

from __future__ import annotations

import time
from datetime import timedelta

from pluralign.store import Store
from pluralign.store.tables import owner_filter
from tests.service.test_left28_store_writes import meets_not_found
from tests.service.test_store import DIM, prefs


def _unreadable(store: Store, since: int) -> list[int]:
    """The versions after `since` whose transaction Lance's Python binding cannot build."""
    found = []
    for version in range(since + 1, store.preferences.version + 1):
        try:
            store._operation_of(version)
        except TypeError:
            found.append(version)
    return found


def test_a_history_checked_between_a_compactions_two_commits_is_still_served(tmp_path):
    """A history checked while another replica's compaction (or a DELETE's rewrite) had committed its
    ReserveFragments and not yet its Rewrite is known to match the version between them; the next check read the
    Rewrite's transaction, whose TypeError escaped `AddingCommits` (it caught OSError, RuntimeError and ValueError):
    every chat of the user on that replica failed, and kept failing (nothing cached, the history kept) until the
    history was evicted. Such a version now counts as one that may have changed rows: the rows are read once."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    history = b.history("t", "u")
    before = a.preferences.version
    for i in range(4):  # other users' feedback, a fragment each
        a.add_preferences(*prefs("t", f"other{i}", 2))
    a.compact(keep_versions_for=timedelta(minutes=5))
    a.preferences.delete(owner_filter("t", "other1"))  # another replica's DELETE (its purge not yet made) ...
    a.compact(keep_versions_for=timedelta(minutes=5), every_table=True)  # ... and a compaction: its Rewrite remaps the indexes
    rewrites = _unreadable(a, before)
    assert rewrites, "the compaction committed no transaction Lance's binding cannot build: the test tests nothing"
    # b's check of u between the compaction's ReserveFragments and its Rewrite (the table then at that version)
    b.histories.checked(("t", "u"), time.monotonic(), rewrites[0] - 1, history)
    assert b.count_preferences("t", "u") == 2  # before: TypeError out of the chat's search
    assert b._adding_commits.only_added(rewrites[0] - 1, rewrites[0]) is False  # read once, counted as a change
    assert b.count_preferences("t", "u") == 2


def test_a_write_made_again_after_another_replica_stored_its_row_leaves_no_history_that_a_count_passes(tmp_path, monkeypatch):
    """The case reviewrp44 left alone. b's feedback of u (row t-u-2) is found not held; another replica stores the same
    row (the same feedback moved by both, an idempotent retry); a chat of u on b loads u's history, t-u-2 in it; b's
    commit meets "Not found" and is made again with only the rows the table lacks (none), yet the cached history was
    grown by every row of the batch: t-u-2 twice, one more row than the table holds. Once another replica stores a row
    of u, the counts agree, and since the grown history kept the version it matched and every commit since only added
    rows, the count passed it: u's new row was never searched, the duplicate was. (Before reviewrp44 the grown history
    lost its version and the next check read its rows.) A write made again now drops its users' histories."""
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    both, held = prefs("t", "u", 1, start=2), b.held_preferences

    def held_then_stored_elsewhere(rows):
        found = held(rows)  # t-u-2 not held yet ...
        a.add_preferences(*both)  # ... then another replica stores it
        assert len(b.history("t", "u")) == 3  # and a chat of u on b caches the user's history, t-u-2 in it
        return found

    monkeypatch.setattr(b, "held_preferences", held_then_stored_elsewhere)
    calls = meets_not_found(monkeypatch, b.preferences, "add", committed=False)
    b.add_preferences(*both)
    assert len(calls) == 1 and b.preferences.count_rows(owner_filter("t", "u")) == 3  # made again: nothing lacking
    later = prefs("t", "u", 1, start=3)
    a.add_preferences(*later)  # another replica's new row of u: 4 rows, as many as the history grown twice held
    assert sorted(b.history("t", "u").meta.column("pref_id").to_pylist()) == [f"t-u-{i}" for i in range(4)]
    assert b.search("t", "u", later[1][0], 1)[0][0].pref_id == "t-u-3"
