"""Users deleted, as a record every process on one store reads: how a DELETE answered by one
replica reaches the files only another replica holds (its population snapshots, its jobs' PAL and EM
artifacts, its promoted model). Each replica keeps its own jobs folder, so the shared LanceDB store
is the one place all of them read; the table `deletions` there is that record.

A row names the deleted user by `user_hash`, the sha256 (hex) of `tenant/user_id`, never by the id
itself: the record outlives the user, and a replica only has to recognise the names in its own files
(population files name users `tenant/user`). The hash hides an id from a casual reader of the table,
not from one who guesses ids and hashes them. `tenant` is kept plain: it names the customer, and a
replica drops that tenant's cached estimates. Rows are appended and never changed; a replica
remembers which it has applied (`Applied`).

A tenant's removal (`service.tenants`) writes one more row once its users are deleted, naming no user: its
`user_hash` is `TENANT_WIDE`, which no sha256 can be. It takes every row of the tenant received before the removal
began out of the other replicas' feedback records set aside (`pluralign.store.dead_letter`: their letters may hold
rows of users the removal never found there, and rows with a blank `user_id`, which no user's record names).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pyarrow as pa

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, write_atomic
from pluralign.store.schemas import SCHEMA_VERSION

TABLE = "deletions"
# a row may become visible to another replica this late after its `deleted_at` (clock skew between
# replicas, kept small by NTP, plus the commit and `store_sync_ms`): an `Applied` keeps the ids of rows
# this much older than its watermark, so a late one is still applied once and an early one never twice
SLACK_S = 600.0
# the `user_hash` of a tenant's removal's record (`new_tenant_deletion`): not hex, so no user's hash
TENANT_WIDE = "*"


def _plain(key: str) -> bool:
    """Whether every JSON encoder writes `key` alike: printable ASCII, no quote or backslash."""
    return key.isascii() and key.isprintable() and '"' not in key and "\\" not in key


def key_hash(key: str) -> str:
    """sha256 (hex, 64 characters) of a training user's key `tenant/user_id`."""
    return hashlib.sha256(key.encode()).hexdigest()


def user_hash(tenant: str, user_id: str) -> str:
    """The hash a deletion record names user `user_id` of `tenant` by (`key_hash` of `tenant/user_id`)."""
    return key_hash(f"{tenant}/{user_id}")


def record_schema(record_id: str, at: str, hashed: Sequence[str] = (), added: Sequence[pa.Field] = ()) -> pa.Schema:
    """The Arrow schema of a table of records every process on one store reads (`deletions`, and
    `pluralign.store.retractions`), appended and never changed: one row per record, in this order, its id
    `record_id`, `tenant` (plain), `user_hash` (`user_hash`), the columns `hashed` (what else it names, each a
    sha256 hex), when it happened `at` (unix seconds), the `replica` that answered it and the row's
    `schema_version`; then `added`, the nullable columns a later release added (an older table gains them on
    open). The column order is the one the tables on disk were made with."""
    return pa.schema(
        [
            pa.field(record_id, pa.string(), nullable=False),
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("user_hash", pa.string(), nullable=False),
            *(pa.field(name, pa.string(), nullable=False) for name in hashed),
            pa.field(at, pa.float64(), nullable=False),
            pa.field("replica", pa.int32(), nullable=False),
            pa.field("schema_version", pa.int32(), nullable=False),
            *added,
        ],
        metadata={"schema_version": str(SCHEMA_VERSION)},
    )


def deletion_schema() -> pa.Schema:
    """One row per DELETE of a user: which (by hash), when it was recorded and when it began (unix
    seconds), and which replica answered it."""
    return record_schema("deletion_id", "deleted_at", added=[
        # when the DELETE began (`Deletion`). Null: a record written before it was kept, its `deleted_at` stands in
        pa.field("began_at", pa.float64(), nullable=True),
        # what was made before it may hold the user's rows from before the DELETE (`Deletion.made`). Null: `deleted_at`
        # stands in
        pa.field("made_until", pa.float64(), nullable=True),
    ])


