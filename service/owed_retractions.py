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

import glob
import logging
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from pluralign.files import atomic_writer, link_aside
from pluralign.store import StoredPreference

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("pluralign.service")

OWED_RETRACTIONS_FILE = "retractions-owed.json"  # under the data folder: a JSON list of [tenant, user_id, pref_id]
_decode = msgspec.json.Decoder(list[tuple[str, str, str]]).decode

Key = tuple[str, str, str]  # (tenant, user_id, pref_id)
DAMAGED = "damaged"  # a file that cannot be read is set aside as `<OWED_RETRACTIONS_FILE>.damaged-<UTC time>`

_STRING = rb'"(?:[^"\\]|\\.)*"'  # a JSON string, as the file writes one (a `"` in it escaped)
_KEY = re.compile(rb"\[\s*(%s)\s*,\s*(%s)\s*,\s*(%s)\s*\]" % (_STRING, _STRING, _STRING))  # ["t","u","p"]
_HEAD = re.compile(rb"\[\s*(%s)(?:\s*,\s*(%s))?" % (_STRING, _STRING))  # ["t" or ["t","u": a key, whole or cut short
_REST = re.compile(rb"(?:\s*,\s*%s)*\s*\]" % _STRING)  # the rest of a key after its head, to its `]` (one in a string skipped)
_COMMA = re.compile(rb"\s*,")
_NOTHING = re.compile(rb"[\s\[\],]*")  # what is left of a list without its keys


class SetAsideNotRewritten(OSError):
    """A damaged owed file set aside (`OwedRetractions.forget_set_aside`) that could not be read or rewritten without
    the keys of users deleted: it may still name them. Keeps the errno of the OSError met and names the file."""


