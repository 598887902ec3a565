"""A lease that lets one process at a time do a store's maintenance (deletes, compaction, removal of
old versions) when several processes (replicas) write the same LanceDB tables.

Why: two replicas purging at once lose each other's work. A rewrite that loses to the other
replica's delete leaves data files no version names, holding the rows that delete removed; and
Lance's `delete_unverified` removal of old versions (`store.versions`), the only one that removes such files at
once, also removes the files of another process's write in flight, which then commits a version
naming missing files (a table that answers "Not found" until its index is rebuilt: seen as 500s
from DELETEs answered by two replicas at once). With the lease, maintenance never runs on two
replicas at once, so no purge loses to another, and old versions are removed without
`delete_unverified` (what other replicas append meanwhile is left alone).

How: one row in a LanceDB table of its own (`TABLE`); taking the lease is a conditional update
(`holder = '' OR expires < now`), which Lance commits atomically: of two processes updating the row
at once, the second's commit conflicts, is redone on the newest version, and finds the row taken
(4 processes x 15 turns on a local folder: no two turns overlapped). A holder renews the row every
`ttl_s / 3` while it holds it; a holder that died frees it after `ttl_s`. Neither LanceDB nor Lance
offers a lock between processes (their commits are optimistic), and a file lock would not reach an
object store, hence this module. Times are unix seconds of each process's clock: replicas' clocks
must agree to well under `ttl_s`; an expiry more than `MAX_AHEAD` TTLs ahead (a dead holder whose clock
ran ahead) counts as free, so such a lease does not stay taken for hours.

A holder that stops renewing for `ttl_s` (paused by SIGSTOP or a frozen VM, or its renewals failing)
has lost the lease to whoever takes it next. So before each destructive step the holder `confirm`s
it: a conditional update that extends the lease only while this process is still its holder, and
raises `LeaseLost` otherwise; the turn then stops before that step. A pause between the confirmation
and the step itself, longer than `ttl_s`, is not caught: Lance cannot make one table's commit
conditional on another's row, so this narrows the window to one step rather than closing it.

A turn that stops part way (its process killed, or LeaseLost) may have deleted a user's rows without
yet removing the files that hold them. So a holder marks the tables it is about to delete from
(`mark`: one row `purge:<table>` each, beside the lease row) and clears them once purged (`clear`);
the next holder finds them (`pending`) and finishes that purge first (`Store._maintenance`). A store
with one process (no lease) keeps the same marks in the same table (`PurgeMarks`, the lease row left
free), so a purge its killed process left is finished on its next start; a store that moves from one
process to replicas, or back, finishes the other's marks too.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from datetime import timedelta

import pyarrow as pa

from pluralign.store.failures import Problems, StoreUnavailable, unavailable
from pluralign.store.versions import remove_old_versions

log = logging.getLogger("pluralign.store")
TABLE = "maintenance_lease"
LEASE_ROW = "name = 'store'"
PURGE = "purge:"  # a mark's row name: PURGE + the table whose purge a stopped turn left to do
TTL_S = 30.0
POLL_S = 0.05
TIDY_EVERY = 64  # alone on the store, the marks table's old versions go after this many clears (2 versions each)
MAX_AHEAD = 10  # an expiry more than this many TTLs ahead of a process's clock counts as free (`Lease._take`)
LANCE_ERRORS = (OSError, RuntimeError, ValueError)  # Lance raises an object store's failed GET of a manifest as a ValueError


class LeaseLost(TimeoutError):
    """This process held the maintenance lease but another took it after `ttl_s` without a renewal
    (this process was paused, or could not renew it): its turn stops before the next destructive step.
    A TimeoutError, so a caller that asks for another try later (a 503 with Retry-After) does so."""


def lease_schema() -> pa.Schema:
    return pa.schema([("name", pa.string()), ("holder", pa.string()), ("expires", pa.float64())])


def free_row() -> pa.Table:
    return pa.table({"name": ["store"], "holder": [""], "expires": [0.0]}, schema=lease_schema())


def open_lease_table(db, exists: bool):
    """The lease table of `db` (a LanceDB connection), made with its one free row when missing. Two
    processes making it at once: Lance commits one table; the other opens it."""
    if exists:
        return db.open_table(TABLE)
    try:
        return db.create_table(TABLE, free_row())
    except (OSError, RuntimeError, ValueError):  # made by another process meanwhile
        return db.open_table(TABLE)


class PurgeMarks:
    """The purges a stopped delete left to do: one row `purge:<table>` each in `table` (the lease
    table), written before rows are deleted from that table and removed once it is purged. With one
    process on the store (`alone`), the Store keeps its marks here and, as the table's only writer,
    remembers them after one read (a DELETE then costs two small commits, about 5 ms, and no read);
    with replicas, `Lease` (a PurgeMarks whose `mark` first confirms the lease) reads them each time.
    Lance's OSError or RuntimeError pass through (after one, the marks are read again)."""

    def __init__(self, table, alone: bool = False):
        self.table = table
        self._alone = alone
        self._known: set[str] | None = None  # alone: the marks the table holds, once read
        self._clears = 0

    def pending(self) -> set[str]:
        """The tables whose purge a stopped turn left to do (marked and never cleared)."""
        if self._known is not None:
            return set(self._known)
        rows = self.table.search().where(f"NOT ({LEASE_ROW})").limit(None).to_arrow().column("name").to_pylist()
        found = {name.removeprefix(PURGE) for name in rows if name.startswith(PURGE)}
        if self._alone:
            self._known = set(found)
        return found

    def _before_mark(self) -> None:
        """What must hold before a mark is written (`Lease`: that this process still holds the lease)."""

    def mark(self, names: list[str]) -> None:
        """Before deleting rows from the named tables: they need a purge, whoever finishes it (one commit
        when any is not marked yet, none otherwise)."""
        new = sorted(set(names) - self.pending())
        if new:
            self._before_mark()
            self._write(lambda: self.table.add(pa.table({"name": [PURGE + n for n in new], "holder": [""] * len(new),
                                                         "expires": [time.time()] * len(new)}, schema=lease_schema())))
            if self._known is not None:
                self._known |= set(new)

    def clear(self, names: list[str]) -> None:
        """The named tables are purged: their marks go."""
        if names and self.pending() & set(names):
            self._write(lambda: self.table.delete("name IN (" + ", ".join(f"'{PURGE}{n}'" for n in names) + ")"))
            if self._known is not None:
                self._known -= set(names)
            self._clears += 1
            if self._alone and not self._clears % TIDY_EVERY:  # alone, no one reads an old version: all go
                self.drop_old_versions(timedelta(0))

    def _write(self, commit) -> None:
        try:
            commit()
        except BaseException:  # committed or not: read again next time
            self._known = None
            raise

    def drop_old_versions(self, older: timedelta = timedelta(minutes=5)) -> None:
        """Remove the table's versions older than `older` (a mark and its clearing commit one each;
        nothing reads them afterwards); logs, and leaves them, when Lance cannot."""
        try:
            remove_old_versions(self.table, older)  # not `optimize`: a compaction would rewrite the lease row
        except (OSError, RuntimeError, ValueError) as exc:  # Lance raises an object store's failed GET as a ValueError
            log.warning("old versions of the maintenance lease table not removed (%s)", exc)