class Deletion(Persisted, kw_only=True, frozen=True):
    """A DELETE of a user, as every replica reads it. Two times, both on the answering replica's clock:
    `deleted_at`, when the record was written (the user's rows from before the DELETE had left the
    store by then; what replicas' watermarks follow, `Applied`), and `began_at`, when the DELETE began
    (what the user sent before it is deleted, what they sent after is theirs: `began`). A DELETE
    stopped part way and finished later (a replica restarting) is recorded when it is finished, so the
    two may lie far apart."""

    deletion_id: str
    tenant: str
    user_hash: str
    deleted_at: float  # unix seconds: when the record was written
    replica: int  # the replica index that answered the DELETE
    began_at: float | None = None  # unix seconds: when the DELETE began; None: written before it was kept
    # unix seconds: things made before it (a job queued, a snapshot taken) may hold the user's rows from before the
    # DELETE; None: `deleted_at` (their rows had left the store by the record's writing). Earlier for a DELETE finished
    # from the journal for a user who came back once those rows had gone (`service.users.services.forget_before`):
    # when they left the store (`Store.received_before_left_at`), never before `began_at`
    made_until: float | None = None

    def began(self) -> float:
        """When the DELETE began: rows of the user received before it are theirs no more. A record
        written before `began_at` was kept counts as begun when it was written (its old meaning)."""
        return self.deleted_at if self.began_at is None else self.began_at

    def made(self) -> float:
        """Until when what was made may hold the user's rows from before the DELETE (`made_until`, else `deleted_at`):
        a job queued or a snapshot taken since holds none of them (`Forget.made_at`)."""
        return self.deleted_at if self.made_until is None else self.made_until


def new_deletion(tenant: str, user_id: str, deleted_at: float, replica: int, began_at: float | None = None,
                 made_until: float | None = None) -> Deletion:
    return Deletion(deletion_id=uuid.uuid4().hex, tenant=tenant, user_hash=user_hash(tenant, user_id),
                    deleted_at=deleted_at, replica=replica, began_at=began_at, made_until=made_until)


def new_tenant_deletion(tenant: str, deleted_at: float, replica: int, began_at: float) -> Deletion:
    """The record of a removal of `tenant` (`TENANT_WIDE`), begun at `began_at` (unix seconds)."""
    return Deletion(deletion_id=uuid.uuid4().hex, tenant=tenant, user_hash=TENANT_WIDE, deleted_at=deleted_at,
                    replica=replica, began_at=began_at)


