"""The users whose background refits a clean stop dropped, kept on disk for the next start (`refits-dropped.json`).

Why: the stop writes them (`service.users.services.keep_dropped_refits`) and the next start queues their refits and
removes the file (`service.users.services.refit_dropped`); between the two, nothing else names them once the waiting
file (`service.waiting_refits`) is removed. The file is the third of the data folder's sets of keys, and is read and
written as the other two are (`service.key_sets`: one line of a JSON list of [tenant, user_id] keys, written whole in
one rename; the previous release's file, the same list without the line's end, reads as it is).

A file that cannot be decoded (cut short, a byte damaged) gives the users it still names whole (`key_sets.read_keys`),
queued as a readable file's; the log says how many bytes named no whole user, never which ids. A file that cannot be
read at all (a permission, an I/O error) holds users nothing else names: it is left as it is, written over by nothing
(a stop's write reads it again first, and writes only once it reads, its users with the stop's, but those deleted
meanwhile), listed under /health's `storage` (`PROBLEM_NAME`, `read`) and read again at each pass over the unfinished
DELETEs (`service.users.services.refit_dropped_again`, every `deletion_sweep_s`): once it reads, its users' refits are
queued and it is removed. Our own code for the same reason as `service.key_sets`: no library keeps a small set on disk
through such damage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from pluralign.store.failures import Problems, StoreUnavailable, storage_problem
from service.key_sets import read_keys, write_keys

log = logging.getLogger("pluralign.service")

DROPPED_REFITS_FILE = "refits-dropped.json"  # under the data folder: [[tenant, user_id], ...] a stop left to the next start
PROBLEM_NAME = "the dropped refits file"  # /health's `storage` `what` while it cannot be read (never its path)

Key = tuple[str, str]


class DroppedRefits:
    """DROPPED_REFITS_FILE at `path`: `take` reads it (the start, and `refit_dropped_again`), `remove` removes it once
    its users are queued, `keep` writes the users a stop dropped. A file that cannot be read at all is noted in
    `problems` (/health's `storage`) until it reads, and never written over."""

    def __init__(self, path: Path, problems: Problems | None = None):
        self.path = path
        self.problems = Problems() if problems is None else problems
        self._unread: OSError | None = None  # why the file, which names users nothing else does, cannot be read

    @property
    def unread(self) -> bool:
        """Whether the last read could not read the file at all (it is left as it is)."""
        return self._unread is not None

    def take(self) -> list[Key] | None:
        """The users the file names, each once ([] when there is none); of a damaged file, those it still names whole
        (logged). None when it cannot be read at all: logged at the first failure, noted for /health, left as it is."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self._read_again()
            return []
        except OSError as exc:
            if self._unread is None:
                log.error("%s cannot be read (%s): the users whose refits the last stop dropped are refitted once it "
                          "can be read (make it readable by the service: read again every deletion_sweep_s and at the "
                          "next start), or at their next read; nothing is written over it meanwhile", self.path, exc)
            self._unread = exc
            problem = storage_problem(exc) or ("read-only" if isinstance(exc, PermissionError) else "unreadable", None)
            self.problems.failed(StoreUnavailable(PROBLEM_NAME, str(self.path), "read", problem[0], str(exc), exc.errno))
            return None
        self._read_again()
        keys, damaged, unread = read_keys(data, 2)
        if damaged:
            log.error("%s cannot be read (cut short or damaged): the %d users it still names whole are refitted; %s",
                      self.path, len(keys), f"{unread} other bytes named no whole user (each is refitted at their next "
                      "read)" if unread else "nothing else of it was lost")
        return keys  # type: ignore[return-value]

    def _read_again(self) -> None:
        if self._unread is not None:
            log.info("%s can be read again", self.path)
            self._unread = None
        self.problems.forget(PROBLEM_NAME, "read")

    def remove(self) -> None:
        """The file removed, its users queued (logged when it cannot be: read again at the next start, a refit twice is
        the same fit)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("%s cannot be removed: %s", self.path, exc)

    def keep(self, keys: Iterable[Key], stored: Callable[[list[Key]], list[Key]] = list) -> int | None:
        """The stop's write: the file holds `keys` and, of a file the start could not read, read again first, the users
        it holds, those of both that `stored` keeps (the users with something still stored: one the file named may have
        been deleted while it could not be read, and no id of a deleted user is written); it is removed when none is
        left, and nothing is written when there are none to add to what the start read. Returns how many it holds; None,
        nothing written, when it still cannot be read and `keys` are not empty (its users would be lost) or it cannot be
        written (logged: the waiting file, left in place by the caller, still names `keys`)."""
        keys = list(keys)
        if not keys and self._unread is None:
            return 0
        held = self.take() if self._unread is not None else []  # else what it held was queued at the start
        if held is None:
            if not keys:
                return 0
            log.error("stopping: %s cannot be read, so it is not written over: the users of %d dropped background refits "
                      "stay named by the waiting refits' file for the next start", self.path, len(keys))
            return None
        keys = stored(list(dict.fromkeys([*held, *keys])))
        try:
            write_keys(self.path, keys)  # removed when none is left
        except OSError as exc:  # a full or read-only data folder
            log.error("stopping: the users of %d dropped background refits could not be kept for the next start: %s",
                      len(keys), exc)
            return None
        return len(keys)
