"""Claims on `pref_id`s, so that replicas sharing one store never both acknowledge a `pref_id` of one
user with different content.

Why: each replica checks an import's ids against the table and its own feedback log, then appends the
rows to its log and answers 201; the rows reach the table later (`pluralign.store.ingest`). Two imports
of one new id with different content sent to two replicas at once both passed that check, both were
acknowledged, and the mover of the second dropped its row (`PrefIdConflict`, logged only): an
acknowledged row lost. Neither LanceDB nor Lance can refuse the second: two `merge_insert`s of one key
from two processes both commit (two rows; tried with lancedb 0.40 / pylance 14), and an append never
conflicts. So before the 201 each replica writes one small object per id under the store's root with a
put-if-absent (the same primitive Lance's own commits rely on): on a folder a hard link of a written
temporary file (`os.link` fails when the name exists, and the claim is whole when it appears), on S3 a
PUT with `If-None-Match: *` (a 412 when the key exists; AWS S3 since 2024, moto, MinIO). The first
writer holds the id; a later import whose claim finds another content is refused (the service's 409
naming the line's `pref_id`), one with the same content goes on (the mover stores the row once).

What a claim holds: the sha256 of the row's content (`SAME_ROW_FIELDS` but its time; with the numbers of TRL's extra
columns beside it, compared as `datasets` writes them: `claim_of`), its `created_at`,
whether that time was stamped on receipt, and when it was received; it is named by the hashes of
`tenant/user_id` and of the id, so no user id, id or text is kept in the clear (those numbers aside). A DELETE of the user
removes the claims of rows received before it began (`forget_user`), as it removes the rows.

When a claim goes: a claim is needed only while its row is acknowledged and not in the table (once there, an
import of the id finds the row itself). So the mover (`pluralign.store.ingest`), once it has committed rows or found
them stored by another replica, removes their claims (`drop_stored`), each only if it is still the claim of that row
received no later than that copy (another replica that acknowledged the same row later, still holding it in its log,
keeps the claim: its own mover removes it), and only if it has not changed since it was read (below); a claim an
earlier release made of that row, of another content (`earlier_claims`), goes likewise. An import that
claims an id afresh then looks for it in the table's newest version before its 201 (the service's `_claim_ids`,
`Store.check_newest`): the claim may have been removed because the row of another content was just stored, and that
import's own check of the table (a cached history) may be older than the store. Claims of live users never removed
would cost one file (a 4 KiB block and an inode) or one object a row, for ever.

Every change of a claim after its put is conditional on what was read (compare-and-swap): the later time of a row
sent again (`claim`), a refused import's release (`release`), a DELETE's removal (`forget_user`), the mover's
(`drop_stored`). On S3 a PUT or DELETE with `If-Match` of the ETag read (a 412, or a 404 once removed: read again);
on a folder the read and the change hold an exclusive lock (`flock`) on the user's folder's `.lock` file, which the
put-if-absent (a hard link) needs not; a DELETE's claims step removes the folder, `.lock` and all, once no claim is
left in it (`FolderClaims.forget_user`: nothing stays for a deleted user), and so does a change that made `.lock`
(`FolderClaims._locked`: one made again between a DELETE's unlink of it and its removal of the folder would leave
both behind). Were the later time written over the claim whatever it held then, of two replicas receiving the same
row again the earlier time could land last (a DELETE begun between the two then removing the claim of a row it
kept), and a claim removed by a DELETE and taken by a third replica for other content would be written back over
(two contents acknowledged under one id).

Limits: a process killed between its claim and its log append leaves a claim with no row: that id is
then refused for other content until the user is deleted (the same content is accepted), and so is a claim whose
replica was killed (its volume lost) with the row still in its log. Stores other than a folder, `memory://` (one
process) and S3 (`gs://`, `az://`, `abfss://`) make no claims (`claims_for` gives None): two imports of one new id
with other content sent to two replicas are both acknowledged, and the mover that comes second finds the id in the
table and leaves that row out, logged as an error (the id, the user, the field that differs) and counted
(`Ingestor.left_out`); the import's rows of other ids are stored (`pluralign.store.ingest.split_held`): the
whole import is not left out. Both committing at once, the one committing second reads the ids back and deletes the later-received row (the same
choice on every replica: `pluralign.store.ingest.keeps`); only a
replica stopped between that commit and its read-back (or whose read-back failed) leaves both, until a row of that id
is moved again (`Ingestor._held_once`). Either way one of the two acknowledged rows is
lost: only claims refuse the second before its 201. A
claim left by an earlier release whose row is in the table goes at the first start of a release that sweeps them on
the store (`sweep_stored`, once: marked by `SWEPT`). The mover's removal of stored rows' claims that a kill or a power loss cut short is finished at
the replica's next start on its data folder (`pluralign.store.ingest`'s notes, on disk before the log forgets the
rows, fsynced: a power loss could otherwise lose the note and leave the claims for good), or at
a later one while that start's removal fails (the store refusing it) or is stopped first; when no note can be
written (a full disk) the claims are removed before the log forgets the rows (a stop in between
would leave them for good). A replica whose data folder is lost (or that never starts again) leaves its notes' claims until
a row of their id is moved again or the user is deleted; meanwhile each takes only the content the table holds.
An S3-compatible store must honour `If-Match` on PUT and DELETE (AWS S3, moto; one that ignores it writes and
removes unconditionally, as before).
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import numpy as np

from pluralign.data.io import same_as_written, trl_as_compared
from pluralign.data.record import Base, TrlRow
from pluralign.store.deletions import key_hash

log = logging.getLogger("pluralign.store")
FOLDER = "pref_id_claims"  # under the store's root: one folder per user (by hash), one claim per id (by hash)
LEFT_EMPTY_S = 5.0  # a claim file empty this long (seconds, by its mtime): its maker (an earlier release) was killed
S3_THREADS = 32  # claims of one import written at once (each is one PUT)
CHANGE_ATTEMPTS = 10  # reads of a claim that changed between its read and a conditional write, before OSError
SWEPT = ".stored-swept"  # under the claims' root: the claims earlier releases left of stored rows went (`sweep_stored`)
LOCK_FILE = ".lock"  # in a user's claims folder: held over a folder claim's read and change ("."-named: no claim)
CONTENT_FIELDS = ("prompt", "chosen", "rejected", "tie", "margin", "source", "attributes", "trl")  # SAME_ROW_FIELDS but created_at


class Claim(Base, frozen=True):
    """One id's claim: `content` the sha256 (hex) of the row's content but its time, `created_at` its
    time (unix seconds), `stamped` True when that time was given on receipt (the file had none: not
    compared), `received_at` when the claiming replica received it (unix seconds)."""

    content: str
    created_at: float
    stamped: bool
    received_at: float

    def same_preference(self, other: Claim, earlier: Collection[str] = ()) -> bool:
        """Whether `other` claims the same preference (`same_content`; `earlier`: the contents earlier releases' claims
        give `other`'s row, `earlier_contents`), at the same time unless either was stamped on receipt."""
        return same_content(self.content, other.content, earlier) \
            and (self.stamped or other.stamped or self.created_at == other.created_at)


NUMBERS_IN_CLAIM = 64  # most numbers of TRL's extra columns a claim holds in the clear, compared as written (`claim_of`)


def claim_of(row, stamped: bool) -> Claim:
    """The claim of `row` (a StoredPreference); `stamped`: its `created_at` was given on receipt. Its content is
    compared as one replica compares two rows under one id (`pluralign.data.io.trl_difference`): TRL's extra columns
    holding null are absent (`trl_as_compared`: Hugging Face `datasets` gives every row of a file every column, null
    where it had none: counted, a 409 through another replica while the file's rows are not yet in the table), and
    their numbers, lists item by item, are the same as `datasets` writes them back (`same_as_written`: 10
    decimals; hashed exactly, such a rewritten file through another replica before the move would be a 409). A hash cannot say "within 1e-10", so the content of a row whose TRL extra columns hold numbers is
    the sha256 of the row with each such number as 0, then ":" and the numbers (JSON, in the order of the sorted
    columns, lists in order), which `same_content` compares; of a row without such numbers (the most), or with more
    than NUMBERS_IN_CLAIM, the sha256 of the row as before (no tolerance past that many: they are hashed exactly).
    The numbers are what the row's extra columns hold, no text, id or user id, kept as long as the claim (until the
    row is in the table, or its user deleted). A release before versions53 compares contents exactly: in a rolling
    update, such a row sent again through one of its replicas while this release's claim holds the id is a 409."""
    values = [getattr(row, name) for name in CONTENT_FIELDS]
    values[CONTENT_FIELDS.index("margin")] = None if row.margin is None else float(np.float32(row.margin))  # as stored
    trl = trl_as_compared(row.trl)
    numbers: list[int | float] = []
    masked = None if trl is None else msgspec.structs.replace(trl, extra=_numbers_as_zero(trl.extra, numbers))
    values[CONTENT_FIELDS.index("trl")] = masked if 0 < len(numbers) <= NUMBERS_IN_CLAIM else trl
    content = hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest()
    if 0 < len(numbers) <= NUMBERS_IN_CLAIM:
        content = f"{content}:{msgspec.json.encode(numbers).decode()}"
    return Claim(content=content, created_at=float(row.created_at), stamped=stamped, received_at=float(row.received_at or 0.0))


def _numbers_as_zero(value, numbers: list):
    """`value` (a TRL extra column's, JSON) with each number (not a bool) as 0, appended to `numbers` as met (a dict's
    keys sorted, a list's items in order). Unambiguous: no value but a number becomes 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        numbers.append(value)
        return 0
    if isinstance(value, list):
        return [_numbers_as_zero(v, numbers) for v in value]
    if isinstance(value, dict):
        return {k: _numbers_as_zero(value[k], numbers) for k in sorted(value)}
    return value


def same_content(held: str, content: str, earlier: Collection[str] = ()) -> bool:
    """Whether a claim's content `held` and `content` (`claim_of`'s) name the same preference: equal, the same hash with
    numbers each the same as `datasets` writes them (`pluralign.data.io.same_as_written`), or `held` one of `earlier`
    (the contents earlier releases gave the row of `content`, `earlier_contents`: their claims are read so)."""
    if held == content or held in earlier:
        return True
    held_hash, _, held_numbers = held.partition(":")
    hash_, _, numbers = content.partition(":")
    if not held_numbers or not numbers or held_hash != hash_:
        return False
    try:
        theirs, ours = msgspec.json.decode(held_numbers), msgspec.json.decode(numbers)
    except msgspec.DecodeError:
        return False
    return isinstance(theirs, list) and isinstance(ours, list) and len(theirs) == len(ours) \
        and all(map(same_as_written, theirs, ours))


def earlier_contents(row, columns: Collection[str] = ()) -> frozenset[str]:
    """The contents earlier releases' claims give `row` (`claim_of`'s of those releases), so that their claims still
    take it, and refuse another: the one with TRL's null columns absent and every number exact, and the older one
    (the TRL form as received, null columns hashed), also with each of `columns` (the TRL extra
    columns of the rows of its import) the row lacks as null, as `datasets` writes a file back: an earlier replica that
    received that rewrite claimed the row so, and such a claim must not refuse the file itself."""
    values = [getattr(row, name) for name in CONTENT_FIELDS]
    values[CONTENT_FIELDS.index("margin")] = None if row.margin is None else float(np.float32(row.margin))
    forms = [trl_as_compared(row.trl), row.trl]
    missing = {name: None for name in columns if row.trl is None or name not in row.trl.extra}
    if missing:
        trl = row.trl or TrlRow(prompt=row.prompt, chosen=row.chosen, rejected=row.rejected)
        forms.append(msgspec.structs.replace(trl, extra={**trl.extra, **missing}))
    contents = set()
    for trl in forms:
        values[CONTENT_FIELDS.index("trl")] = trl
        contents.add(hashlib.sha256(msgspec.json.encode(values, order="sorted")).hexdigest())
    return frozenset(contents)


def earlier_claims(stored: Iterable[tuple[object, Claim]]) -> list[dict[str, dict[str, Claim]]]:
    """The claims earlier releases made of rows now stored ((a StoredPreference, this release's claim of it), one per
    id), whose content is not this release's (`earlier_contents`: numbers exact; or older,
    null columns hashed), for `PrefIdClaims.drop_named`, which removes a claim only where it holds the content
    it is given: each a map by the claims' names (`named`), the first holding one such form of each row, the second
    another; [] for rows without TRL extra columns (the most), which every release hashes alike. A row an earlier
    release acknowledged and this release moved (its replica upgraded meanwhile, the log kept) would otherwise have its
    claim left until the user was deleted."""
    forms: list[dict[tuple[str, str], dict[str, Claim]]] = []
    for row, claim in stored:
        trl = getattr(row, "trl", None)
        if trl is None or not trl.extra:
            continue
        for i, content in enumerate(sorted(earlier_contents(row) - {claim.content})):
            if i == len(forms):
                forms.append({})
            forms[i].setdefault((row.tenant, row.user_id), {})[row.pref_id] = msgspec.structs.replace(claim, content=content)
    return [named(form) for form in forms]


def _taken_on(held: Claim, claim: Claim, earlier: Collection[str]) -> Claim:
    """`held` taken on by `claim` of the same preference received later (`PrefIdClaims.claim`): its `received_at`, and
    its content where `held` has an earlier release's (`earlier`, `earlier_contents`): the mover of `claim`'s copy
    removes it (`drop_named`), finding only this release's forms of the row it stores (else such a
    claim would stay until the user was deleted)."""
    later = msgspec.structs.replace(held, received_at=claim.received_at)
    if held.content != claim.content and held.content in earlier:
        later = msgspec.structs.replace(later, content=claim.content)
    return later


def _folder(tenant: str, user_id: str) -> str:
    """The user's claims' folder: `key_hash` of `tenant/user_id`, as their deletion record names them."""
    return key_hash(f"{tenant}/{user_id}")


def folder_of(tenant: str, user_id: str) -> str:
    """The name of the user's claims' folder (a hash: no user id in the clear)."""
    return _folder(tenant, user_id)


def named(stored: Mapping[tuple[str, str], Mapping[str, Claim]]) -> dict[str, dict[str, Claim]]:
    """{(tenant, user_id): {pref_id: claim}} by the claims' names: {user folder: {id hash: claim}} (hashes only)."""
    return {_folder(tenant, user_id): {key_hash(pref_id): claim for pref_id, claim in claims.items()}
            for (tenant, user_id), claims in stored.items()}


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Claim).decode