@dataclass(frozen=True)
class Forget:
    """Which training users (`tenant/user` keys, as population files name them) to forget: named by
    key (a DELETE answered here) or by `key_hash` (deletion records of other replicas). Callable on a
    key, as `pluralign.reward.training_users` takes it.

    A record may be applied long after its DELETE (a replica restarting, or applying every record
    again without its `Applied` file), when the user may have come back: what they sent since is theirs
    again. So a user named by hash is forgotten only from rows received before `until` (`until_of`: the
    DELETE's beginning) and from things made before `made_until` (`made_at`: the record's writing, by
    when their rows from before it had left the store; a snapshot taken or a job queued between the
    two may hold those rows)."""

    keys: frozenset[str] = frozenset()
    hashes: frozenset[str] = frozenset()
    # hash -> rows of theirs received before this (unix seconds) are forgotten: the latest record's
    # `began()` plus how stale a replica's reads of the store may be
    until: Mapping[str, float] = field(default_factory=dict)
    # hash -> what was made before this (unix seconds) may hold their rows from before the DELETE: the
    # latest record's `made()` (`deleted_at` unless it says earlier) plus the same staleness. Missing: `until` stands in
    made_until: Mapping[str, float] = field(default_factory=dict)
    # tenant -> every row of the tenant set aside (`pluralign.store.dead_letter`) received before this (unix seconds)
    # is forgotten: the latest removal's `began()` plus the same staleness (records naming `TENANT_WIDE`)
    tenants: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def key(cls, key: str) -> Forget:
        return cls(keys=frozenset([key]))

    @classmethod
    def of(cls, deletions: Iterable[Deletion], stale_s: float = 0.0) -> Forget:
        until: dict[str, float] = {}
        made_until: dict[str, float] = {}
        tenants: dict[str, float] = {}
        for d in deletions:
            if d.user_hash == TENANT_WIDE:
                tenants[d.tenant] = max(tenants.get(d.tenant, -math.inf), d.began() + stale_s)
                continue
            until[d.user_hash] = max(until.get(d.user_hash, -math.inf), d.began() + stale_s)
            made_until[d.user_hash] = max(made_until.get(d.user_hash, -math.inf), d.made() + stale_s)
        return cls(hashes=frozenset(until), until=until, made_until=made_until, tenants=tenants)

    def made_at(self, t: float | None) -> Forget:
        """The users whose data something made at `t` (unix seconds; None: not known) may hold: every one
        named by key (deleted here, now), and those named by hash whose record was written after `t`."""
        if t is None:
            return self
        made = {h: self.made_until.get(h, self.until.get(h, math.inf)) for h in self.hashes}
        hashes = frozenset(h for h in self.hashes if made[h] > t)
        return Forget(keys=self.keys, hashes=hashes, until={h: self.until[h] for h in hashes if h in self.until},
                      made_until={h: self.made_until[h] for h in hashes if h in self.made_until}, tenants=self.tenants)

    def __call__(self, key: str) -> bool:
        return key in self.keys or (bool(self.hashes) and key_hash(key) in self.hashes)

    def until_of(self, key: str) -> float | None:
        """Rows of user `key` received before this time (unix seconds) are forgotten: inf for one named
        by key, their DELETE's `until` for one named by hash, None for anyone else."""
        if key in self.keys:
            return math.inf
        h = key_hash(key) if self.hashes else None
        return self.until.get(h, math.inf) if h in self.hashes else None

    def made_until_of(self, key: str) -> float | None:
        """Things made before this time (unix seconds) may hold user `key`'s data (`made_at`): inf for one named by key,
        their latest record's `deleted_at` (plus the staleness) for one named by hash, None for anyone else."""
        if key in self.keys:
            return math.inf
        h = key_hash(key) if self.hashes else None
        if h not in self.hashes:
            return None
        return self.made_until.get(h, self.until.get(h, math.inf))

    def user(self, tenant: str, user_id: str) -> bool:
        return self(f"{tenant}/{user_id}")

    def may_name(self, data: bytes) -> bool:
        """False only when `data` (a JSON file's bytes) cannot name any of these users: a key is looked
        for as the JSON string it is written as; a hash cannot be, so with hashes every file may, and so
        may every file with a key that another JSON encoder could write otherwise (past printable ASCII,
        or holding a quote or backslash: escaped or not, as its writer chose)."""
        return bool(self.hashes) or any(not _plain(k) or msgspec.json.encode(k) in data for k in self.keys)


class Applied(msgspec.Struct, kw_only=True):
    """Which deletion records one replica has applied to its own files (a JSON file in its data
    folder): every record with `deleted_at` below `watermark - SLACK_S`, and those in `ids`."""

    watermark: float = 0.0  # the newest `deleted_at` applied
    ids: dict[str, float] = msgspec.field(default_factory=dict)  # applied records within SLACK_S of it: id -> deleted_at

    @classmethod
    def load(cls, path: Path) -> Applied:
        """The state at `path`; a missing file is a replica that has applied nothing (every record is
        then applied once: applying one again takes only data from before its DELETE, `Forget.made_at`).
        Raises ValueError on a damaged file."""
        if not path.is_file():
            return cls()
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except DECODE_ERRORS as exc:
            raise ValueError(f"{path}: not an applied-deletions file ({exc})") from None

    def since(self) -> float:
        """The `deleted_at` from which records may still be unapplied."""
        return self.watermark - SLACK_S

    def pending(self, records: Iterable[Deletion]) -> list[Deletion]:
        """Those of `records` not applied yet, oldest first."""
        return sorted((r for r in records if r.deleted_at >= self.since() and r.deletion_id not in self.ids),
                      key=lambda r: r.deleted_at)

    def add(self, records: Iterable[Deletion], now: float = math.inf) -> Applied:
        """The state once `records` are applied too; ids older than the new watermark's slack go
        (`pending` passes over those records by their time). The watermark never passes `now` (this
        replica's clock): a record from a replica whose clock runs ahead must not pass over the
        records every other replica writes meanwhile; its id is kept until the watermark reaches it."""
        ids = {**self.ids, **{r.deletion_id: r.deleted_at for r in records}}
        watermark = min(max([self.watermark, *ids.values()]), now)
        return Applied(watermark=watermark, ids={i: at for i, at in ids.items() if at >= watermark - SLACK_S})

    def save(self, path: Path) -> None:
        write_atomic(path, msgspec.json.encode(self))
