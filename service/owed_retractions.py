"""Rows this replica stored that a retraction through another replica took back meanwhile: owed a retraction, kept on
disk until it is done.

Why: with replicas, a user may take back a row through replica b while it still waits in replica a's feedback log.
b records the retraction pending (`Store.record_retraction`) and answers 202; a's mover drops the row before storing
it (`Ingestor._not_retracted`). When b's record lands in the instant between a's look and a's commit, a stores the row
and must take it back itself (`service.users.retractions.retract_arrived`). That was done by the move's later hook
only, from memory: a kill between the commit and that hook (or during its tries) left the row stored for good, its
log record done or found stored at the replay, and the user told 202.

How: the ingest worker looks for such rows before the feedback log lets go of a move's records (`check`, its
`Ingestor.before_done`, also run for the records the replay finds stored), and writes their keys (tenant, user_id,
pref_id) to OWED_RETRACTIONS_FILE in the data folder, whole and fsynced, in the format of the waiting refits' file
(`service.key_sets.write_keys`: one line of a JSON list of keys; the previous release's file, the same list without the
line's end, reads as it is); a look the
store does not answer owes the whole batch, looked at again together (one read) before anything is taken back
(`service.users.retractions._look_again`). Each key leaves the file
once its retraction is done or found not owed (`paid_all`). The next start takes back what the file names. Rare: the file
exists only while such a row waits, so it is written whole each time.

A file that cannot be read (cut short by a crash or a full disk mid-copy, damaged) is replaced at the start by the keys
it still holds whole (`service.key_sets.salvage`), owed again as a readable file's, and nothing else of it is kept: a
copy kept for an operator would hold user ids that every later DELETE of those users, on any replica, would have to take out of a file
that no longer reads as JSON. Its other rows, taken back through another replica, stay stored until taken back again.
The log says how many keys were salvaged and how many bytes were not, never which ids (a log cannot be deleted per user).
A file that cannot be read at all (a permission, an I/O error) holds keys nothing else names: nothing writes over it,
while running either. Each write reads it again first, the same way as the start (`OwedRetractions._take_up`), and
once it reads, its keys are owed with the others, written with them and taken back then (`taken_up`); with no row owed
or paid, the pass over the unfinished DELETEs reads it again (`retry`), and writes again a file whose write failed.
Meanwhile, and
while a write fails (a full disk, a read-only folder), /health lists the file under `storage` (`PROBLEM_NAME`,
`written`): the rows owed are taken back while the service runs, but a crash would leave them stored.
"""

from __future__ import annotations

import glob
import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pluralign.store import StoredPreference
from pluralign.store.failures import Problems, StoreUnavailable, storage_problem
from service.key_sets import read_keys, write_keys

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("pluralign.service")

OWED_RETRACTIONS_FILE = "retractions-owed.json"  # under the data folder: [tenant, user_id, pref_id] keys (`service.key_sets`)
# an earlier release kept a damaged owed file beside it as `<OWED_RETRACTIONS_FILE>.damaged-<UTC time>`: taken up at the start
SET_ASIDE_SUFFIX = ".damaged-"
PROBLEM_NAME = "the owed retractions file"  # /health's `storage` `what` while it cannot be written (never its path)

Key = tuple[str, str, str]  # (tenant, user_id, pref_id)


