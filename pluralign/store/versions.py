"""Removing a LanceDB table's old versions, and nothing else.

lancedb deprecates `Table.cleanup_old_versions` and `Table.compact_files` for `Table.optimize`, which
does three things in one call (Lance's `OptimizeAction::All`): it compacts small fragments, removes
old versions and folds new rows into the indexes. Where the store only wants the removal (the clock
and lease tables, whose rows other replicas update at the same moment: a compaction would rewrite the
fragments they are updating; a purge's removal under the write lock, just after its own rewrite), or a
compaction `optimize` cannot ask for (`materialize_deletions_threshold`), it calls Lance's own
`LanceDataset` methods, which lancedb's deprecated ones called (lancedb 0.40, pylance 14): the same
work, with no warning.
"""

from __future__ import annotations

from datetime import timedelta

from pluralign.store.failures import OldVersionsLeft


def remove_old_versions(table, older_than: timedelta, *, delete_unverified: bool = False):
    """Remove `table`'s (a lancedb `Table`) versions older than `older_than` with every file only they
    name; the newest version always stays. `delete_unverified` also removes files no version names
    (an append a killed process never committed) however new: only for a process alone on the table,
    as such a file may be another process's write in flight. Returns Lance's `CleanupStats`; Lance's
    OSError, RuntimeError or ValueError pass through. Raises `OldVersionsLeft` (an OSError) when files were
    not deleted: Lance counts a delete the store refused or failed (`failed_deletes`; a bucket policy without
    s3:DeleteObject, a 5xx) and raises nothing, which left a purged user's text in the bucket unsaid."""
    stats = table.to_lance().cleanup_old_versions(older_than, delete_unverified=delete_unverified)
    if stats.failed_deletes:
        raise OldVersionsLeft(f"{stats.failed_deletes} files of old versions of {table.name} could not be deleted "
                              f"({stats.old_versions} old versions; the store refused or failed the deletes): they are left")
    return stats


def compact_with_deletions(table) -> None:
    """Rewrite every fragment of `table` that has deleted rows (however few) and merge small ones, so
    no data file of the newest version holds a deleted row (`Table.optimize` leaves a fragment under
    10% deleted as it is); `table` then reads the new version. Lance's errors pass through."""
    table.to_lance().optimize.compact_files(materialize_deletions_threshold=0.0)
    table.checkout_latest()
