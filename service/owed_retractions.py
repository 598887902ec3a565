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
pref_id) to OWED_RETRACTIONS_FILE in the data folder, whole and fsynced (`pluralign.files.atomic_writer`); a look the
store does not answer owes the whole batch, looked at again together (one read) before anything is taken back
(`service.users.retractions._look_again`). Each key leaves the file
once its retraction is done or found not owed (`paid`). The next start takes back what the file names. Rare: the file
exists only while such a row waits, so it is written whole each time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import msgspec

from pluralign.files import atomic_writer, set_aside
from pluralign.store import StoredPreference

log = logging.getLogger("pluralign.service")

OWED_RETRACTIONS_FILE = "retractions-owed.json"  # under the data folder: a JSON list of [tenant, user_id, pref_id]
_decode = msgspec.json.Decoder(list[tuple[str, str, str]]).decode

Key = tuple[str, str, str]  # (tenant, user_id, pref_id)


class OwedRetractions:
    """OWED_RETRACTIONS_FILE at `path`, read when constructed: `keys` it names, `owe` adds, `paid` removes. A file that
    cannot be written or read is logged, never raised (the move goes on: the row is then taken back by the move's hook
    as before, but not after a crash); one that cannot be read is set aside first (`_read`), its keys kept there."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._keys: set[Key] = set(self._read())

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
        with self._lock:
            new = set(keys) - self._keys
            if new:
                self._keys |= new
                self._write()

    def among(self, rows: list[StoredPreference]) -> list[Key]:
        """The owed keys of `rows`, sorted."""
        with self._lock:
            return sorted({key for r in rows if (key := (r.tenant, r.user_id, r.pref_id)) in self._keys})

    def paid(self, key: Key) -> None:
        """`key` is no longer owed (taken back, or found stored no more, or not taken back after all)."""
        self.paid_all((key,))

    def paid_all(self, keys: Iterable[Key]) -> None:
        """`keys` are no longer owed: the file written once (not at all when none was owed)."""
        with self._lock:
            gone = self._keys.intersection(keys)
            if gone:
                self._keys -= gone
                self._write()

    def _write(self) -> None:
        try:
            if not self._keys:
                self.path.unlink(missing_ok=True)
                return
            with atomic_writer(self.path) as f:
                f.write(msgspec.json.encode(sorted(self._keys)))
        except OSError as exc:
            log.error("%s cannot be written (%s): rows taken back through another replica while stored here would stay "
                      "after a crash before their retraction ran", self.path, exc)

    def _read(self) -> list[Key]:
        """The keys the file names; none for no file, and none for one that cannot be read (damaged, cut short, of
        another form), which is set aside first (`set_aside`: renamed beside it, logged with its new name), so that the
        next write of the file does not replace the keys it still holds."""
        try:
            return _decode(self.path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            problem = exc
        try:
            aside = set_aside(self.path)
        except OSError as exc:
            log.error("%s cannot be read (%s) nor set aside (%s): the rows it names, taken back through another replica, "
                      "stay stored until taken back again, and the file is replaced at the next write", self.path, problem, exc)
            return []
        log.error("%s cannot be read (%s): set aside as %s; the rows it names (tenant, user_id, pref_id), taken back "
                  "through another replica, stay stored until taken back again (DELETE /v1/users/{user_id}/preferences/"
                  "{pref_id} with the tenant's key); remove it once done", self.path, problem, aside)
        return []
