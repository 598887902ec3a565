"""Which commits to a table only added rows: what lets a replica check a cached history by a count.

With replicas a cached history older than `sync_seconds` is checked against the table (`Store._cached`). Reading
the user's rows' ids and arrival times costs a LanceDB query that reads their data pages (~5-24 ms on the 2-core
machine, BENCHMARKS.md "replicas44"); a count of the user's rows is answered by the BITMAP index (~2-3 ms). Under
load another user's feedback commits every moment, so the table is never at the version the history matched, and
a chat of a user idle longer than `sync_seconds` paid that read. A count alone misses a DELETE and an import of as
many rows (review 44). But when every commit since the version the history matched only added rows (an append, an
index, a compaction's rewrite of the same rows), the user's rows can only have grown: the same count is the same
rows. Each commit's operation is read once from its transaction file (~0.1 ms locally, cached per process, shared by
every user's check); a version whose transaction cannot be read (removed by a DELETE's purge of old versions) counts
as one that may have changed rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# Lance operations that neither remove nor change a row (`lance.LanceOperation`): after only these, a user's rows
# are those they had and the rows appended. Delete, Update (`received_again`), Merge and Project (columns added or
# dropped), Overwrite, Restore and the others may change them.
ADDING_OPERATIONS = frozenset({"Append", "CreateIndex", "Rewrite", "UpdateConfig"})
MAX_COMMITS_READ = 16  # commits one check reads at most: more (a history checked long ago under load) read its rows
KEPT = 4096  # versions whose operation is kept (a dict entry each): older ones are read again if asked


class AddingCommits:
    """Whether the commits between two versions of one table only added rows. `operation(version)`: the name of the
    Lance operation that made `version` (`type(transaction.operation).__name__`), or None when its transaction is
    not found; it may raise OSError, RuntimeError or ValueError (such a version counts as one that changed rows)."""

    def __init__(self, operation: Callable[[int], str | None]):
        self._operation = operation
        self._lock = threading.Lock()
        self._adding: OrderedDict[int, bool] = OrderedDict()  # version -> whether its commit only added rows

    def only_added(self, since: int, to: int) -> bool:
        """Whether every commit of the versions after `since` up to `to` only added rows (False when more than
        MAX_COMMITS_READ are unknown, or `to` is before `since`)."""
        if to < since or to - since > MAX_COMMITS_READ:
            return False
        return all(self._only_adds(version) for version in range(since + 1, to + 1))

    def _only_adds(self, version: int) -> bool:
        with self._lock:
            known = self._adding.get(version)
        if known is not None:
            return known
        try:  # outside the lock: another check reads the transactions it needs meanwhile
            adding = self._operation(version) in ADDING_OPERATIONS
        except (OSError, RuntimeError, ValueError):  # removed by a purge of old versions, or unreadable now
            adding = False
        with self._lock:
            self._adding[version] = adding
            while len(self._adding) > KEPT:
                self._adding.popitem(last=False)
        return adding