class PrefIdClaims(abc.ABC):
    """Put-if-absent claims on ids (the module). Subclasses store them (`FolderClaims`, `MemoryClaims`,
    `S3Claims`) through the five abstract methods below; every change after a put is conditional on the version
    read (`_swap`, `_remove_if`)."""

    def claim(self, tenant: str, user_id: str, claims: Mapping[str, Claim],
              moved: dict[str, tuple[Claim, Claim]] | None = None,
              earlier: Mapping[str, Collection[str]] | None = None) -> tuple[list[str], dict[str, Claim]]:
        """Claim each id of `claims` for the user: returns (the ids claimed now, {id: the claim found} for the
        ids claimed before with other content: `Claim.same_preference`, `earlier` giving for an id the contents earlier
        releases' claims give its row, `earlier_contents`). An id claimed before with the same content is in neither; its
        claim takes the later `received_at` (and this release's content where it held an earlier release's) (a row sent again after a DELETE began is kept by it, and so is its
        claim: `forget_user`; a claim keeping its first time would be removed by the DELETE, and the id
        then free for other content on another replica while the row lived), only if unchanged since read
        (not whatever it holds then: an earlier time could land last, or a claim another import made for other
        content be written over). `moved` (when given) gets {id: (the claim found, as moved on)} of those,
        for `release` to put back if the import is then refused.
        Raises OSError (or the object store's error) when a claim cannot be written or read; the ids claimed
        (and times moved on) by this call before then are released first."""
        folder = _folder(tenant, user_id)
        moved = {} if moved is None else moved
        earlier = earlier or {}

        def one(item: tuple[str, Claim]) -> tuple[str, bool, Claim | None]:
            pref_id, claim = item
            name = f"{folder}/{key_hash(pref_id)}"
            for _ in range(CHANGE_ATTEMPTS):  # a claim removed or changed between our read and our write: look again
                if self._put(name, _encode(claim)):
                    return pref_id, True, None
                found = self._get(name)
                if found is None:
                    continue
                held = _decode(found[0])
                if held.same_preference(claim, earlier.get(pref_id, ())) and claim.received_at > held.received_at:
                    later = _taken_on(held, claim, earlier.get(pref_id, ()))
                    if not self._swap(name, found[1], _encode(later)):
                        continue
                    moved[pref_id] = (held, later)
                return pref_id, False, held
            raise OSError(f"the claim on pref_id {pref_id!r} kept changing while it was written")

        made, taken, failure = [], {}, None
        for pref_id, created, found in self._map(one, list(claims.items())):
            if isinstance(created, BaseException):
                failure = failure or created
            elif created:
                made.append(pref_id)
            elif found is not None and not found.same_preference(claims[pref_id], earlier.get(pref_id, ())):
                taken[pref_id] = found
        if failure is not None:
            self.release(tenant, user_id, {p: claims[p] for p in made}, moved)
            raise failure
        return made, taken

    def release(self, tenant: str, user_id: str, claims: Mapping[str, Claim],
                moved: Mapping[str, tuple[Claim, Claim]] | None = None) -> None:
        """Remove the claims this process made (`claims`: {id: the claim it put}; its import was refused or failed
        before its rows were acknowledged), and put back the earlier time of those it moved on (`moved`, `claim`'s),
        each only if still as this process left it: one another import of the same row moved on (`claim`) holds the
        id for that import, which was acknowledged. A time moved on by a refused import left, later than the stored
        row's copy, would have the claim outlive the row's move (`drop_stored`). A claim that cannot be
        removed or put back is logged and left."""
        folder = _folder(tenant, user_id)
        items = [(p, put, None) for p, put in claims.items()] + [(p, later, earlier) for p, (earlier, later) in (moved or {}).items()]

        def one(item: tuple[str, Claim, Claim | None]) -> tuple[str, bool, None]:
            pref_id, left, earlier = item
            name = f"{folder}/{key_hash(pref_id)}"
            found = self._get(name)
            if found is None or found[0] != _encode(left):
                return name, False, None
            return name, self._remove_if(name, found[1]) if earlier is None else self._swap(name, found[1], _encode(earlier)), None

        for _, outcome, _ in self._map(one, items):
            if isinstance(outcome, BaseException):  # a claim left reserves its id for the same content only
                log.warning("a pref_id claim was not released (%s): its id takes only the same content", outcome)

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        """Remove the user's claims of rows received before `before` (unix seconds; None: all), as a DELETE
        removes the rows; on S3 S3_THREADS at a time (one after another would take two round trips a
        claim). A claim whose time moves on between its read and its removal is read again (removed, a row sent again
        as the DELETE ran would be kept without its claim). Returns how many went. Raises
        OSError (or the object store's error) when one cannot be read or removed, once the others were looked at."""

        def one(item: tuple[str]) -> tuple[str, bool, None]:
            name = item[0]
            for _ in range(CHANGE_ATTEMPTS):
                found = self._get(name)
                if found is None or (before is not None and _decode(found[0]).received_at >= before):
                    return name, False, None
                if self._remove_if(name, found[1]):
                    return name, True, None
            raise OSError(f"the claim {name} kept changing while a DELETE removed it")

        return self._count(self._map(one, [(name,) for name in self._names(_folder(tenant, user_id))], background=True))

    def drop_stored(self, tenant: str, user_id: str, stored: Mapping[str, Claim]) -> int:
        """Remove the claims of rows now in the table (`stored`: {id: the claim of the copy committed or found
        stored, `claim_of`}), each only if it is a claim of that content received no later than that copy (a claim moved on
        by a later copy, still in another replica's log, stays for that replica's mover; one of other content, made
        after a DELETE, stays) and unchanged since read. The user's claims are listed once: rows without one (ids
        not given by a file) cost nothing more. Returns how many went. Raises OSError (or the object store's error)
        when one cannot be read or removed, once the others were looked at; a claim left only costs its file."""
        return self.drop_stored_of({(tenant, user_id): stored})

    def drop_stored_of(self, stored: Mapping[tuple[str, str], Mapping[str, Claim]]) -> int:
        """`drop_stored` for several users at once ({(tenant, user_id): their rows' claims}: a mover's batch), their
        folders listed S3_THREADS at a time on S3 (one user after another, a LIST each, for feedback too, which never
        has claims: 64 users with 20 ms a LIST, a bucket's round trip, ~2 s against ~0.3 s at once)."""
        return self.drop_named(named(stored))

    def drop_named(self, folders: Mapping[str, Mapping[str, Claim]]) -> int:
        """`drop_stored_of` by the claims' names ({user folder: {id hash: the stored copy's claim}}, `named`): what a
        mover notes before its log forgets the rows (`pluralign.store.ingest`), holding no id or user in the clear."""
        wanted, failure = [], None
        for folder, names, _ in self._map(lambda item: (item[0], self._names(item[0]), None), [(f,) for f in folders], background=True):
            if isinstance(names, BaseException):
                failure = failure or names
                continue
            present = set(names)
            wanted += [(name, claim) for id_hash, claim in folders[folder].items() if (name := f"{folder}/{id_hash}") in present]

        def one(item: tuple[str, Claim]) -> tuple[str, bool, None]:
            name, claim = item
            found = self._get(name)
            if found is None:
                return name, False, None
            held = _decode(found[0])
            # its `created_at` aside: the mover cannot tell a time stamped on receipt (another replica's copy of a
            # row whose file gave none is stamped with that replica's time); a claim made after a DELETE is later
            ours = same_content(held.content, claim.content) and held.received_at <= claim.received_at
            return name, ours and self._remove_if(name, found[1]), None

        gone = self._count(self._map(one, wanted, background=True))
        if failure is not None:
            raise failure
        return gone

    def sweep_stored(self, owners: Callable[[], list[tuple[str, str]]],
                     stored: Callable[[str, str], Mapping[str, Claim]]) -> int | None:
        """Once per store: removes the claims of rows stored already that earlier releases left (a mover killed
        between forgetting its rows and removing their claims, or a release that never removed one), by
        `drop_stored` (the same conditions as the mover's). `owners()`: every (tenant, user_id) the table holds rows of;
        `stored(tenant, user_id)`: {pref_id: claim_of the stored row}. Only users with a claims folder are read. Marks the
        store swept (`SWEPT`) once done; returns how many claims went, or None when it was swept already. Raises OSError
        (or the object store's error, or the table's) when something cannot be read or removed, once every other user
        was swept (not marked: the next start sweeps again; the sweep does not stop at that user, whose failing
        would keep the users after them swept by no start)."""
        if self._get(SWEPT) is not None:
            return None
        folders = set(self._folders())
        gone, failure = 0, None
        for tenant, user_id in owners() if folders else []:
            if _folder(tenant, user_id) in folders:
                try:
                    gone += self.drop_stored(tenant, user_id, stored(tenant, user_id))
                except Exception as exc:  # noqa: BLE001 (raised once the others were swept)
                    failure = failure or exc
        if failure is not None:
            raise failure
        self._mark_swept()
        return gone

    def _mark_swept(self) -> None:
        self._put(SWEPT, _encode({"at": time.time()}))

    @staticmethod
    def _count(outcomes) -> int:
        gone, failure = 0, None
        for _, removed, _ in outcomes:
            if isinstance(removed, BaseException):
                failure = failure or removed
            else:
                gone += bool(removed)
        if failure is not None:
            raise failure
        return gone

    def _map(self, fn, items, background: bool = False):
        """(fn(item) for each of `items`, in order; an item's exception as (item[0], exc, None)). `background`: a
        removal of many claims (the mover's, a DELETE's), not an import's claims, which must not wait behind it."""
        for item in items:
            try:
                yield fn(item)
            except Exception as exc:  # noqa: BLE001 (raised by the caller after the others are looked at)
                yield item[0], exc, None

    @abc.abstractmethod
    def _put(self, name: str, data: bytes) -> bool:
        """Writes `data` under `name` only if nothing is there, atomically: True when written, False when taken."""

    @abc.abstractmethod
    def _get(self, name: str) -> tuple[bytes, object] | None:
        """(what `name` holds, its version: the tag `_swap` and `_remove_if` compare); None when nothing is there."""

    @abc.abstractmethod
    def _swap(self, name: str, version: object, data: bytes) -> bool:
        """Writes `data` under `name` if it still holds `version` (`_get`'s), atomically: False, writing nothing,
        when it changed or went."""

    @abc.abstractmethod
    def _names(self, folder: str) -> list[str]:
        """The claim names under `folder` (one user's)."""

    @abc.abstractmethod
    def _remove_if(self, name: str, version: object) -> bool:
        """Removes `name` if it still holds `version` (`_get`'s), atomically: False when it changed or went."""

    @abc.abstractmethod
    def _folders(self) -> list[str]:
        """The users' claims folders (their names, `_folder`), once listed: `sweep_stored`'s only listing of them all."""


