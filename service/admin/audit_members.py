"""Which audit jobs' members files name a user: an index a DELETE looks its user up in, instead of
reading every stored audit's members file (`Admin._forget_in_audits`).

The index is a SQLite file in the jobs folder. It may name more audits than hold the user, never fewer:
an audit's entries are committed (synchronous=FULL: on disk) before its first members file is written
(`Admin._prune_audit`), and a DELETE still reads the members file of each audit the index names. A
user's DELETE rewrites the members files that hold them first, then drops their entries of those audits
(`drop`, but for keys a user still in the file shares); a crash between the two leaves entries naming the audit, and the
deletion journal's replay of the DELETE, finding no hash of theirs left in the file, drops them then. So
a crash at any moment leaves an index a DELETE, or its replay at the next start, misses nothing by, and
once a DELETE has finished neither the members files nor the index hold the user (secure_delete and a
checkpoint that truncates the write-ahead log: the key's bytes are not left in freed space).

A user is indexed by the first 8 bytes of their `key_hash` (`tenant/user`), as one integer: two users
sharing them only cost a members file read. About 20 bytes a member of an audit on disk (a members file
holds ~70 for each). Members files that no index entry covers (written by an earlier release, or by one
rolled back to and forth) are indexed when the index opens (`catch_up`), and the entries of audits whose
folder is gone (a job purged) are dropped then; a DELETE drops its user's entries of an audit it finds without a
members file (purged, or its check failed once its members were indexed) at once. An index lost or damaged is built
again from the members files."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec

from pluralign.files import DECODE_ERRORS

log = logging.getLogger("pluralign.service")
_CHUNK = 500  # SQLite's bound parameters per statement stay under its limit
# the index's `PRAGMA user_version` once the members files have been checked for users an earlier release's DELETE
# left in them (`Admin._catch_up_old_audits`); an index built again (lost, damaged) has 0, and they are checked again.
# 2 (audit41): and given the users of the groups their report does not show (`UNSHOWN`), so an index a release
# before it marked 1 is checked once more
OLD_DELETES_CHECKED = 2


def hash_key(user_hash: str) -> int:
    """The index's key for a user's `key_hash` (64 hex characters): its first 8 bytes as a signed 64-bit integer."""
    return int.from_bytes(bytes.fromhex(user_hash[:16]), "big", signed=True)


class AuditMembersIndex:
    def __init__(self, path: Path, artifacts: Path, members_name: str):
        """Open (or create) the index at `path` over the audit folders in `artifacts` (`<job id>/<members_name>`)
        and index the members files it does not cover yet (`catch_up`). A damaged index is logged, removed and built
        again from the members files. Raises ValueError naming `path` when none can be opened there (a folder in
        its place)."""
        self.path, self.artifacts, self.members_name = path, artifacts, members_name
        self._lock = threading.Lock()
        self._unread: set[str] = set()  # audits whose members file `catch_up` could not read: named for every user
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.Error as exc:  # damaged: everything in it is drawn again from the members files
            log.error("the audits' members index %s cannot be read (%s): it is built again from the members files", path, exc)
            for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if stale.is_file():
                    stale.unlink()
            try:
                self._db = self._open(path)
            except sqlite3.Error as again:  # a folder in its place, an unwritable jobs folder
                raise ValueError(f"{path}: cannot open it as the audits' members index (a SQLite file): {again}") from None
        self.catch_up()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the members file is written
            # a deleted user's entry is overwritten with zeros, not left in a freed cell or page (`replace`)
            db.execute("PRAGMA secure_delete=ON")
            db.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, job_id TEXT UNIQUE NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS member (user INTEGER, audit INTEGER, PRIMARY KEY (user, audit)) WITHOUT ROWID")
            db.execute("SELECT count(*) FROM audit").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def add(self, job_id: str, user_hashes: Iterable[str]) -> None:
        """Index the audit `job_id` as holding the users of `user_hashes` (`key_hash`); on disk on return."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR IGNORE INTO audit (job_id) VALUES (?)", (job_id,))
                (audit,) = self._db.execute("SELECT id FROM audit WHERE job_id = ?", (job_id,)).fetchone()
                self._db.executemany("INSERT OR IGNORE INTO member VALUES (?, ?)", ((hash_key(h), audit) for h in set(user_hashes)))
                self._db.execute("COMMIT")
                self._unread.discard(job_id)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def drop(self, job_id: str, user_hashes: Iterable[str], kept: Iterable[str]) -> None:
        """Take the users of `user_hashes` (`key_hash`) out of the audit `job_id`'s entries, but for keys that a
        user of `kept` (those its members file holds now) shares, in one transaction (each a primary-key lookup).
        On disk on return; when any entry went, the write-ahead log is emptied into the file and truncated, so
        the removed keys' bytes are left neither there nor (secure_delete) in the file's freed space. Call it once
        the members file no longer holds `user_hashes`: a crash before leaves entries naming the audit for users
        no longer in it, never a user in it without one."""
        keys = {hash_key(h) for h in user_hashes} - {hash_key(h) for h in kept}
        if not keys:
            return
        with self._lock:
            row = self._db.execute("SELECT id FROM audit WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                return
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM member WHERE user = ? AND audit = ?", ((k, row[0]) for k in sorted(keys)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if self._db.total_changes > before:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def audits_of(self, user_hashes: Iterable[str]) -> set[str]:
        """The ids of the audit jobs whose members file may hold one of `user_hashes`: every one that does, perhaps more."""
        keys = sorted({hash_key(h) for h in user_hashes})
        with self._lock:
            found = set(self._unread)
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                rows = self._db.execute(f"SELECT DISTINCT audit.job_id FROM member JOIN audit ON audit.id = member.audit "
                                        f"WHERE member.user IN ({','.join('?' * len(chunk))})", chunk)
                found.update(job_id for (job_id,) in rows)
        return found

    def catch_up(self) -> None:
        """Index the members files of the audit folders the index does not know, and drop the entries of the
        audits whose folder is gone. Reads only the folder's listing when nothing changed. A members file it
        cannot read (damaged) is named by `audits_of` for every user until an `add` of its audit."""
        with self._lock:
            known = dict(self._db.execute("SELECT job_id, id FROM audit").fetchall())
        on_disk = {p.parent.name for p in self.artifacts.glob(f"*/{self.members_name}")} if self.artifacts.is_dir() else set()
        for job_id in sorted(on_disk - known.keys()):
            path = self.artifacts / job_id / self.members_name
            try:
                members = msgspec.json.decode(path.read_bytes(), type=dict[str, list[str]])
            except FileNotFoundError:  # its job purged meanwhile
                continue
            except (OSError, *DECODE_ERRORS):  # every DELETE reads it, and says it cannot (ForgetIncomplete), as before
                with self._lock:
                    self._unread.add(job_id)
                continue
            self.add(job_id, [h for users in members.values() for h in users])
        gone = [known[job_id] for job_id in known.keys() - on_disk if not (self.artifacts / job_id).is_dir()]
        if gone:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                for start in range(0, len(gone), _CHUNK):
                    chunk = gone[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    self._db.execute(f"DELETE FROM member WHERE audit IN ({marks})", chunk)
                    self._db.execute(f"DELETE FROM audit WHERE id IN ({marks})", chunk)
                self._db.execute("COMMIT")

    def old_deletes_checked(self) -> bool:
        """Whether the members files were checked for users an earlier release's DELETE left in them (`note_old_deletes_checked`)."""
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0] >= OLD_DELETES_CHECKED

    def note_old_deletes_checked(self) -> None:
        """Mark the index (on disk on return): the members files were checked for users an earlier release's DELETE left."""
        with self._lock:
            self._db.execute(f"PRAGMA user_version = {OLD_DELETES_CHECKED}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