class OwedRetractions:
    """OWED_RETRACTIONS_FILE at `path`, read when constructed: `keys` it names, `owe` adds, `paid` removes. A file that
    cannot be written or read is logged, never raised (the move goes on: the row is then taken back by the move's hook
    as before, but not after a crash); one that cannot be read is set aside first (`_read`), and the keys it still
    holds whole are owed again."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._aside_lock = threading.Lock()
        keys, rewrite = self._read()
        self._keys: set[Key] = set(keys)
        if rewrite:  # the damaged file replaced by the keys it held whole (or removed): a crash before leaves it to read again
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

    def _read(self) -> tuple[list[Key], bool]:
        """The keys the file names (none for no file), and whether `__init__` is to write them in its place. One that
        cannot be read (damaged, cut short, of another form) is kept aside first (`link_aside`: a second name beside it,
        logged), so that what it holds stays, and the keys it still holds whole (`salvage`) are owed again, written in
        its place by `__init__`: the start takes them back as it takes back a readable file's
        (`service.users.retractions.retract_owed`). A crash between the two leaves the damaged file under both names:
        the next start reads it again and keeps the name it was given."""
        data = b""
        try:
            data = self.path.read_bytes()
            return _decode(data), False
        except FileNotFoundError:
            return [], False
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            problem = exc
        keys = salvage(data)
        try:
            aside = link_aside(self.path, DAMAGED)
        except OSError as exc:
            log.error("%s cannot be read (%s) nor set aside (%s): of the rows it names, taken back through another replica, "
                      "the %d it names whole are taken back now; the file is replaced by them", self.path,
                      problem, exc, len(keys))
            return keys, bool(keys)
        log.error("%s cannot be read (%s): set aside as %s; the %d rows it still names whole (tenant, user_id, pref_id) are "
                  "taken back now, as owed; any other row it named, taken back through another replica, stays stored until "
                  "taken back again (DELETE /v1/users/{user_id}/preferences/{pref_id} with the tenant's key). A user's "
                  "DELETE removes their entries from it; remove it once read", self.path, problem, aside, len(keys))
        return keys, True

    def set_aside_files(self) -> list[Path]:
        """The files a damaged owed file was set aside as (`_read`), beside it (a folder of such a name is none)."""
        return sorted(p for p in self.path.parent.glob(f"{glob.escape(self.path.name)}.{DAMAGED}-*") if not p.is_dir())

    def forget_set_aside(self, user: Callable[[str, str], bool], tenant: Callable[[str], bool] = lambda _: False) -> int:
        """Rewrite each file set aside (`set_aside_files`) without the keys of the users `user(tenant, user_id)` names
        or of the tenants `tenant(name)` names: each such key, whole or cut short at the damage (`["acme","ann","p-`),
        with a comma beside it; a file left naming no key is removed. A user's DELETE and a tenant's removal do this,
        here and through another replica (`forget_owed`), so no id of theirs stays in the data folder. A key whose
        tenant or user id the damage cut (`["acme","an`) cannot be told to be theirs and stays. Returns how many files
        were rewritten or removed. Raises SetAsideNotRewritten (the first, once every file was tried; each logged,
        naming the file) when one could not be read or rewritten: it may still hold their ids, so the DELETE is not
        done."""
        changed, failed = 0, []
        with self._aside_lock:  # two DELETEs at once: neither writes back what the other removed
            for path in self.set_aside_files():
                try:
                    changed += _rewrite_without(path, user, tenant)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    log.error("%s (a damaged %s set aside) could not be rewritten without the keys of users deleted (%s): "
                              "their DELETE is tried again until it is mended or removed", path, OWED_RETRACTIONS_FILE, exc)
                    failed.append((path, exc))
        if failed:
            path, exc = failed[0]
            raise SetAsideNotRewritten(exc.errno, exc.strerror or str(exc), str(path)) from exc
        return changed


def _rewrite_without(path: Path, user: Callable[[str, str], bool], tenant: Callable[[str], bool]) -> int:
    """The file set aside at `path` rewritten without those keys (`_without`), or removed once it names none; 1 when it
    changed, else 0."""
    data = path.read_bytes()
    kept = _without(data, user, tenant)
    if kept == data:
        return 0
    if _NOTHING.fullmatch(kept):
        path.unlink()
    else:
        with atomic_writer(path) as f:
            f.write(kept)
    return 1


def salvage(data: bytes) -> list[Key]:
    """The keys a damaged owed file still holds whole (`["acme","ann","p-1"]`, each part a JSON string that decodes),
    in the order it holds them: the rest of it (a key cut short, bytes the damage changed) is none."""
    keys = []
    for match in _KEY.finditer(data):
        key = tuple(_text(part) for part in match.groups())
        if None not in key:
            keys.append(key)
    return keys


def _text(data: bytes) -> str | None:
    try:
        return msgspec.json.decode(data, type=str)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _without(data: bytes, user: Callable[[str, str], bool], tenant: Callable[[str], bool]) -> bytes:
    """`data` (a damaged owed file) without the keys `OwedRetractions.forget_set_aside` removes: from a key's `[` to its
    `]` (to the end, for one cut short), with the comma after it, or else the one before it."""
    out, pos = [], 0
    while (head := _HEAD.search(data, pos)) is not None:
        owner = _text(head[1]), (_text(head[2]) if head[2] else None)
        if owner[0] is None or not (tenant(owner[0]) or (owner[1] is not None and user(*owner))):
            out.append(data[pos:head.end()])
            pos = head.end()
            continue
        if (rest := _REST.match(data, head.end())) is not None:
            close = rest.end() - 1
        else:  # cut short, or changed by the damage: to the next `]`
            close = data.find(b"]", head.end())
        start, end = head.start(), len(data) if close < 0 else close + 1
        if (comma := _COMMA.match(data, end)) is not None:
            end = comma.end()
        elif (before := data[pos:start].rstrip()).endswith(b","):
            start = pos + len(before) - 1
        out.append(data[pos:start])
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def forget_owed(rt: Runtime, user: Callable[[str, str], bool], tenant: Callable[[str], bool] = lambda _: False) -> None:
    """After a DELETE of the users `user(tenant, user_id)` names, or a removal of the tenants `tenant(name)` names (here,
    or through another replica: `service.deletions.apply_deletions`): their keys leave the files a damaged owed file was
    set aside as (`OwedRetractions.forget_set_aside`), and the owed file once their rows are stored no more (a row
    stored since, theirs again, stays owed: its retraction still runs), so no id of theirs stays in the data folder.
    A look the store does not answer is logged: those keys leave the owed file at their retraction's next try.
    Raises SetAsideNotRewritten when a file set aside could not be (`forget_set_aside`), after the owed file's part: the
    caller leaves the DELETE (the removal, the other replica's record) unfinished, tried again."""
    owed = rt.owed_retractions
    theirs = [key for key in owed.keys() if tenant(key[0]) or user(key[0], key[1])]
    try:
        gone = [key for key in theirs if rt.store.stored_row(*key) is None]
    except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own: their retraction's next try looks again)
        log.warning("could not look whether %d rows owed a retraction, of users deleted, are still stored (%s): they "
                    "leave %s at their next try", len(theirs), exc, OWED_RETRACTIONS_FILE)
    else:
        owed.paid_all(gone)
    owed.forget_set_aside(user, tenant)