class FolderClaims(PrefIdClaims):
    """Claims as files under `root`/pref_id_claims, each written whole under a temporary name and hard-linked to
    its name (`os.link` fails when the name exists: put-if-absent), so a reader never finds one part written.
    Not created at its name with O_EXCL and then written, where a reader that found one still empty after ~100 ms
    would remove it: a maker paused that long would lose its claim, and both imports be acknowledged.
    A claim's version is its bytes; `_swap` and `_remove_if` compare them and change the file under an exclusive
    `flock` of the user's folder's `.lock` (on NFS the server's locks), so no other change falls between."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / FOLDER

    def claim(self, tenant: str, user_id: str, claims: Mapping[str, Claim],
              moved: dict[str, tuple[Claim, Claim]] | None = None,
              earlier: Mapping[str, Collection[str]] | None = None) -> tuple[list[str], dict[str, Claim]]:
        (self.root / _folder(tenant, user_id)).mkdir(parents=True, exist_ok=True)  # once, not per id
        return super().claim(tenant, user_id, claims, moved, earlier)

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        gone = super().forget_user(tenant, user_id, before)
        self._remove_folder_if_empty(_folder(tenant, user_id))
        return gone

    def _remove_folder_if_empty(self, folder: str) -> None:
        """The user's folder goes, its `.lock` with it, once it holds no claim (a DELETE's claims step: nothing of
        the user stays, neither the folder nor its `.lock`). The lock file is unlinked while held: a change waiting for it finds it gone and looks again
        (`_locked`); a claim being put (its temporary file) keeps the folder."""
        with self._locked(f"{folder}/", emptied=True):
            pass

    def _emptied(self, folder: str) -> None:
        """Removes the user's folder, `.lock` and all, when it holds no claim. Under its lock (`_locked`)."""
        if self._names(folder):
            return
        path = self.root / folder
        (path / LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a claim being put there meanwhile (or gone already)
            path.rmdir()

    def _put(self, name: str, data: bytes) -> bool:
        path = self.root / name
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")  # "."-named: not a claim (`_names`)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the user's folder, made by `claim`, removed meanwhile by a DELETE of theirs
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, data)  # ~150 bytes: one write
            finally:
                os.close(fd)
            os.link(part, path)  # whole when it appears; FileExistsError when the name is taken
            return True
        except FileExistsError:
            return False
        finally:
            part.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, name: str, emptied: bool = False) -> Iterator[bool]:
        """Holds the exclusive lock of `name`'s user folder; yields False (nothing held) when that folder is gone.
        A lock file unlinked while this waited for it (`_remove_folder_if_empty`) is not held: opened again. On
        leaving (held), a folder that holds no claim goes, `.lock` and all (`_emptied`), when `emptied` is set (a
        DELETE's claims step) or this call made the lock file: one made again by a change between a DELETE's unlink
        of it and its removal of the folder (whose removal then failed, the folder not empty) goes with the folder
        (else both would stay, for good)."""
        folder = name.partition("/")[0]
        lock = self.root / folder / LOCK_FILE
        for _ in range(CHANGE_ATTEMPTS):
            try:
                fd, made = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), True
            except FileExistsError:
                try:
                    fd, made = os.open(lock, os.O_RDWR), False
                except FileNotFoundError:  # unlinked since: made again
                    continue
            except FileNotFoundError:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(lock, fd):
                    yield True
                    if made or emptied:
                        self._emptied(folder)
                    return
            finally:
                os.close(fd)  # lets the lock go
        yield False

    def _holds(self, name: str, version: object) -> bool:
        try:
            return (self.root / name).read_bytes() == version
        except FileNotFoundError:
            return False

    def _swap(self, name: str, version: object, data: bytes) -> bool:
        path = self.root / name
        part = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        with self._locked(name) as held:
            if not held or not self._holds(name, version):
                return False
            try:
                part.write_bytes(data)
                os.replace(part, path)  # whole, as `_put`'s
            finally:
                part.unlink(missing_ok=True)
        return True

    def _remove_if(self, name: str, version: object) -> bool:
        with self._locked(name) as held:
            if not held or not self._holds(name, version):
                return False
            (self.root / name).unlink(missing_ok=True)
        return True

    def _get(self, name: str) -> tuple[bytes, object] | None:
        for _ in range(100):
            try:
                data = (self.root / name).read_bytes()
            except FileNotFoundError:
                return None
            if data.endswith(b"}"):
                return data, data
            # whole when linked: an empty one is an earlier release's claim whose maker was killed before writing
            # it (no claim), or that maker still writing it (a moment later)
            if time.time() - (self.root / name).stat().st_mtime > LEFT_EMPTY_S:
                self._remove_if(name, data)
                return None
            time.sleep(0.05)
        return None

    def _names(self, folder: str) -> list[str]:
        path = self.root / folder
        return [f"{folder}/{p.name}" for p in path.iterdir() if not p.name.startswith(".")] if path.is_dir() else []

    def _folders(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")] if self.root.is_dir() else []

    def _mark_swept(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        super()._mark_swept()


def _same_file(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd` (not unlinked, nor replaced by another)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class MemoryClaims(PrefIdClaims):
    """Claims in this process (a `memory://` store, which no other process shares); a claim's version is its bytes."""

    def __init__(self):
        self._claims: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _put(self, name: str, data: bytes) -> bool:
        with self._lock:
            return self._claims.setdefault(name, data) is data

    def _swap(self, name: str, version: object, data: bytes) -> bool:
        with self._lock:
            if self._claims.get(name) != version:
                return False
            self._claims[name] = data
            return True

    def _get(self, name: str) -> tuple[bytes, object] | None:
        data = self._claims.get(name)
        return None if data is None else (data, data)

    def _names(self, folder: str) -> list[str]:
        return [n for n in list(self._claims) if n.startswith(folder + "/")]

    def _folders(self) -> list[str]:
        return sorted({n.partition("/")[0] for n in list(self._claims) if "/" in n})

    def _remove_if(self, name: str, version: object) -> bool:
        with self._lock:
            if self._claims.get(name) != version:
                return False
            del self._claims[name]
            return True


# boto3.client's arguments from Lance's storage options, by object_store's names for them (its aliases), each
# else from the variable object_store reads (`AWS_` + the name, upper-cased) where boto3 reads another
_BOTO3_ARGS = {
    "endpoint_url": ("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url"),
    "region_name": ("aws_region", "region", "aws_default_region", "default_region"),
    "aws_access_key_id": ("aws_access_key_id", "access_key_id"),
    "aws_secret_access_key": ("aws_secret_access_key", "secret_access_key"),
    "aws_session_token": ("aws_session_token", "aws_token", "session_token", "token"),
}


def _lance_option(options: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The first of `names` in `options`, else of the `aws_` ones in the environment (upper-cased: object_store
    reads the `AWS_` variables only)."""
    return next((v for n in names if (v := options.get(n) or (n.startswith("aws_") and os.environ.get(n.upper())))), None)


def _seconds(duration: str) -> float:
    """object_store's duration ("10000ms", "30s", "30") in seconds."""
    text = duration.strip().lower()
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.removesuffix("s"))


class S3Claims(PrefIdClaims):
    """Claims as objects under `s3://bucket/prefix/pref_id_claims/`, each a PUT with `If-None-Match: *`,
    S3_THREADS at a time; a claim's version is its ETag, which a later PUT or DELETE of it names in `If-Match`. `options`: the store's Lance storage options (endpoint, region, credentials, by any of
    object_store's names, and its `timeout` and `connect_timeout`); one left out is taken where Lance takes it (the
    `AWS_*` variable of its name: AWS_ENDPOINT, which boto3 does not read), else boto3's default (the instance
    role). Not the `aws_*` options alone: a store reached through AWS_ENDPOINT would have its claims sent to AWS
    itself."""

    def __init__(self, uri: str, options: Mapping[str, str] | None = None):
        import boto3  # here: only a store on S3 needs it (~0.3 s of imports)
        from botocore.config import Config

        options = {k.lower(): v for k, v in (options or {}).items() if v}
        bucket, _, prefix = uri.split("://", 1)[1].split("?", 1)[0].partition("/")
        self.bucket, self.prefix = bucket, "/".join(p for p in (prefix.strip("/"), FOLDER) if p)
        timeouts = {name: _seconds(options[key]) for name, key in (("read_timeout", "timeout"), ("connect_timeout", "connect_timeout"))
                    if key in options}
        self.client = boto3.client(
            "s3", **{arg: _lance_option(options, names) for arg, names in _BOTO3_ARGS.items()},
            config=Config(max_pool_connections=2 * S3_THREADS, retries={"max_attempts": 3, "mode": "standard"}, **timeouts),  # both pools
        )
        self._pool = ThreadPoolExecutor(S3_THREADS, thread_name_prefix="claims")
        # the mover's and DELETEs' removals: on the imports' pool, an import of one row would wait behind the removal
        # of a batch's claims (2,048 rows: 25 s against moto), whatever its tenant
        self._removals = ThreadPoolExecutor(S3_THREADS, thread_name_prefix="claims-removal")

    def _map(self, fn, items, background: bool = False):
        pool = self._removals if background else self._pool
        futures = [pool.submit(fn, item) for item in items]
        for item, future in zip(items, futures, strict=True):
            exc = future.exception()
            yield (item[0], exc, None) if exc is not None else future.result()

    def _put(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "PreconditionFailed":  # the key exists
                return False
            if code == "ConditionalRequestConflict":  # another PUT of the key in flight: look once it is done
                return False
            raise

    def _swap(self, name: str, version: object, data: bytes) -> bool:
        return self._conditional(lambda: self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=data,
                                                                IfMatch=version))

    def _get(self, name: str) -> tuple[bytes, object] | None:
        from botocore.exceptions import ClientError

        try:
            found = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return found["Body"].read(), found["ETag"]

    def _names(self, folder: str) -> list[str]:
        names = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{folder}/")
        for page in pages:
            names += [item["Key"].removeprefix(self.prefix + "/") for item in page.get("Contents", [])]
        return names

    def _folders(self) -> list[str]:
        folders = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/", Delimiter="/")
        for page in pages:
            folders += [item["Prefix"].removeprefix(self.prefix + "/").rstrip("/") for item in page.get("CommonPrefixes", [])]
        return folders

    def _remove_if(self, name: str, version: object) -> bool:
        return self._conditional(lambda: self.client.delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", IfMatch=version))

    @staticmethod
    def _conditional(request) -> bool:
        """Sends `request` (a PUT or DELETE with If-Match): False when the object changed (412), went (404), or
        another conditional request on it was in flight (409)."""
        from botocore.exceptions import ClientError

        try:
            request()
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "404", "ConditionalRequestConflict"):
                return False
            raise


def claims_for(uri: str, options: Mapping[str, str] | None = None) -> PrefIdClaims | None:
    """The claims of the store at `uri` (a folder, `memory://`, `s3://` or `s3+ddb://`); None for another
    object store (`gs://`, `az://`, `abfss://`: no put-if-absent written for it here, though GCS and Azure Blob both
    offer one; what replicas then lose: the module docstring)."""
    if uri.startswith(("s3://", "s3+ddb://")):
        return S3Claims(uri, options)
    if uri.startswith("memory://"):
        return MemoryClaims()
    if uri.startswith("file://"):
        return FolderClaims(uri.removeprefix("file://"))
    if "://" in uri:
        return None
    return FolderClaims(uri)
