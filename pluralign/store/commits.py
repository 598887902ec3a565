"""Which commits to a table only added rows: what lets a replica check a cached history by a count.

With replicas a cached history older than `sync_seconds` is checked against the table (`Store._cached`). Reading
the user's rows' ids and arrival times costs a LanceDB query that reads their data pages (~8-13 ms on the 2-core
machine, ~55 ms against moto's S3: BENCHMARKS.md "review rp44"); a count of the user's rows is answered by the
BITMAP index (~4-6 ms; ~11 ms against moto). Under load another user's feedback commits every moment, so the table
is never at the version the history matched, and a chat of a user idle longer than `sync_seconds` paid that read. A
count alone misses a DELETE and an import of as many rows. But when every commit since the version the
history matched only added rows (an append, an index, a compaction's rewrite of the same rows), the user's rows can
only have grown: the same count is the same rows. Each commit's operation is read once from its transaction file
(~0.1-0.5 ms locally, ~7 ms against moto; cached per process, shared by every user's check); a version whose
transaction cannot be read (removed by a DELETE's purge of old versions; a compaction's Rewrite that remapped
indexes, which Lance's Python binding cannot build) counts as one that may have changed rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# Lance operations that neither remove nor change a row (`lance.LanceOperation`): after only these, a user's rows
# are those they had and the rows appended. Delete, Update (`received_again`), Merge and Project (columns added or
# dropped), Overwrite, Restore and the others may change them. Compaction's ReserveFragments reaches Python as an
# unnamed `BaseOperation`: counted as one that may (the first check of each history after a compaction reads rows).
ADDING_OPERATIONS = frozenset({"Append", "CreateIndex", "Rewrite", "UpdateConfig"})
# transactions one check reads at most (one at a time, each a GET on an object store): with more unknown, it reads
# that many (the next check goes on from there) and the history's rows are read and compared this time
MAX_UNREAD = 8
KEPT = 4096  # versions whose operation is kept (a dict entry each); a history known at an older version: rows read


class AddingCommits:
    """Whether the commits between two versions of one table only added rows. `operation(version)`: the name of the
    Lance operation that made `version` (`type(transaction.operation).__name__`), or None when its transaction is
    not found; whatever it raises (OSError, Lance's RuntimeError, ValueError, its binding's TypeError) counts the version as
    one that changed rows. It is
    called one call at a time: a Lance dataset handle read from two threads at once raises "Already borrowed"."""

    def __init__(self, operation: Callable[[int], str | None]):
        self._operation = operation
        self._lock = threading.Lock()  # guards `_adding`
        self._reading = threading.Lock()  # one `operation` call at a time
        self._adding: OrderedDict[int, bool] = OrderedDict()  # version -> whether its commit only added rows

    def only_added(self, since: int, to: int) -> bool:
        """Whether every commit of the versions after `since` up to `to` is known to have only added rows (False when
        one did not, when more than MAX_UNREAD were unknown (none of them then read), or `to` is before `since` or KEPT versions after it)."""
        if to < since or to - since > KEPT:
            return False
        versions = range(since + 1, to + 1)
        with self._lock:
            known = {version: self._adding[version] for version in versions if version in self._adding}
        if not all(known.values()):
            return False
        unknown = [version for version in versions if version not in known]
        # more unknown than a check reads: none read, the caller reads the rows (its history then matches the newest
        # version, so its next check starts from there); reading MAX_UNREAD first costs about twice that read
        return len(unknown) <= MAX_UNREAD and all(self._only_adds(version) for version in unknown)

    def _only_adds(self, version: int) -> bool:
        with self._reading:
            with self._lock:
                known = self._adding.get(version)
            if known is not None:  # read by another check while this one waited
                return known
            try:
                adding = self._operation(version) in ADDING_OPERATIONS
            except Exception:  # whatever the read raised, the version may have changed rows
                # removed by a purge of old versions (OSError), unreadable now, or a transaction Lance's Python binding
                # cannot build: a compaction's Rewrite that remapped indexes raises TypeError (`RewrittenIndex`, lance
                # 14.0.2), which must not escape into the chat (`test_reviewrr44_commits`)
                adding = False
            with self._lock:
                self._adding[version] = adding
                while len(self._adding) > KEPT:
                    self._adding.popitem(last=False)
        return adding
