"""Feedback records set aside: acknowledged rows the mover could not store however often it tried.

A record of the feedback log whose rows fail deterministically (a blank `user_id` or `tenant`, a non-finite time:
what a damaged or hand-edited log, an older release or a replica's log may hold; the service's routes refuse
them; `RowRefused`, or a text the encoder refuses, `TextRefused`: `pluralign.store.ingest.ROW_ERRORS`, no other
failure) was retried by the worker for ever, and every tenant's feedback waited behind it. After `Ingestor`'s
`tries` failures on its own it is written here, one file a record, then leaves the log: kept, not lost. An admin
lists them (`GET /admin/feedback/dead-letter`), puts one back in the log (`.../{name}/requeue`: once the cause is
fixed, a release that stores it) or discards it (`DELETE .../{name}`). A DELETE of a user forgets their rows here too.

A file is named by the sha256 of its rows (msgpack, which keeps a non-finite time as it is, where JSON makes it
null): the same record set aside twice (a kill -9 between the file's write and the log's forgetting of it: the
record is pending again at the next start) is one file. Written whole and fsynced, name and all, before the
log forgets the record (`pluralign.files.write_atomic`).
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import NamedTuple

import msgspec

from pluralign.data.record import Base
from pluralign.files import DECODE_ERRORS, fsync_dir, write_atomic
from pluralign.store.tables import StoredPreference

SUFFIX = ".msgpack"
NAME = re.compile(r"[0-9a-f]{32}")  # a letter's name: the first 32 hex digits of its rows' sha256


class DeadLetter(Base, frozen=True, omit_defaults=True):
    """One feedback record set aside: its `rows` (one user's, as the log held them), the `error` of its last try
    (the exception's type and words), how many `tries` failed, and when it was set aside (`set_aside_at`, unix s).
    `row_numbers`: where only some rows of the record were refused (the rest stored), their positions in it, from 1
    (an import's rows in its file's order); None: the whole record, written without the field (an earlier release
    without the field reads such a letter; one with `row_numbers` it leaves out as unreadable, and a DELETE there leaves it)."""

    rows: list[StoredPreference]
    error: str
    tries: int
    set_aside_at: float
    row_numbers: list[int] | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(DeadLetter).decode


def name_of(rows: list[StoredPreference]) -> str:
    """The name of the letter holding `rows`: the first 32 hex digits of the sha256 of their msgpack."""
    return hashlib.sha256(_encode(rows)).hexdigest()[:32]


class _Summary(NamedTuple):
    """What a count or a DELETE needs of one letter, kept while its file is unchanged (`DeadLetters._summaries`)."""

    stat: tuple[int, int, int]  # (st_ino, st_size, st_mtime_ns) of the file summed up
    rows: int
    owners: dict[tuple[str, str], int]  # (tenant, user_id) of its rows -> how many of its rows are theirs
    set_aside_at: float  # the letter's (`page`'s order)


def _owners(rows: list[StoredPreference]) -> dict[tuple[str, str], int]:
    """(tenant, user_id) -> how many of `rows` are theirs (a `_Summary`'s `owners`)."""
    return dict(collections.Counter((r.tenant, r.user_id) for r in rows))


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# a folder changed less than this before it was listed may change again within the same tick of its mtime (the
# kernel's coarse clock) unseen: listed again at the next look (`DeadLetters._summaries`; git's "racily clean" entries)
RACY_S = 2.0


class _Index(NamedTuple):
    """What the letters' summaries give a page, a count or a user's look at once (`DeadLetters._index`), built once per
    listing of the folder."""

    order: list[tuple[float, str]]  # (set_aside_at, name) of each letter, in `page`'s order
    tenants: dict[str, tuple[int, list[int]]]  # tenant -> (its letters' rows, their positions in `order`)
    owners: dict[tuple[str, str], list[str]]  # (tenant, user_id) -> names of the letters holding their rows, oldest first
    rows: int
    owned: dict[tuple[str, str], int]  # (tenant, user_id) -> their rows in all the letters (`rows_for`)


def _place(set_aside_at: float) -> float:
    """Where a letter set aside at `set_aside_at` (unix s) is in `page`'s order: there, or at 0 where it is not finite
    (a hand-edited or damaged letter: a NaN would break the sort, and its cursor, `nan~...`, would be
    a 400, so the letters after it could not be paged to)."""
    return set_aside_at if math.isfinite(set_aside_at) else 0.0


def _index(known: dict[str, _Summary]) -> _Index:
    order = sorted((_place(summary.set_aside_at), name) for name, summary in known.items())
    tenants: dict[str, tuple[int, list[int]]] = {}
    owners: dict[tuple[str, str], list[str]] = {}
    owned: dict[tuple[str, str], int] = {}
    for at, (_, name) in enumerate(order):
        summary = known[name]
        for tenant in {owner[0] for owner in summary.owners}:
            rows, where = tenants.get(tenant, (0, []))
            where.append(at)
            tenants[tenant] = (rows + summary.rows, where)
        for owner, rows in summary.owners.items():
            owners.setdefault(owner, []).append(name)
            owned[owner] = owned.get(owner, 0) + rows
    return _Index(order, tenants, owners, sum(summary.rows for summary in known.values()), owned)


class DeadLetters:
    """The letters of one feedback log, in `folder` (made at the first one). Each letter is decoded once while its file
    is unchanged (`_summaries`): decoding every letter at every /metrics scrape (`rows`) and every user's DELETE
    (`forget_user`, under the lock the feedback worker's commits and users' reads wait for) took 1.5 s
    for 20 letters of an 8,000-row import each (49 MB) at load ~20. And the folder is listed, each letter's file
    stat'ed, only once it changed (its own mtime: a letter written, rewritten or removed renames or unlinks a name in
    it; `RACY_S`): were every look to, a page of 100 of 5,000 letters would take ~120 ms, a profile's count of the
    user's ~200 ms at load ~16 (benchmarks/dead_letters.py). A letter's file changed in place, not through a rename (by
    hand), is seen at the folder's next change. A look (`_refreshed`) waits for another look's listing only, never for a
    letter being written, rewritten or removed: with the writers' lock, every profile GET (`rows_for`) of every
    tenant would wait for a DELETE's rewrite of a letter or a letter being set aside
    (~150 ms for an 8,000-row import's, 15 MB, at load 3); each letter is renamed into place whole, so a look meanwhile
    finds the letters as they were before or after it, never half-written."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        # a rewrite (`forget_user`) against a removal (`discard`) and a write (`put`); taken before `_listing`
        self._lock = threading.RLock()
        self._listing = threading.Lock()  # the summaries and their index (`_refreshed`): what a look waits for
        self._known: dict[str, _Summary] = {}
        self._listed: tuple[int, int] | None = None  # (st_ino, st_mtime_ns) of the folder when `_known` was listed
        self._indexed: _Index = _index({})
        # name -> `_stat_key` of a letter that could not be decoded (damaged): not read again, nor keeping every look
        # listing the folder, until its file changes (`_refreshed`)
        self._damaged: dict[str, tuple[int, int, int]] = {}

    def put(self, rows: list[StoredPreference], error: str, tries: int, at: float, row_numbers: list[int] | None = None) -> str:
        """Writes the letter of `rows` (whole, fsynced, its name too) and returns its name. OSError: not written.
        `row_numbers`: `DeadLetter`'s."""
        name = name_of(rows)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / (name + SUFFIX)
            write_atomic(path, _encode(DeadLetter(rows=rows, error=error, tries=tries, set_aside_at=at, row_numbers=row_numbers)))
            with contextlib.suppress(OSError), self._listing:  # replaced, not changed: a look keeps the one it took
                self._known = {**self._known, name: _Summary(_stat_key(path.stat()), len(rows), _owners(rows), at)}
        return name

    def _stats(self) -> list[tuple[str, os.stat_result]]:
        """(name, stat) of each letter, oldest first (by the time its file was written)."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.iterdir():
            if p.suffix == SUFFIX and NAME.fullmatch(p.stem):
                with contextlib.suppress(FileNotFoundError):  # discarded meanwhile
                    found.append((p.stem, p.stat()))
        return sorted(found, key=lambda found: (found[1].st_mtime, found[0]))

    def _summaries(self) -> dict[str, _Summary]:
        """name -> summary of each readable letter, oldest first; only a letter new or changed since its last summary is
        read (an unreadable one is left out, and read again at the next listing; a damaged one, which cannot be decoded,
        once its file changed). The folder is listed again only when it changed since (or had changed less than RACY_S
        before its last listing)."""
        return dict(self._refreshed()[0])

    def _index(self) -> _Index:
        """The letters' `_Index`, as of `_summaries`."""
        return self._refreshed()[1]

    def _refreshed(self) -> tuple[dict[str, _Summary], _Index]:
        with self._listing:
            try:
                st = os.stat(self.folder)  # before the listing: a change during it is seen at the next look
            except FileNotFoundError:
                st = None
            stamp = None if st is None else (st.st_ino, st.st_mtime_ns)
            if stamp is not None and stamp == self._listed:
                return self._known, self._indexed
            listed_at = time.time()
            known, damaged, unreadable = {}, {}, False
            for name, st_letter in self._stats():
                summary, key = self._known.get(name), _stat_key(st_letter)
                if self._damaged.get(name) == key:  # damaged, and unchanged since
                    damaged[name] = key
                    continue
                if summary is None or summary.stat != key:
                    try:
                        letter = _decode((self.folder / (name + SUFFIX)).read_bytes())
                    except DECODE_ERRORS:  # its bytes: the same at every read while the file is unchanged
                        damaged[name] = key
                        unreadable |= listed_at - st_letter.st_mtime <= RACY_S  # maybe still being written in place
                        continue
                    except OSError:  # maybe not the file's (a permission, an I/O error): read again at the next look
                        unreadable = True
                        continue
                    summary = _Summary(key, len(letter.rows), _owners(letter.rows), letter.set_aside_at)
                known[name] = summary
            self._known, self._indexed, self._damaged = known, _index(known), damaged
            # trusted until the folder changes, unless it changed just before (`RACY_S`) or a letter was unreadable (a
            # damaged one only while its file changed just before: else any damaged letter would keep every look
            # listing the folder, a profile GET's too)
            settled = st is not None and listed_at - st.st_mtime > RACY_S and not unreadable
            self._listed = stamp if settled else None
            return self._known, self._indexed

    def names(self) -> list[str]:
        """The letters' names, oldest first (by the time their file was written)."""
        return [name for name, _ in self._stats()]

    def read(self, name: str) -> DeadLetter:
        """The letter `name`. KeyError: no such letter (or no valid name); OSError, msgspec.DecodeError: unreadable."""
        if not NAME.fullmatch(name):
            raise KeyError(name)
        try:
            return _decode((self.folder / (name + SUFFIX)).read_bytes())
        except FileNotFoundError:
            raise KeyError(name) from None

    def page(self, tenant: str | None = None, after: tuple[float, str] | None = None,
             limit: int = 100) -> tuple[list[str], int, tuple[float, str] | None]:
        """(names, rows, next) of a page of the letters, oldest first by when they were set aside (then by name): up to
        `limit` names of letters holding rows of `tenant` (None: any), after the letter whose (set_aside_at, name) is
        `after` (None: from the first; a letter whose `set_aside_at` is not finite is placed at 0, and so is its cursor); `rows`, the rows of every letter of `tenant` (each page's the same); `next`, the
        `after` of the next page (None: this is the last). A letter rewritten meanwhile (a DELETE took some of its rows)
        keeps its place; one set aside meanwhile comes on a later page. Unreadable letters are left out."""
        index = self._index()
        if tenant is None:
            rows, where = index.rows, range(len(index.order))
        else:
            rows, where = index.tenants.get(tenant, (0, []))
        first = 0 if after is None else bisect.bisect_right(where, bisect.bisect_right(index.order, after) - 1)
        page = [index.order[i] for i in where[first : first + limit + 1]]  # one more: is there a next page?
        return [name for _, name in page[:limit]], rows, page[limit - 1] if len(page) > limit else None

    def rows_of(self, tenant: str, user_id: str) -> list[tuple[str, DeadLetter]]:
        """[(name, letter)] of the letters holding rows of the user, oldest first, each letter left with the user's rows
        only (their `row_numbers` with them): what an export of the user adds to their stored rows. Only the letters
        whose summary names the user are read; an unreadable one (or one discarded meanwhile) is left out."""
        found = []
        for name in self._index().owners.get((tenant, user_id), []):
            try:
                letter = self.read(name)
            except (KeyError, OSError, *DECODE_ERRORS):
                continue
            mine = [i for i, r in enumerate(letter.rows) if r.tenant == tenant and r.user_id == user_id]
            numbers = None if letter.row_numbers is None else [letter.row_numbers[i] for i in mine]
            found.append((name, msgspec.structs.replace(letter, rows=[letter.rows[i] for i in mine], row_numbers=numbers)))
        return found

    def rows_for(self, tenant: str, user_id: str) -> int:
        """How many rows of the user the readable letters hold, from their summaries (no letter read: reading
        each letter holding the user's rows takes ~19 ms a profile for an 8,000-row import's letter)."""
        return self._index().owned.get((tenant, user_id), 0)

    def rows(self) -> int:
        """How many rows the letters hold in all (unreadable ones counted as none)."""
        return self._index().rows

    def owners(self) -> set[tuple[str, str]]:
        """The (tenant, user_id) of the letters' rows (of readable letters): whom a deletion record applied here may name
        (`service.deletions.apply_deletions`)."""
        return set(self._index().owners)

    def holds_tenant(self, tenant: str) -> bool:
        """Whether a readable letter holds a row of `tenant` (from the letters' summaries: no letter read)."""
        return tenant in self._index().tenants

    def holds(self, tenant: str, user_id: str) -> bool:
        """Whether a readable letter holds a row of the user (`owners`, without building the set)."""
        return (tenant, user_id) in self._index().owners

    def discard(self, name: str) -> bool:
        """Removes the letter `name` for good; False when there is none."""
        if not NAME.fullmatch(name):
            return False
        with self._lock:
            try:
                (self.folder / (name + SUFFIX)).unlink()
            except FileNotFoundError:
                return False
            fsync_dir(self.folder)
        return True

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        """The user's rows leave the letters (received before `before` only, unix seconds; None: all; a row whose
        time is not finite counts as received before any); a letter left with none is removed. Returns how many
        rows went. OSError: a rewrite failed (that letter keeps them)."""
        return self.forget_users(tenant, {user_id}, before)

    def forget_users(self, tenant: str, user_ids: Collection[str], before: float | None = None) -> int:
        """`forget_user` of each of `user_ids` (of `tenant`), every letter read and rewritten once."""
        return self._forget(lambda owner: owner[0] == tenant and owner[1] in user_ids, lambda r: r.tenant == tenant and r.user_id in user_ids and (
            before is None or not math.isfinite(r.received()) or r.received() < before))

    def forget_tenant(self, tenant: str, before: float | None = None) -> int:
        """Every row of `tenant` leaves the letters, whoever's (a blank `user_id` too, which no DELETE names): what a
        tenant's removal does last (`service.tenants`), and another replica's removal once its record is applied here
        (`service.deletions.apply_deletions`, `before` its beginning: as `forget_user`'s). Returns how many rows went.
        OSError: as `forget_user`."""
        return self._forget(lambda owner: owner[0] == tenant, lambda r: r.tenant == tenant and (
            before is None or not math.isfinite(r.received()) or r.received() < before))

    def _forget(self, whose: Callable[[tuple[str, str]], bool], gone: Callable[[StoredPreference], bool]) -> int:
        """The rows `gone` picks leave the letters holding rows of an owner (tenant, user_id) `whose` picks (the others
        are not read), each letter rewritten whole (or removed, left with none)."""
        count = 0
        with self._lock:
            for name, summary in self._summaries().items():
                if not any(whose(owner) for owner in summary.owners):
                    continue
                path = self.folder / (name + SUFFIX)
                try:
                    letter = _decode(path.read_bytes())
                except (OSError, *DECODE_ERRORS):
                    continue
                keep = [i for i, r in enumerate(letter.rows) if not gone(r)]
                if len(keep) == len(letter.rows):
                    continue
                count += len(letter.rows) - len(keep)
                if keep:
                    numbers = None if letter.row_numbers is None else [letter.row_numbers[i] for i in keep]
                    write_atomic(path, _encode(msgspec.structs.replace(letter, rows=[letter.rows[i] for i in keep],
                                                                       row_numbers=numbers)))
                else:
                    os.unlink(path)
            if count:
                fsync_dir(self.folder)
        return count
