"""Review rr44 of reviewrp44 (`pluralign.store.commits`): what reading the preferences table's commits meets on the
Lance installed here. A compaction of the indexed table commits Lance's ReserveFragments and then a Rewrite naming
its remapped indexes, whose transaction Lance's Python binding cannot build (`read_transaction` raises TypeError:
`RewrittenIndex.__init__() missing 3 required positional arguments`, lance 14.0.2)."""

from __future__ import annotations

import time
from datetime import timedelta

from pluralign.store import Store
from pluralign.store.tables import owner_filter
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
