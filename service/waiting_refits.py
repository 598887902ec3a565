"""The users whose background refits wait behind a feedback backlog or are queued, kept on disk until they ran.

Why: their feedback is safe in the log and, once moved, in the table, but their row in the users table is refitted
only by the background refit (or their own next read). What reads that table as it is (audits, the population a new
user is compared with, exports) keeps the row of before their feedback until then. A clean stop writes the waiting
users to `refits-dropped.json` (`service.users.services.keep_dropped_refits`); a crash (kill -9, the OOM killer)
during a backlog lost them: the records the log replays at the next start are refitted (`Ingestor.replayed`), but the
records already moved went from the log with their segments, and nothing durable says whose refit had not run (the
table keeps no time of a row's move, and finding every user whose row is older than their comparisons reads every row
of both tables).

How: each user joining the waiting or the queued refits is appended, one JSON line per batch of them, to
WAITING_REFITS_FILE in the data folder (a write, no fsync: a process killed keeps what it wrote; a machine that loses
power may lose the last lines, whose users are refitted at their next read). The format, the whole write (`rewrite`)
and the read are the owed retractions' (`service.key_sets`); the append is this file's alone: it is written at every
move of the ingest worker, where a whole write with an fsync of up to `service.feedback.services.MAX_WAITING_REFITS` users would cost more than
the move's commit. The file is removed when the refit queue
has drained with nobody waiting, and read at the next start (`service.users.services.refit_dropped`). Callers hold
`Runtime.refit_lock`. A user stays owed while their refit runs (`Runtime.running_refit`): the file written whole again
meanwhile (`rewrite`, at the bound) names them, and a stop that stops waiting for it keeps them in the stop's file
(`Runtime.stop_refits`); else a kill after either would lose their refit.

The users of rows just moved are named here by the ingest worker itself (`owe`, its `Ingestor.before_done`), before
the feedback log lets go of their records: were they named only by the move's later hook
(`refit_waiting`), a kill between the log removing a moved record's segment and that hook would lose their refit (the
log replays nothing of them, and the file would not name them). They stay `moving` until that hook has handed them on to
the waiting or queued refits (`handed_on`), and the file keeps naming them meanwhile whatever else drains it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from pluralign.store.failures import StoreUnavailable
from service.key_sets import encode_line, read_keys, write_keys

log = logging.getLogger("pluralign.service")

if TYPE_CHECKING:
    from service.runtime import Runtime

WAITING_REFITS_FILE = "refits-waiting.jsonl"  # under the data folder: [tenant, user_id] keys (`service.key_sets`)


class WaitingRefits:
    """WAITING_REFITS_FILE at `path`: `add` appends users, `rewrite` replaces them all, `drop` removes the file,
    `read` returns what a stopped process left. A file that cannot be written is logged (its users are refitted at
    their next read), never raised: a refit is never held up by it. `lines`: lines appended since the file was last
    written whole (`rewrite`) or removed."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = 0
        # users of rows the ingest worker moved, named here (`owe`) and not yet handed on to the waiting or queued refits
        # (`handed_on`): the file names them whatever drains it meanwhile (`rewrite`, `drop`)
        self.moving: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # the worker's `owe` (no `Runtime.refit_lock`) against a drain's `drop`

    def owe(self, keys: Iterable[tuple[str, str]]) -> None:
        """The ingest worker's `before_done`: the users of rows just stored, named before the log lets go of them."""
        keys = set(keys)
        with self._lock:
            self.moving |= keys
            self._append(keys)

    def handed_on(self, keys: Iterable[tuple[str, str]]) -> None:
        """These users' refits now wait or are queued (`Runtime.dropped_refits`, `pending_refits`), which name them."""
        with self._lock:
            self.moving.difference_update(keys)

    def add(self, keys: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            self._append(keys)

    def _append(self, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(keys)
        if not keys:
            return
        line = encode_line(keys)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                # a line is whole, or torn and skipped (`names`). A torn line ends the file when a write was cut short
                # (a full disk writes part of it, then fails; a machine that lost power): the next line starts on a line
                # of its own. Glued to the torn one, it would be skipped with it at the next
                # start (the users the worker names at each move, `owe`, lost to a kill once the disk had room again)
                size = os.fstat(fd).st_size
                view = memoryview(line if size == 0 or os.pread(fd, 1, size - 1) == b"\n" else b"\n" + line)
                try:
                    while view:  # a short write (a full disk): the rest, which raises the disk's error
                        view = view[os.write(fd, view):]
                except OSError:
                    with contextlib.suppress(OSError):  # cut back to the lines written whole: no part of a user's id left
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
            self.lines += 1
        except OSError as exc:
            log.error("%s cannot be written (%s): these users' background refits would be lost by a crash before they "
                      "run (each is refitted at their next read)", self.path, exc)

    def rewrite(self, keys: Iterable[tuple[str, str]]) -> None:
        """The file holds `keys` and the `moving` users only (one line), or is removed when there are none."""
        with self._lock:
            self._rewrite(set(keys) | self.moving)

    def _rewrite(self, keys: set[tuple[str, str]]) -> None:
        if not keys:
            self._unlink()
            return
        try:
            write_keys(self.path, keys)
            self.lines = 1
        except OSError as exc:
            log.error("%s cannot be written (%s): these users' background refits would be lost by a crash before they "
                      "run (each is refitted at their next read)", self.path, exc)

    def forget(self, gone: set[tuple[str, str]]) -> None:
        """The file without the users of `gone` (deleted: their ids leave the disk with their rows), the others kept;
        nothing is written when it names none of them."""
        text = self.text()
        # a pair is written as msgspec encodes it (`add`): a look at the bytes, not a decode of every line (a DELETE
        # takes the lock that the refits' queueing takes; 100,000 users decode in ~260 ms). Without its closing `]`: a
        # line a power loss cut short after the id holds it too (else left on disk by the DELETE)
        with self._lock:
            self.moving.difference_update(gone)
        if any(msgspec.json.encode(list(key))[:-1] in text for key in gone):
            self.rewrite(key for key in self.names(text) if key not in gone)

    def drop(self) -> None:
        """The file removed: no refit is owed any more, but those of the `moving` users, which it is left naming."""
        with self._lock:
            self._rewrite(set(self.moving))

    def _unlink(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
            self.lines = 0
        except OSError as exc:  # read again at the next start: a refit twice is the same fit
            log.error("%s cannot be removed: %s", self.path, exc)

    def read(self) -> list[tuple[str, str]]:
        """The users the file names, each once, in the order first named; of a line cut short by a crash mid-write, or
        damaged, those it still names whole (logged: `names`)."""
        text = self.text()
        self.lines = len(text.splitlines())
        return self.names(text)

    def text(self) -> bytes:
        """The file's bytes; b"" when there is none, or when it cannot be read (logged)."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            log.error("%s cannot be read (%s): the users whose refits waited are refitted at their next read", self.path, exc)
            return b""

    def names(self, text: bytes) -> list[tuple[str, str]]:
        """The users the file's `text` names, each once, in the order first named (`read`); of a line cut short or
        damaged, those it still names whole (`service.key_sets.read_keys`)."""
        keys, damaged, unread = read_keys(text, 2)
        if damaged:
            log.warning("%s: %d lines cut short or damaged: the users they still name whole are kept%s", self.path, damaged,
                        f"; {unread} other bytes named no whole user (each is refitted at their next read)" if unread else "")
        return keys


def owed_now(rt: Runtime) -> set[tuple[str, str]]:
    """The users (tenant, user_id) whose background refits wait, are queued or run, the caller holding
    `rt.refit_lock`: what the file must name when written whole (the one running included: left out, a
    kill before it ended would lose it)."""
    return rt.dropped_refits | rt.pending_refits | ({rt.running_refit} if rt.running_refit is not None else set())


def owed_refits(rt: Runtime) -> set[tuple[str, str]]:
    """The users (tenant, user_id) whose background refits wait, are queued, run, or are named on disk."""
    with rt.refit_lock:  # its bytes only (~2 ms for the bound's 100,000 users): decoded once the lock is let go
        owed, text = owed_now(rt), rt.waiting_refits.text()
    return owed | set(rt.waiting_refits.names(text))


def forget_refits(rt: Runtime, keys: Iterable[tuple[str, str]]) -> None:
    """Deleted users (tenant, user_id) with nothing stored any more leave the waiting and queued refits and the
    file: a DELETE leaves no id of theirs on disk (not until the refit queue drained, for good while a
    backlog never cleared). A refit of theirs already queued still runs, and writes nothing (`refit`). Those with rows
    stored again once they left (feedback sent after the DELETE, moved in after the caller looked: the look and the
    removal are not one step, the store's read being too slow to take under the refit lock) are owed again, as
    their move owed them (`service.feedback.services.refit_waiting`); else their refit would be lost. A look
    the store does not answer is logged (such a user is refitted at their next read): the DELETE goes on."""
    from service.feedback.services import refit_waiting  # it queues refits through service.users.services

    gone = set(keys)
    if not gone:
        return
    with rt.refit_lock:
        rt.dropped_refits.difference_update(gone)
        rt.pending_refits.difference_update(gone)  # nor written back by the bound's rewrite
        if rt.running_refit in gone:  # nor by a stop's
            rt.running_refit = None
        rt.waiting_refits.forget(gone)
    try:
        back = rt.store.users_with_preferences(gone)  # a move from now on owes their refit itself
    except StoreUnavailable as exc:
        log.error("could not look whether deleted users sent feedback again meanwhile (%s): any who did is refitted at "
                  "their next read", exc)
        return
    if back:
        refit_waiting(rt, sorted(back))
