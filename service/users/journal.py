"""The journal of DELETEs in progress: how a DELETE whose process was killed part way is finished
without the client sending it again.

A user's DELETE (`service.users.services.delete`) runs many steps: jobs, the feedback log, the
embedding cache, the store's rows, the adapter folder, population files, the deletion record for
other replicas. The store finishes its own purge after a kill (`pluralign.store.lease.PurgeMarks`);
everything after it would stay for good. So before its first destructive step the DELETE writes an
entry here, and removes it only once every step finished; the service finishes the DELETEs whose
entries it finds at its next start and at every pass after (`services.UnfinishedDeletes`).

An entry is one small JSON file in `<data folder>/deletes-in-progress/`, named by the user's hash
(`pluralign.store.deletions.user_hash`), written whole (temp file, fsync, rename, fsync of the folder).
It holds the tenant, the user's id, when the DELETE began and, with replicas, when its deletion record was
committed (`Unfinished.recorded_at`, noted by rewriting the entry; a release before it cannot read such an
entry and leaves it for the operator: let DELETEs finish before going back to one), and when its store's step had
deleted the user's rows (`Unfinished.rows_left_at`: a release before the review of jobs53 skips it), cleared
when a pass finishing it finds rows from before it in the store (`Unfinished.rows_seen_at`: when it saw them). The steps need the id
(the store's rows and the adapter folder are named by it), so an entry keeps it only while that user's DELETE
is unfinished, and never their texts. The deletions table, which outlives the DELETE, keeps the hash only.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import threading
from pathlib import Path

import msgspec

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, write_atomic, writing_to
from pluralign.store.deletions import user_hash

log = logging.getLogger("pluralign.service")

JOURNAL_FOLDER = "deletes-in-progress"  # under the data folder


class DeleteNotRecorded(OSError):
    """The journal entry of a DELETE about to begin could not be written (a read-only or full disk):
    the DELETE did not begin, nothing of the user was deleted."""


class Unfinished(Persisted, kw_only=True, frozen=True):
    """A DELETE begun and not (yet) finished."""

    tenant: str
    user_id: str
    started_at: float  # unix seconds: what the user sent before it is deleted, what they send after is theirs
    # unix seconds (this replica's clock), with replicas: when its deletion record's commit returned; a DELETE
    # stopped after it deletes the chats other replicas stored before they saw the record when it is finished
    # (`services._chats_stored_meanwhile`). None: not recorded yet, or an entry of an earlier release
    recorded_at: float | None = None
    # unix seconds (this replica's clock): noted once the store's step had deleted the user's rows, before its purge
    # (`DeleteJournal.rows_gone`, `rows_left`): what was made after it holds none of their rows from before the DELETE (`services.forget_before`,
    # for a user who came back). None: not noted (stopped before the note), or an entry of a release before the review
    # of jobs53
    rows_left_at: float | None = None
    # unix seconds (this replica's clock): a pass finishing this DELETE found rows of the user received before
    # `started_at` in the store (maybe back: another replica moved them in from its feedback log after an earlier pass's
    # store's step, not having seen the DELETE) and cleared `rows_left_at` before deleting them (`DeleteJournal.rows_back`):
    # they left after this, at that pass's own note, or, stopped before it, as the store's kept versions from this on
    # tell (a first note left by a pass stopped there would be earlier than the rows went; and
    # with no first note, the versions would be bisected from before the rows came back). None: never
    rows_seen_at: float | None = None

    def same_delete(self, other: Unfinished | None) -> bool:
        """Whether `other` is the entry of this same DELETE (its user's, begun at the same time), noted as
        recorded or not."""
        return other is not None and (other.tenant, other.user_id, other.started_at) == (self.tenant, self.user_id, self.started_at)


class DeleteJournal:
    """The entries of one data folder (the module docstring). Thread-safe."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._lock = threading.Lock()
        self._running: set[str] = set()  # hashes of the users whose DELETE this process runs now

    def path(self, tenant: str, user_id: str) -> Path:
        return self.folder / f"{user_hash(tenant, user_id)}.json"

    def begin(self, tenant: str, user_id: str, started_at: float) -> Unfinished:
        """Write the entry of a DELETE about to begin (replacing an earlier one of the user: this one
        covers everything that one did) and note it as running here. Raises OSError when it cannot
        be written (DeleteNotRecorded, the cause logged with its path): then nothing may be deleted."""
        entry = Unfinished(tenant=tenant, user_id=user_id, started_at=started_at)
        try:
            self._write(entry)
        except OSError as exc:
            log.error("a DELETE was refused: its entry in %s could not be written: %s", self.folder, exc)
            raise DeleteNotRecorded(exc.errno, "the journal of DELETEs in progress cannot be written") from exc
        with self._lock:
            self._running.add(user_hash(tenant, user_id))
        return entry

    def begin_many(self, tenant: str, user_ids: list[str], started_at: float) -> list[Unfinished]:
        """`begin` of each of `user_ids` (of `tenant`: a batch of a tenant's removal): every entry written whole to a
        temp file beside its place and fsynced, then all renamed into place and their folder fsynced once (one by one,
        the folder's fsyncs were most of a batch's time). Noted as running here before the first is written, so no
        pass takes one up meanwhile. Raises DeleteNotRecorded as `begin` does: then nothing may be deleted. The
        entries are as they were (an earlier stopped DELETE's of a user of the batch stays, to be finished) unless a
        rename failed part way: then those renamed over an earlier entry stay (each covers what that one did) and the
        others are removed."""
        entries = [Unfinished(tenant=tenant, user_id=u, started_at=started_at) for u in user_ids]
        keys = {user_hash(tenant, u) for u in user_ids}
        with self._lock:
            self._running.update(keys)
        earlier = {path for entry in entries if (path := self.path(entry.tenant, entry.user_id)).exists()}
        renamed: list[Path] = []
        try:
            self._write_many(entries, renamed)
        except OSError as exc:
            for path in renamed:
                if path not in earlier:
                    path.unlink(missing_ok=True)
            with self._lock:
                self._running.difference_update(keys)
            log.error("a batch of DELETEs was refused: its entries in %s could not be written: %s", self.folder, exc)
            raise DeleteNotRecorded(exc.errno, "the journal of DELETEs in progress cannot be written") from exc
        return entries

    def unfinished(self, tenant: str, user_id: str) -> Unfinished | None:
        """The user's entry: a DELETE of theirs begun and not finished (running here or stopped), or None."""
        return self._read(self.path(tenant, user_id))

    def resume(self, entry: Unfinished) -> bool:
        """Take up `entry` (read by `pending`) to finish it here; False when it is no longer the user's
        entry (finished meanwhile, or replaced by a later DELETE of theirs) or is being run already."""
        key = user_hash(entry.tenant, entry.user_id)
        with self._lock:
            if key in self._running or not entry.same_delete(self._read(self.path(entry.tenant, entry.user_id))):
                return False
            self._running.add(key)
        return True

    def done(self, entry: Unfinished) -> None:
        """Every step of the DELETE finished: its entry (and so the user's id) goes, with the temp files
        of the user's entries that a process killed while writing one left (`.<name>.<random>`, holding
        the id too; no other write of the user's entry is in flight: this DELETE is theirs). One that
        cannot be removed (a read-only folder) is logged and stays: the DELETE did its work, and a later
        pass, finding nothing left to delete, removes it."""
        self.done_many([entry])

    def done_many(self, entries: list[Unfinished]) -> None:
        """`done` of each of `entries` (a batch's), their folder fsynced once after all of them."""
        removed = False
        for entry in entries:
            path = self.path(entry.tenant, entry.user_id)
            if entry.same_delete(self._read(path)):
                try:
                    for temp in self.folder.glob(f".{glob.escape(path.name)}.*"):
                        temp.unlink(missing_ok=True)
                    path.unlink(missing_ok=True)
                    removed = True
                except OSError as exc:
                    log.error("the entry of a finished DELETE, %s, could not be removed (a later pass tries again): %s", path, exc)
        if removed:
            try:
                self._sync_folder()
            except OSError as exc:
                log.error("the folder of finished DELETEs' entries, %s, could not be synced: %s", self.folder, exc)

    def recorded(self, entry: Unfinished, at: float) -> None:
        """Note in the entry of the DELETE `entry` (running here) that its deletion record was committed at `at`
        (unix seconds). One that cannot be written is logged: the DELETE goes on (finished from the journal, it
        then leaves the chats other replicas stored before they saw the record)."""
        try:
            self._write(msgspec.structs.replace(entry, recorded_at=at))
        except OSError as exc:
            log.error("the DELETE journal entry in %s could not note its deletion record: %s", self.folder, exc)

    def rows_left(self, entry: Unfinished, at: float) -> Unfinished:
        """Note in the entry of the DELETE `entry` (running here: its user's, begun at its `started_at`, as written,
        noted as recorded or not) that the store's step deleted the user's rows by `at` (unix seconds), and return it
        so noted (what `recorded` rewrites next). One that cannot be written is logged: finished from the journal, the
        DELETE then asks the store's kept versions (`Store.received_before_left_at`)."""
        found = self._read(self.path(entry.tenant, entry.user_id))
        if not entry.same_delete(found):  # no entry of this DELETE to note it in
            return msgspec.structs.replace(entry, rows_left_at=at)
        noted = msgspec.structs.replace(found, rows_left_at=at)
        try:
            self._write(noted)
        except OSError as exc:
            log.error("the DELETE journal entry in %s could not note its store's step: %s", self.folder, exc)
        return noted

    def rows_gone(self, tenant: str, user_ids: list[str], before: float | None, at: float) -> Unfinished | None:
        """`rows_left` from inside the store's step (`pluralign.store.tables.Store.rows_gone`: the rows left the newest
        versions, the purge not begun): the entry of the DELETE of the one user of `user_ids` (of `tenant`) running here,
        when the rows deleted (`before`, unix seconds: those received before it; None: all) include every one received
        before it began. Returns the entry so noted (a write that failed is logged, as `rows_left`'s), else None (a
        batch's users, a user no DELETE here runs, rows received before that DELETE's beginning not all deleted). Without the note, a process killed in the purge that comes next (every
        fragment with a deletion rewritten: it may take long) would leave the DELETE
        finished for a user who came back to ask the store's kept versions, which another replica's purge or compaction
        meanwhile leaves only from its own commit on: what was made in between (the returning user's newer adapter
        job) would go too."""
        if len(user_ids) != 1:
            return None
        with self._lock:
            if user_hash(tenant, user_ids[0]) not in self._running:
                return None
        found = self._read(self.path(tenant, user_ids[0]))
        if found is None or (before is not None and before < found.started_at):
            return None
        return self.rows_left(found, at)

    def rows_back(self, entry: Unfinished, at: float) -> None:
        """Note in the entry of the DELETE `entry` (running here, finishing from the journal) that its user's rows from
        before it were seen in the store at `at` (unix seconds), about to be deleted (again, when an earlier pass's
        store's step had noted them gone: `rows_left`): `Unfinished.rows_seen_at`, and the earlier note cleared, so
        that a DELETE stopped before its next note is not taken to have removed them before `at`. Raises OSError when
        an earlier note cannot be cleared: the rows are not to be deleted again under a note that would then be wrong;
        with no such note, a failed write is logged (finished later, the store's kept versions are asked from the
        first on)."""
        found = self._read(self.path(entry.tenant, entry.user_id))
        if not entry.same_delete(found):
            return
        try:
            self._write(msgspec.structs.replace(found, rows_left_at=None, rows_seen_at=at))
        except OSError as exc:
            if found.rows_left_at is not None:
                raise
            log.error("the DELETE journal entry in %s could not note its user's rows seen in the store: %s", self.folder, exc)

    def recorded_many(self, entries: list[Unfinished], at: float) -> None:
        """`recorded` of each of `entries` (a batch's, `service.users.services.delete_batch`), their folder fsynced once
        (one by one, three fsyncs an entry: a batch of 256 with replicas wrote 768). One that cannot be written is
        logged, as `recorded`'s."""
        try:
            self._write_many([msgspec.structs.replace(e, recorded_at=at) for e in entries], [])
        except OSError as exc:
            log.error("the DELETE journal entries in %s could not note their deletion records: %s", self.folder, exc)

    def release(self, entry: Unfinished) -> None:
        """The DELETE stopped running here (done or not): a later pass may take up its entry."""
        with self._lock:
            self._running.discard(user_hash(entry.tenant, entry.user_id))

    def pending(self) -> list[Unfinished]:
        """The unfinished DELETEs no thread of this process is running, oldest first. A damaged entry
        (not written by `begin`, which writes whole files), anything else there (a folder, a file it
        cannot read) and an entry under a name not its user's (a copy, a restore: finishing it could
        not remove it) are logged and left for the operator; the others are still returned."""
        if not self.folder.is_dir():
            return []
        entries = []
        for path in sorted(self.folder.glob("*.json")):
            entry = self._read(path)
            if entry is None:
                if path.exists():
                    log.error("%s is not a DELETE journal entry: the DELETE it was written for may be unfinished", path)
                continue
            if path.name != self.path(entry.tenant, entry.user_id).name:
                log.error("%s is a DELETE journal entry under another name than its user's: left for the operator", path)
                continue
            with self._lock:
                if user_hash(entry.tenant, entry.user_id) not in self._running:
                    entries.append(entry)
        return sorted(entries, key=lambda e: e.started_at)

    def _write(self, entry: Unfinished) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path(entry.tenant, entry.user_id), msgspec.json.encode(entry))
        self._sync_folder()  # the rename (or, in `done`, the unlink) survives a power loss too

    def _write_many(self, entries: list[Unfinished], renamed: list[Path]) -> None:
        """Each of `entries` written whole to a temp file beside its place and fsynced (a full disk fails here, before
        any entry is replaced), then all renamed into place (each path appended to `renamed` once it is) and the
        folder fsynced once: one by one (`_write`), the folder's fsyncs were most of a batch's time. Raises OSError
        with the temp files removed."""
        temps: list[tuple[str, Path]] = []
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for entry in entries:
                path = self.path(entry.tenant, entry.user_id)
                with writing_to(path):
                    fd, temp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.")  # as `write_atomic`'s
                    temps.append((temp, path))
                    with os.fdopen(fd, "wb") as f:
                        f.write(msgspec.json.encode(entry))
                        f.flush()
                        os.fsync(f.fileno())
            for temp, path in temps:
                os.replace(temp, path)
                renamed.append(path)
            self._sync_folder()
        except OSError:
            for temp, _ in temps:
                Path(temp).unlink(missing_ok=True)
            raise

    def _sync_folder(self) -> None:
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _read(path: Path) -> Unfinished | None:
        try:
            return msgspec.json.decode(path.read_bytes(), type=Unfinished)
        except (OSError, *DECODE_ERRORS):  # gone, a folder, unreadable, damaged
            return None