class Lease(PurgeMarks):
    """The store's maintenance lease (see the module). `with lease:` blocks until this process holds it
    and renews it until the block ends; re-entrant within a process (the caller serialises its own
    threads). Raises TimeoutError when not taken within `wait_s` seconds.

    A table an operator removed or damaged (its row gone, or doubled) is made again with its one free
    row by whoever looks at it next (`db`, the LanceDB connection, reopens it), so turns go on. If a
    process held the lease meanwhile, it loses it (its next `confirm` raises LeaseLost).

    Stored data that cannot be read or written (an object store down or refusing the keys, a full or
    read-only disk: `pluralign.store.failures`) while taking or confirming the lease raises
    StoreUnavailable naming the table (an OSError: the service answers 503 with the reason), noted in
    `problems` (the store's, for /health), rather than waiting `wait_s` as for a lease another holds; a
    renewal or a release that meets it logs it and goes on (unrenewed, the lease expires after `ttl_s`).
    `where` and `secrets`: the store's URI and credentials (the latter kept out of the error's words)."""

    def __init__(self, table, ttl_s: float = TTL_S, wait_s: float = 600.0, db=None, where: str = "", secrets=(),
                 problems: Problems | None = None):
        super().__init__(table)
        self.db = db
        self.where, self.secrets, self.problems = where, secrets, problems
        self.max_ahead_s = MAX_AHEAD * ttl_s  # a renewal sets `ttl_s` ahead; past this, a clock was wrong
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.holder = ""
        self._depth = 0
        self.taken_at = 0.0  # time.monotonic() when this process last took it (its depth from 0 to 1)
        self._lost = False  # a renewal found the row no longer ours
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """How many `with lease:` blocks of this process are open (0: not held; 1: its outermost turn)."""
        return self._depth

    def _unavailable(self, exc: BaseException, action: str) -> StoreUnavailable | None:
        """`exc` as a StoreUnavailable naming the lease table (noted in `problems`), or None when it is no
        storage failure (a commit conflict, a table not found)."""
        found = unavailable(exc, f"table `{TABLE}`", self.where, action, self.secrets)
        if found is not None and self.problems is not None:
            self.problems.failed(found)
        return found

    def _succeeded(self, action: str) -> None:
        if self.problems is not None:
            self.problems.succeeded(f"table `{TABLE}`", action)

    def _take(self, holder: str) -> bool:
        """Whether this process took the lease now (False: another holds it, or took it first). Raises
        StoreUnavailable when the table cannot be read or written (`_unavailable`)."""
        now = time.time()
        # an expiry further ahead than a renewal sets: a holder whose clock ran ahead, then died (else it stays for hours)
        free = f"{LEASE_ROW} AND (holder = '' OR expires < {now!r} OR expires > {now + self.max_ahead_s!r})"
        try:
            # an update commits a version even when it changes no row: look first, update only a free row
            found = self.table.count_rows(free)
            if found != 1:
                if found > 1 or self.table.count_rows(LEASE_ROW) != 1:
                    self._repair(f"{found} free rows" if found else "no row")
                return False
            result = self.table.update(where=free, values={"holder": holder, "expires": now + self.ttl_s})
        except LANCE_ERRORS as exc:  # a conflict Lance did not redo: someone else took it
            if "not found" in str(exc).lower() and self.db is not None:
                # the table's folder removed (made again, free), or a stale handle's version removed (opened again)
                log.warning("maintenance lease table not found (%s): opened again, or made again when gone", exc)
                with contextlib.suppress(OSError, RuntimeError, ValueError):
                    self.table = open_lease_table(self.db, exists=False)
            elif (found := self._unavailable(exc, "read")) is not None:  # not another holder's: waiting cannot help
                raise found from exc
            else:
                log.debug("maintenance lease not taken (%s)", exc)
            return False
        self._succeeded("read")
        return result.rows_updated == 1

    def _repair(self, why: str) -> None:
        """The table holds something other than the one lease row (or is gone): write it again with its
        one free row. Two processes doing it at once: the later overwrite wins, one row either way."""
        if self.db is None:
            return
        log.warning("maintenance lease table damaged (%s): made again with its one free row", why)
        try:
            try:  # the purges left to do stay marked
                marks = self.table.search().where(f"NOT ({LEASE_ROW})").limit(None).to_arrow().cast(lease_schema())
            except (OSError, RuntimeError):
                marks = free_row().slice(0, 0)
            self.table = self.db.create_table(TABLE, pa.concat_tables([free_row(), marks]), mode="overwrite")
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("maintenance lease table not made again (%s)", exc)

    def _extend(self, holder: str) -> bool:
        """Push the lease's expiry `ttl_s` ahead if `holder` still holds it; False when another took it.
        Raises StoreUnavailable when the table cannot be written (`_unavailable`); other Lance errors pass."""
        try:
            result = self.table.update(where=f"holder = '{holder}'", values={"expires": time.time() + self.ttl_s})
        except LANCE_ERRORS as exc:
            if (found := self._unavailable(exc, "written")) is not None:
                raise found from exc
            raise
        self._succeeded("written")
        return result.rows_updated == 1

    def _renew(self, holder: str) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self._extend(holder):
                    self._lost = True
                    log.warning("maintenance lease lost: another process took it after %g s without a renewal", self.ttl_s)
                    return
            except LANCE_ERRORS as exc:  # a StoreUnavailable too: the lease expires after ttl_s if it goes on
                log.warning("maintenance lease not renewed (%s); trying again", exc)

    def confirm(self) -> None:
        """Before a destructive step: extend the lease if this process still holds it, else raise
        LeaseLost (another process took it after `ttl_s` without a renewal from this one). Also raises
        LeaseLost when the lease is not held at all (a step outside `with lease:`), StoreUnavailable when
        the lease table cannot be written, and lets Lance's other errors through (the turn stops too)."""
        if not self._depth:
            raise LeaseLost("the store's maintenance lease is not held by this process")
        if self._lost or not self._extend(self.holder):
            self._lost = True
            raise LeaseLost(f"the store's maintenance lease was taken by another process after {self.ttl_s:g} s "
                            "without a renewal from this one (paused, or its renewals failed); this turn stopped")

    def _before_mark(self) -> None:
        """A mark is written only while this process holds the lease: raises LeaseLost (nothing marked) otherwise."""
        self.confirm()

    def __enter__(self) -> Lease:
        if self._depth:
            self._depth += 1
            return self
        holder, deadline = uuid.uuid4().hex, time.monotonic() + self.wait_s
        while not self._take(holder):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the store's maintenance lease was not free within {self.wait_s:g} s")
            time.sleep(POLL_S)
        self.holder, self._depth, self._lost = holder, 1, False
        self.taken_at = time.monotonic()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, args=(holder,), name="lease", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth:
            return
        self._stop.set()
        self._renewer.join()
        for attempt in range(3):
            try:
                self.table.update(where=f"holder = '{self.holder}'", values={"holder": "", "expires": 0.0})
                self._succeeded("written")  # a try before it may have noted the table in `problems`
                break
            except LANCE_ERRORS as exc:  # left to expire after ttl_s when this keeps failing
                self._unavailable(exc, "written")
                log.warning("maintenance lease not released (%s)", exc)
                time.sleep(POLL_S * (attempt + 1))
        self.holder = ""
        self.drop_old_versions()  # each turn commits 2 versions and a renewal 1: nothing reads them after a turn