class OwedRetractions:
    """OWED_RETRACTIONS_FILE at `path`, read when constructed: `keys` it names, `owe` adds, `paid_all` removes. A file that
    cannot be written or read is logged and noted in `problems` (/health's `storage`, until a write of it succeeds), never
    raised (the move goes on: the row is then taken back by the move's hook as before, but not after a crash). One that
    cannot be decoded is replaced by the keys it still holds whole, and so are the files an earlier release set aside
    beside it (`_take_up`); one that cannot be read at all is written over by nothing (its keys would be lost): each
    write tries to read it again first, the same way, and writes once it reads. `taken_up`: called (lock not held) with
    the keys such a read while running added, for their retractions to run now (`service.users.retractions.retract_owed`
    sets it), as the start's run for the keys read then."""

    def __init__(self, path: Path, problems: Problems | None = None):
        self.path = path
        self.problems = Problems() if problems is None else problems
        self.taken_up: Callable[[list[Key]], None] | None = None
        self._lock = threading.Lock()
        self._owed = 0  # `owe` calls so far; each key keeps the number of the last that named it (`paid_all`'s `owed_by`)
        self._keys: dict[Key, int] = {}
        self._unread: OSError | None = None  # why the file, which may name keys not taken up, cannot be read: not written over
        self._copies: list[Path] = []  # an earlier release's copies taken up, removed once their keys are written
        self._rewrite = False  # the file read is damaged: written again in its place
        self._behind = False  # the last write failed: the file lacks what is owed here, written at the next change
        with self._lock:
            if self._take_up() is None:
                self._note(self._unread)
            elif self._rewrite or self._copies:
                self._write()

    def keys(self) -> set[Key]:
        with self._lock:
            return set(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, store, rows: list[StoredPreference]) -> None:
        """The ingest worker's `before_done`, with replicas: the keys of `rows` (just stored) a retraction recorded after
        they were received (`Store.retracted`) are owed, on disk before this returns. When the store does not answer,
        every key of `rows` is owed: each is looked at again before it is taken back (`retract(..., arrived=True)`)."""
        if not rows:
            return
        try:
            late = store.retracted(rows)
        except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own: the move goes on)
            log.error("could not look for rows taken back through another replica while they were stored here (%s): "
                      "each of the %d rows is looked at again", exc, len(rows))
            late = {(r.tenant, r.user_id, r.pref_id) for r in rows}
        self.owe(late)

    def owe(self, keys: Iterable[Key]) -> None:
        keys = set(keys)
        with self._lock:
            taken = self._take_up_again()
            self._owed += 1
            new = keys - self._keys.keys()
            self._keys.update(dict.fromkeys(keys, self._owed))  # owed again, an owed one too (`paid_all`'s `owed_by`)
            if new or taken or self._behind:
                self._write()
        self._hand_on(taken)

    def mark(self) -> int:
        """Where the keys owed stand now, for `paid_all`'s `owed_by`: taken before a look at their rows."""
        with self._lock:
            return self._owed

    def among(self, rows: list[StoredPreference]) -> list[Key]:
        """The owed keys of `rows`, sorted."""
        with self._lock:
            return sorted({key for r in rows if (key := (r.tenant, r.user_id, r.pref_id)) in self._keys})

    def paid_all(self, keys: Iterable[Key], owed_by: int) -> None:
        """`keys` are no longer owed (taken back, or found stored no more, or not taken back after all): the file
        written once (not at all when none was owed). `owed_by`: a `mark` taken before the caller looked at their rows;
        a key owed again since stays owed (a row stored again under its id and taken back again after that look, its
        retraction still to run)."""
        with self._lock:
            taken = self._take_up_again()
            gone = {key for key in keys if key in self._keys and self._keys[key] <= owed_by and key not in taken}
            for key in gone:
                del self._keys[key]
            if gone or taken or self._behind:
                self._write()
        self._hand_on(taken)

    def retry(self) -> None:
        """A file not read at all read again, and one whose last write failed written again, with no row owed or paid:
        the pass over the unfinished DELETEs' (`service.users.services.UnfinishedDeletes`, every `deletion_sweep_s`), so
        that on an idle replica its rows are taken back and /health is `ok` again once it reads and writes."""
        self.paid_all((), owed_by=0)

    def _take_up_again(self) -> list[Key]:
        """While running, before a change: the keys of a file the start (or the last write) could not read at all, read
        now as the start reads them (`_take_up`), owed from now on; [] when there was none or it still cannot be read.
        Once it reads, it is written at this change (`_behind`), even when it named nothing new (its keys owed already,
        or the operator removed it): /health listed it as not written."""
        if self._unread is None:
            return []
        taken = self._take_up()
        if taken is None:
            return []
        self._behind = True
        return taken

    def _hand_on(self, taken: list[Key]) -> None:
        if taken and self.taken_up is not None:
            self.taken_up(taken)

    def _take_up(self) -> list[Key] | None:
        """The keys the file names (`_read`: those it still holds whole when damaged) and those of the copies an earlier
        release set aside beside it (`_take_up_set_aside`), owed from now on (each as owed before any `mark`): those not
        owed already are returned. None when the file cannot be read at all (`_unread`, noted for /health: nothing writes
        over it, and the copies wait with it). `_rewrite`: whether the file is to be written again in its place."""
        keys, rewrite = self._read()
        if rewrite is None:
            return None
        self._unread = None
        self._rewrite = rewrite
        new = list(dict.fromkeys(key for key in [*keys, *self._take_up_set_aside()] if key not in self._keys))
        self._keys.update(dict.fromkeys(new, 0))
        return new

    def _write(self) -> bool:
        """The file written whole (removed when nothing is owed) in one rename, then the copies taken up removed; False
        (noted for /health until a write succeeds; logged at the first failure since the last success, not at each try
        after it: with replicas every move of the ingest worker tries again) when it could not be, or when the file could
        not be read at all (`_unread`: its keys would be lost)."""
        if self._unread is not None:
            if not self._behind:
                log.error("%s cannot be read (%s), so it is not written over: the %d rows owed here now are taken back "
                          "while the service runs, but would stay after a crash before their retraction ran (make it "
                          "readable by the service: it is read again at the next row owed or paid, and every "
                          "deletion_sweep_s)", self.path, self._unread, len(self._keys))
            self._note(self._unread)
            self._behind = True
            return False
        try:
            write_keys(self.path, self._keys)
        except OSError as exc:
            if not self._behind:
                log.error("%s cannot be written (%s): rows taken back through another replica while stored here would "
                          "stay after a crash before their retraction ran (written again at the next row owed or paid, "
                          "and every deletion_sweep_s)", self.path, exc)
            self._note(exc)
            self._behind = True
            return False
        if self._behind:
            log.info("%s written again: the rows owed here are on disk", self.path)
        self._rewrite = self._behind = False
        self.problems.succeeded(PROBLEM_NAME, "written")
        self._remove_copies()
        return True

    def _note(self, exc: OSError) -> None:
        """/health's `storage` lists the file as not written (`PROBLEM_NAME`) until a write of it succeeds."""
        problem = storage_problem(exc) or ("read-only" if isinstance(exc, PermissionError) else "unreadable", None)
        self.problems.failed(StoreUnavailable(PROBLEM_NAME, str(self.path), "written", problem[0], str(exc), exc.errno))

    def _read(self) -> tuple[list[Key], bool | None]:
        """The keys the file names (none for no file), and whether it is to be written again in their place: None when it
        could not be read at all (`_unread`: left as it is, with the files an earlier release set aside, written over
        by nothing). One that cannot be decoded (damaged, cut short, of another form) gives the keys it still holds
        whole (`service.key_sets.salvage`), owed again: the start takes them back as it takes back a readable file's
        (`service.users.retractions.retract_owed`), and their write replaces the damaged file in one rename (`_write`),
        so a crash before leaves it to be read again."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], False
        except OSError as exc:  # not read at all (a permission, an I/O error): nothing to salvage, so not replaced
            if self._unread is None:
                log.error("%s cannot be read (%s): the rows it names are taken back once it can be read (make it readable "
                          "by the service: the next row owed or paid, the pass every deletion_sweep_s, or the next start "
                          "reads it again); nothing is written over it meanwhile", self.path, exc)
            self._unread = exc
            return [], None
        keys, damaged, unread = read_keys(data, 3)
        if not damaged:
            return keys, False
        log.error("%s cannot be read (cut short or damaged): the %d rows it still names whole are taken back now, as owed, "
                  "and the file is replaced by them; %s", self.path, len(keys), _unread_words(unread))
        return keys, True

    def _take_up_set_aside(self) -> list[Key]:
        """The keys of the damaged owed files an earlier release kept beside the file (`SET_ASIDE_SUFFIX`), owed again
        with the file's (`read_keys`: such a file may be cut short); those files are removed once the keys are written
        (`_remove_copies`): no copy of a user's ids stays after their DELETE. One that cannot be read is left (logged,
        naming it), read again at the next start."""
        keys, salvaged, unread, taken = [], 0, 0, []
        for path in sorted(self.path.parent.glob(f"{glob.escape(self.path.name)}{SET_ASIDE_SUFFIX}*")):
            try:
                if path.is_dir() or path in self._copies:
                    continue
                found, _, cut = read_keys(path.read_bytes(), 3)
            except OSError as exc:
                log.error("%s, a damaged %s kept by an earlier release, cannot be read (%s): its rows are taken back "
                          "at a start that can read it (make it readable by the service, or remove it)", path,
                          self.path.name, exc)
                continue
            keys += found
            taken.append(path)
            salvaged, unread = salvaged + len(found), unread + cut
        if taken:
            self._copies += taken
            log.warning("%d damaged %s kept by an earlier release beside it read: the %d rows they still named whole are "
                        "taken back now, as owed (the files removed once they are written in it); %s", len(taken),
                        self.path.name, salvaged, _unread_words(unread))
        return keys

    def _remove_copies(self) -> None:
        for path in self._copies:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("%s, a damaged %s kept by an earlier release, read, cannot be removed: %s", path, self.path.name, exc)
        self._copies = []


def _unread_words(unread: int) -> str:
    """What the log says of the bytes of damaged owed files that named no whole key (never which ids they held)."""
    if not unread:
        return "nothing else of it was lost"
    return (f"{unread} other bytes (besides brackets, commas and spaces) named no whole row: a row named there, taken "
            "back through another replica, stays stored until its user takes it back again "
            "(DELETE /v1/users/{user_id}/preferences/{pref_id}) or is deleted")


def forget_owed(rt: Runtime, user: Callable[[str, str], bool], tenant: Callable[[str], bool] = lambda _: False) -> None:
    """After a DELETE of the users `user(tenant, user_id)` names, or a removal of the tenants `tenant(name)` names (here,
    or through another replica: `service.deletions.apply_deletions`): their keys leave the owed file once their rows are
    stored no more, so no id of theirs stays in the data folder. A row stored since, theirs again, stays owed: one found
    stored, and one stored again and taken back again after the look (`OwedRetractions.mark`): its retraction still runs.
    A look the store does not answer is logged: those keys leave the owed file at their retraction's next try."""
    owed = rt.owed_retractions
    mark = owed.mark()
    theirs = [key for key in owed.keys() if tenant(key[0]) or user(key[0], key[1])]
    try:
        gone = [key for key in theirs if rt.store.stored_row(*key) is None]
    except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own: their retraction's next try looks again)
        log.warning("could not look whether %d rows owed a retraction, of users deleted, are still stored (%s): they "
                    "leave %s at their next try", len(theirs), exc, OWED_RETRACTIONS_FILE)
    else:
        owed.paid_all(gone, owed_by=mark)
