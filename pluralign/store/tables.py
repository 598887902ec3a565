"""The four LanceDB tables behind the service: preferences, interactions, users and the users'
stated-preference changes.

The URI is any LanceDB location (a folder, `memory://`, an object store), so the same code runs
embedded or remote. Every read is filtered to one tenant and one user; `tenant` and `user_id` carry
BITMAP scalar indexes, so a user's rows are found without a scan. A write returns only once LanceDB
has committed a new table version, which is what makes the service's 201 durable.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pluralign.data.io import file_trl, trl_difference
from pluralign.data.record import (
    MAX_CREATED_AT,
    Base,
    Persisted,
    TrlRow,
    file_time,
    seconds_meant,
    stand_in_received,
    time_problem,
    unit_ranges,
)
from pluralign.data.text import answer_key, is_blank, question_key
from pluralign.files import write_atomic
from pluralign.store import clocks, deletions, lease, retractions
from pluralign.store.claims import claims_for
from pluralign.store.commits import AddingCommits
from pluralign.store.deletions import Deletion
from pluralign.store.failures import (
    OLD_VERSIONS,
    Problems,
    StoreUnavailable,
    object_store_problem,
    secrets_of,
    unavailable,
)
from pluralign.store.group_commit import GroupCommit
from pluralign.store.history import History, HistoryCache, stored_seconds, with_stored_seconds
from pluralign.store.lance_imports import import_lancedb
from pluralign.store.lease import Lease, LeaseLost, PurgeMarks, open_lease_table
from pluralign.store.location import cache_session, connect, is_object_store
from pluralign.store.schemas import (
    PREFERENCE_KINDS,
    SCHEMA_VERSION,
    added_columns,
    interaction_schema,
    newer_schema,
    older_schema,
    preference_schema,
    stated_change_schema,
    user_schema,
)
from pluralign.store.versions import compact_with_deletions, remove_old_versions

import_lancedb()  # before lancedb's own modules (`lancedb.index` below): without its REST client's eager validators
from lancedb.index import Bitmap, BTree  # noqa: E402

log = logging.getLogger("pluralign.store")
_TRL_ENCODER = msgspec.json.Encoder()  # a preference row's `trl` column: a TrlRow as JSON text
_TRL_DECODER = msgspec.json.Decoder(TrlRow)
T = TypeVar("T")
PURGE_ATTEMPTS = 8  # a DELETE's maintenance steps, each against other replicas' concurrent ones (`Store._retried`)
# with other processes on the store, a DELETE removes old versions this long after they can last have
# looked for a newer one (`sync_seconds` after its purge), so none is still reading one it removes
READ_MARGIN_S = 2.0
# with replicas: how long (seconds) this process's removals of old versions, overlapping one another after their turns
# (`Store._drop_when_due`), may keep the store's lease before its next turn waits for them to let it go, so that
# another replica's delete or compaction gets a turn (`Store._lease_for_turn`)
LEASE_SHARE_S = 10.0
LEASE_YIELD_S = 0.5  # then how long it leaves the lease free for them (their polls: `lease.POLL_S` apart, each a read and a write)
READ_ATTEMPTS = 3  # a read that met such a removal anyway (it ran longer than the margin): read again (`Store._read`)
ROWS_PER_READ = 1000  # rows a streamed read (`Store.preferences_in_order`) takes at once: what it holds, whatever the user's size
# rows whose texts a DELETE reads at once (`Store.texts_in_batches`): three texts a row, ~1 KB in all for most, and up to
# 240 KB (20,000 characters each, 4 bytes a character in UTF-8 outside the Latin script: 4,096 such rows ~1 GB)
TEXT_ROWS_PER_READ = 4096
TEXT_BYTES_PER_READ = 16 << 20  # and at most this much text (UTF-8 bytes) a list, but for a row alone larger
# rows Lance hands over at once for those lists: ~1 MB of Arrow for most, 245 MB at most; fewer cost a thread's round trip
# each (20,000 rows' texts at load 8-9: 0.04-0.4 s at 1,024 and 0.03-0.2 s at 4,096, but 0.7-0.9 s at 256, 2-4.6 s at 64)
TEXT_ROWS_PER_BATCH = 1024

# what `Store.answers_sample` counts once: a question (next-comparison asks each) or a pair of answers whatever its
# prompt (a description showing each answer once); each in any spelling (`answer_key`)
DISTINCT_PER: dict[str, Callable[[str, str, str], Hashable]] = {
    "question": question_key, "pair": lambda prompt, x, y: frozenset((answer_key(x), answer_key(y)))}
DRAW_ATTEMPTS = 3  # draws of `Store.answers_sample` redone after a compaction changed the row ids meanwhile
WRITE_ATTEMPTS = 3  # a commit that met such a removal: made again on the newest version (`Store._commit`)
UPGRADE_ATTEMPTS = 4  # an older table's added columns and mark, against replicas upgrading it at the same moment (`Store._open`)
# the columns that tell an appended row apart (a commit is whole or absent: its first row tells whether it is there)
# (a pref_id is one user's: an export imported as another user keeps its ids)
APPEND_KEYS = {"preferences": ("tenant", "user_id", "pref_id"), "interactions": ("response_id",),
               "stated_changes": ("tenant", "user_id", "version", "feature"), deletions.TABLE: ("deletion_id",), retractions.TABLE: ("retraction_id",)}
INDEXED_COLUMNS = ("tenant", "user_id")
# per table, the columns indexed beside INDEXED_COLUMNS (BTREE, for ranges): a PATCH of stated preferences looks for its
# current version's rows (`stated_changes`); by the owner's BITMAPs alone, Lance read the version of every row of the
# user's history to find them (rows_scanned grew with each PATCH: tests/service/test_break59.py)
RANGE_INDEXED = {"stated_changes": ("version",)}
FEW_IDS = 64  # ids `Store.held_preferences` looks up by one query of them; more: by their users' keys first
USERS_PER_READ = 1000  # users `Store.users_with_preferences` looks up by one query (a filter of more is slow to plan)
# what makes two rows under one (tenant, user_id, pref_id) the same preference: a row sent again (a replayed
# import, a retried feedback) has them all equal; `received_at` is when it came, later for the copy, and `kind`
# how it was given: an import stores a user's exported edit or rated pair again as a comparison
SAME_ROW_FIELDS = ("prompt", "chosen", "rejected", "tie", "margin", "source", "created_at", "attributes", "trl")
INDEX_ATTEMPTS = 3  # `Store._ensure_indexes` against another process making the same index
COMPARISON_FILTER = " AND tie = false AND rejected != ''"  # rows a pairwise reward can learn from


def _texts(batches: list[pa.RecordBatch]) -> list[str]:
    """The prompts and answers of the rows of `batches` (columns prompt, chosen, rejected), without nulls."""
    return [t for b in batches for name in ("prompt", "chosen", "rejected") for t in b.column(name).to_pylist() if t is not None]


def _text_bytes(batch: pa.RecordBatch) -> np.ndarray:
    """The UTF-8 bytes of each row's texts (prompt, chosen, rejected) of `batch`, as `_texts` reads them."""
    return sum(pc.fill_null(pc.binary_length(batch.column(name)), 0).to_numpy().astype(np.int64)
               for name in ("prompt", "chosen", "rejected"))


def _indexes(name: str) -> list[tuple[str, Bitmap | BTree]]:
    """The scalar indexes of the table `name`: (column, config), BITMAP on INDEXED_COLUMNS, BTREE on its RANGE_INDEXED."""
    return [*((c, Bitmap()) for c in INDEXED_COLUMNS), *((c, BTree()) for c in RANGE_INDEXED.get(name, ()))]


class StoreError(ValueError):
    """A table that cannot be used as asked (a schema mismatch, a bad identifier)."""


class SharedStore(StoreError):
    """A process opening the store as its only one (no `sync_seconds`) where replicas wrote their clocks lately
    (`pluralign.store.clocks`): `replicas`, their indexes; `within_s`, how lately (seconds); `wait_s`, seconds until
    none of their rows is that recent by this machine's clock (a row stamped by a clock running ahead counts longer)."""

    def __init__(self, uri: str, rows: dict[int, float], within_s: float, now: float | None = None):
        now = time.time() if now is None else now
        self.replicas, self.within_s = sorted(rows), within_s
        self.wait_s = max(0.0, max(rows.values()) + within_s - now)
        ages = "; ".join(
            f"replica {i}'s row is stamped {at - now:.0f} s ahead of this machine's clock (its clock runs ahead, or this "
            "one's behind)" if at > now else f"replica {i}'s row was written {now - at:.0f} s ago"
            for i, at in sorted(rows.items())
        )
        super().__init__(
            f"replicas share the store {uri}: a replica's clock row counts it as running for {within_s:.0f} s after it "
            f"was written, and {ages}. A process opening it as its only one never sees their writes, and removes files "
            "their appends in flight name"
        )


class PrefIdConflict(StoreError):
    """Two different preferences under one `pref_id` of one user: in one call, or one call's row and the
    row held (stored, or pending in a feedback log). `index`: the row of the call (its position in
    `rows`); `field`: the first field in which the two differ (`SAME_ROW_FIELDS`; `trl.<column>` for one of TRL's
    extra columns, `pluralign.data.io.trl_difference`); `earlier`: the position
    of the call's earlier row under the id, None when the row differs from a held one."""

    def __init__(self, message: str, pref_id: str, index: int, field: str, earlier: int | None = None):
        super().__init__(message)
        self.pref_id, self.index, self.field, self.earlier = pref_id, index, field, earlier


class RowRefused(StoreError):
    """A row whose own content the preferences table cannot hold, whatever the store's state: a blank owner, a time
    or a vector that is not finite, a value Arrow cannot put in its column (a lone surrogate in a text). `index`: its
    position in the call's rows; `field`: the column at fault (`row` where Arrow does not say which). The same on
    every try: what a feedback log's mover sets aside as a dead letter (`pluralign.store.ingest`), where any other
    failure of a write is the store's, retried."""

    def __init__(self, message: str, index: int, field: str):
        super().__init__(message)
        self.index, self.field = index, field


def _row_refused(i: int, row: StoredPreference) -> RowRefused | None:
    """RowRefused naming row `i` (`row`) where its owner names no one or its `created_at` or `received_at` is not a
    finite time (pages, sorted by it, and a DELETE's cut-off would lose their order); None otherwise. The margin is not
    checked: a rating without rival keeps its signed score, (rating - 3) / 2."""
    for name, problem in (owner_problem(row.tenant, row.user_id) or (None, None), ("created_at", time_problem(row.created_at)),
                          ("received_at", time_problem(row.received_at))):
        if problem:
            return RowRefused(f"`{name}` of row {i} (pref_id {row.pref_id!r}) {problem}", i, name)
    return None


class DeletedMeanwhile(RuntimeError):
    """A streamed read (`Store.preferences_in_order`, `Store.interactions_in_order`) stopped part way:
    the version it read was removed (a purge, a compaction) and rows it had still to read are no longer
    in the newest one (a DELETE of the user). Not a storage failure: the store is fine, those rows are gone."""


class InOrder(Iterator[T]):
    """The rows of a streamed read (`Store.preferences_in_order`, `Store.interactions_in_order`), read as it advances;
    `len()` is how many it yields in all, fixed with the version read (rows written since are neither yielded nor
    counted: an export's `user` line counts the lines it sends). A DeletedMeanwhile may still stop it short."""

    __slots__ = ("_rows", "_count")

    def __init__(self, rows: Iterator[T], count: int):
        self._rows, self._count = rows, count

    def __next__(self) -> T:
        return next(self._rows)

    def __len__(self) -> int:
        return self._count


def whole_numbers(**fields) -> None:
    """StoreError naming the first of `fields` (a page's offset, a limit) that is not a whole number >= 0."""
    for name, value in fields.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise StoreError(f"`{name}` must be a whole number >= 0, got {value!r}")


def owner_problem(tenant, user_id) -> tuple[str, str] | None:
    """(field, problem) of the first of `tenant`, `user_id` that names no one (not a str, or without a visible
    character: a row of it is one no user owns, which no route reads or DELETE removes); None when both name one."""
    for name, value in (("tenant", tenant), ("user_id", user_id)):
        if not isinstance(value, str) or is_blank(value):
            return name, f"must not be empty (a str with a visible character), got {value!r}"
    return None


def _check_owner(tenant, user_id) -> None:
    """StoreError naming `tenant` or `user_id` where one names no one (`owner_problem`)."""
    if problem := owner_problem(tenant, user_id):
        raise StoreError(f"`{problem[0]}` {problem[1]}")


def refuse_newer(name: str, uri: str, metadata: dict[bytes, bytes] | None) -> None:
    """Raise StoreError when the table `name` at `uri` (its schema `metadata`) carries the mark of a
    newer release: its rows may not read back under this one. What every command that opens a store
    checks first (`Store._open`, `pluralign audit --store`)."""
    have = (metadata or {}).get(b"schema_version", b"").decode()
    if newer_schema(have):
        raise StoreError(
            f"table `{name}` at {uri} has schema_version={have}: a newer pluralign release has opened "
            f"this data folder (this one writes {SCHEMA_VERSION}); run that release, or restore the copy of "
            "the folder taken before the upgrade (docs/operations.md, 'Upgrading and rolling back')"
        )


def _uses(name: str, action: str):
    """A Store method that reads (`action` "read") or writes ("written") the table `name`: a storage
    failure in it (a full disk, a damaged file) is raised as StoreUnavailable naming the table. A read
    that met another process's removal of old versions is read again first (`Store._read`): only a
    file missing from the newest version too is a damaged table."""

    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            if action == "written":
                self._refuse_older(name)
            with self._on(name, action):
                if action == "read":
                    return self._read(lambda: method(self, *args, **kwargs))
                return method(self, *args, **kwargs)

        return run

    return wrap


class StoredPreference(Base):
    """One preference row without its vectors, as the API shows it."""

    tenant: str
    user_id: str
    pref_id: str
    prompt: str
    chosen: str
    rejected: str
    kind: str
    created_at: float
    tie: bool = False
    margin: float | None = None
    source: str | None = None
    attributes: dict[str, str] = {}
    # the TRL row an import read, as it came (message lists, the implicit prompt, TRL's extra columns),
    # when its text alone would not give it back (`Preference.trl`); None: the text is the row
    trl: TrlRow | None = None
    # when the service received the row (unix seconds, the receiving replica's clock); `created_at` is
    # when it was made (an import keeps its file's). None: stored before it was kept (`received`).
    # The last field: the feedback log stamps it into rows encoded before its lock (`feedback_log._check_tail`)
    received_at: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in PREFERENCE_KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(PREFERENCE_KINDS)}, got {self.kind!r}")

    def received(self) -> float:
        """When the row reached the service: what a DELETE compares with the time it began, since an
        imported row's `created_at` may be older than a DELETE it came after. A row stored before
        `received_at` was kept counts as received when it was made (`stand_in_received`: a time in milli-, micro- or
        nanoseconds an older version stored as its seconds, one that means no time, such as 1e300, or a date still to
        come as received before any DELETE; as `received_before` compares it)."""
        return stand_in_received(self.created_at) if self.received_at is None else self.received_at


class Interaction(Persisted):
    """A response served to a user: every candidate with its reward, and the history shown."""

    tenant: str
    user_id: str
    response_id: str
    created_at: float
    prompt: str
    messages: list[dict[str, str]]
    candidates: list[str]
    scores: list[float]
    chosen_index: int
    history: list[str]
    model: str
    adapter: str | None = None
    returned: int | None = None  # candidates[:returned] were the response's `choices`, in that order

    def choice_texts(self) -> list[str]:
        """The texts a client was shown as `choices`, indexed as it saw them (feedback's `chosen_index`, a rating's
        or edit's `index`).
        Older rows kept generation order and only the served answer is known to have been shown."""
        if self.returned is None:
            return [self.candidates[self.chosen_index]]
        return self.candidates[: self.returned]


class UserRecord(Persisted):
    """A user's row: PAL logits over the prototypes (None = population prior) and adapter name."""

    tenant: str
    user_id: str
    created_at: float
    updated_at: float
    attributes: dict[str, str] = {}
    pal_logits: list[float] | None = None
    pal_version: str | None = None
    adapter: str | None = None
    n_preferences: int = 0
    n_interactions: int = 0
    user_model: bytes | None = None  # `pluralign.user.UserState`, msgpack; None = not fitted
    stated: bytes | None = None  # `pluralign.user.stated.StatedPreferences`, msgpack; None = nothing stated


def differing_field(a: StoredPreference, b: StoredPreference) -> str | None:
    """The first of `SAME_ROW_FIELDS` in which two rows differ; None when they are the same preference. A
    margin is compared as stored (float32: a row read back equals the row sent)."""
    as_stored = lambda r, name: (None if r.margin is None else float(np.float32(r.margin))) if name == "margin" else getattr(r, name)
    return next((name for name in SAME_ROW_FIELDS if as_stored(a, name) != as_stored(b, name)), None)


def _differs(held: StoredPreference, row: StoredPreference, untimed: frozenset[str]) -> str | None:
    """`differing_field(held, row)`, the `created_at` of a row whose `pref_id` is in `untimed` not compared
    (an import's row whose file gave no time, stamped on receipt). `held` is compared as a preference file gives it
    (`file_time`, `file_trl`): a row an older version stored with a time in milliseconds, or a message role imports
    now refuse, is the same preference as the row its export imports again (its seconds; its text); TRL's forms are
    compared as `datasets` writes them back (`trl_difference`: an extra column holding null is absent, numbers as
    rounded by `to_json`), `trl.<column>` naming the one extra column that differs. Only a pair that
    differs as stored is compared so (the common case, a row sent again as it was, reads no message again)."""
    if row.pref_id in untimed:
        row = msgspec.structs.replace(row, created_at=held.created_at)
    if differing_field(held, row) is None:
        return None
    held = msgspec.structs.replace(held, created_at=file_time(held.created_at), trl=file_trl(held.trl, held.chosen))
    # a row a library call gives in milli-, micro- or nanoseconds is the one stored so, which reads back as its seconds
    row = msgspec.structs.replace(row, created_at=held.created_at if row.pref_id in untimed else seconds_meant(row.created_at))
    field = differing_field(held, row)  # `trl` the last of SAME_ROW_FIELDS: the rest are the same when it is `trl`
    return trl_difference(held.trl, row.trl) if field == "trl" else field


def differs_but_time(held: StoredPreference, row: StoredPreference) -> str | None:
    """The first of `SAME_ROW_FIELDS` but `created_at` in which `row` differs from `held`, as `_differs` compares
    them; None when it is the same preference. For a row whose first receipt cannot be told apart from its
    copy's: a feedback retried with `Idempotency-Key` through another replica is stamped with that replica's time,
    and an import's row whose file gave no time too (the feedback log keeps no mark of which). The same row as it was
    (the common case) is told by plain equality, without `_differs`' copies (~1 us a row instead of ~8)."""
    if all(getattr(held, name) == getattr(row, name) for name in _UNTIMED_FIELDS):
        return None
    return _differs(held, row, frozenset({row.pref_id}))


_UNTIMED_FIELDS = tuple(name for name in SAME_ROW_FIELDS if name != "created_at")


def quote(value: str) -> str:
    """A SQL string literal for a LanceDB filter."""
    return "'" + value.replace("'", "''") + "'"


def _interaction(row: dict) -> Interaction:
    row.pop("schema_version")
    row["messages"] = json.loads(row["messages"])
    return msgspec.convert(row, Interaction)


def owner_filter(tenant: str, user_id: str) -> str:
    return f"tenant = {quote(tenant)} AND user_id = {quote(user_id)}"


def owners_filter(tenant: str, user_ids: list[str]) -> str:
    """The rows of any of `user_ids` (of `tenant`, at least one id): one predicate, as a batch reads and deletes them."""
    if len(user_ids) == 1:
        return owner_filter(tenant, user_ids[0])
    return f"tenant = {quote(tenant)} AND user_id IN ({', '.join(quote(u) for u in user_ids)})"


def _vectors(array: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    array = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(array, type=pa.float32()), dim)


TRANSACTION_CACHE_BYTES = 1 << 20  # what the handle reading the preferences table's transactions caches (`_operation_of`)


def _same_rows(history: History, stored: pa.Table) -> bool:
    """Whether `stored` (a user's rows as the table holds them: `pref_id`, and `received_at` when it has it) are the
    rows `history` holds: the same ids (one row each), received at the same times."""
    if stored.num_rows != len(history):
        return False
    names = stored.column_names

    def ordered(table: pa.Table) -> pa.Table:  # by every column: two rows under one id (a race of two inserts) too
        table = table.select(names)
        return table.take(pc.sort_indices(table, sort_keys=[(name, "ascending") for name in names]))

    ours, theirs = ordered(history.meta), ordered(stored)
    return all(ours.column(name).equals(theirs.column(name)) for name in names)


def _made_without_encoder(key: bytes, found: dict[bytes, bytes]) -> bool:
    """Whether the metadata `found` of a table records the encoder id '' (`key` being encoder_id): a Store
    made with it by an earlier release, whose vectors are of the encoder it is opened with now, the only one
    that can tell."""
    return key == b"encoder_id" and key in found and is_blank(found[key].decode())


def _commit_conflict(exc: BaseException) -> bool:
    """Whether Lance refused a commit because another one on the table came first."""
    words = str(exc).lower()
    return "commit conflict" in words or "incompatible transaction" in words


class Store:
    """Opens (or creates) the tables under `uri` for one encoder; refuses tables of another.

    Per-user reads of preferences (nearest shots, comparisons, counts, pages) come from the user's
    `History`, loaded from LanceDB in one query and kept in a cache of `history_bytes` until a
    write or delete of that user's rows goes through this Store. With `sync_seconds` set (several
    processes writing the same tables), reads see other processes' commits at most that late: the
    connection looks for new table versions that often, and a cached history older than that is
    checked against the table (`_cached`: nothing read when the table is still at the version it was
    found to match; a count of the user's rows when every commit since only added rows; else the user's
    rows' ids and arrival times, BITMAP-indexed) and reloaded if they differ. Without it (one process),
    rows written by another process are not seen until the user's history is evicted."""

    def __init__(
        self, uri: str | os.PathLike, encoder_id: str, dim: int, history_bytes: int = 128 << 20,
        storage_options: dict[str, str] | None = None, sync_seconds: float | None = None,
        lease_ttl_s: float = lease.TTL_S, finish_purges: bool = True, cache_bytes: int = 256 << 20,
        shared_within_s: float = 60.0, withdrawn_note: str | os.PathLike | None = None,
    ):
        """`uri`: a folder (a str or a pathlib.Path), `memory://` or an object store's URI; `dim` a whole number (a numpy
        integer too). `storage_options` (Lance's names: `aws_endpoint`, `allow_http`, credentials) reach an
        object store; see `pluralign.store.location`. `sync_seconds`: see the class. `lease_ttl_s`: seconds
        after which the maintenance lease of a replica that stopped renewing it is free (with `sync_seconds`
        only; `pluralign.store.lease`). `finish_purges` (without `sync_seconds`): finish now the purges a
        killed process of this store left (`delete_user`), and mark tables an earlier release wrote
        with this one's schema version (`_open`); False for a process that only reads a store another
        one serves (`pluralign train adapter --store`), which must not purge beside it, nor change an
        earlier release's tables (`_upgrade`: read as they are; a write to one is a StoreError). `cache_bytes`: the most LanceDB's caches of index pages and
        table metadata hold (`location.cache_session`). `shared_within_s` (without `sync_seconds`, with `finish_purges`):
        seconds within which a replica's clock row (`pluralign.store.clocks`) makes the store shared, and this open a
        SharedStore error, before anything is purged, marked or indexed. `withdrawn_note`: a file of
        this process's own (the service's data folder), there while a row `withdraw_user` deleted waits for its purge:
        a process killed (or stopped) before the purge had its turn leaves it, and `finish_withdrawn` on the next open
        on it purges the users table in the background (`wait_withdrawn`). It names no one. Raises StoreError
        when `uri` is a local file (not a folder), `dim` is not >= 1, `encoder_id` is empty, the tables there were made
        for another encoder or schema, or one cannot be opened (damaged: named). Tables an earlier release made under
        the encoder id '' are `encoder_id`'s: it is recorded in them (with `finish_purges`; `_check_made_alike`)."""
        if isinstance(dim, bool | np.bool_) or not isinstance(dim, int | np.integer) or dim < 1:
            raise StoreError(f"`dim` must be the encoder's embedding width (a whole number >= 1), got {dim!r}")
        dim = int(dim)  # a numpy shape's or config's width (np.int64) as the int the tables' metadata records
        uri = os.fspath(uri)  # a pathlib.Path as the text every check below and the error messages read
        if not isinstance(encoder_id, str) or is_blank(encoder_id):  # the tables' metadata records it: vectors of no encoder
            raise StoreError(f"`encoder_id` must name the encoder whose vectors the tables hold (a str with a visible character), "
                             f"got {encoder_id!r}")
        if not is_object_store(uri) and "://" not in uri and Path(uri).exists() and not Path(uri).is_dir():
            raise StoreError(f"{uri} is a file, not a folder for the store's tables")
        self.uri = uri
        self.problems = Problems()  # storage failures seen lately (`_on`), for a health check
        self._reading = threading.local()  # `.on`: this thread is in a `_read` (one retrying loop, the outermost)
        self.encoder_id = encoder_id
        self.dim = dim
        self.sync_seconds = sync_seconds
        # the credentials among the options: never in a log line or an error (`failures.scrub`)
        self._secrets = secrets_of(storage_options)
        try:
            self._session = cache_session(cache_bytes)
            self.db = connect(uri, storage_options, None if sync_seconds is None else timedelta(seconds=sync_seconds), self._session)
            existing = set(self.db.list_tables().tables)
            shared = (self.recent_replicas(shared_within_s) if sync_seconds is None and finish_purges and clocks.TABLE in existing
                      else {})
        except (OSError, RuntimeError, ValueError) as exc:  # an object store down, refusing the keys, without the bucket
            found = unavailable(exc, "the store", uri, "opened", self._secrets) if is_object_store(uri) else None
            if found is None:
                raise
            raise found from None
        if shared:  # replicas on it: alone, this process would serve what it read now, and purge beside their appends
            raise SharedStore(uri, shared, shared_within_s)
        self._lock = threading.RLock()  # held by every commit
        self._maintenance_lock = threading.RLock()  # held by compaction and deletes (`_maintenance`)
        self._lease_let_go = threading.Condition(self._maintenance_lock)  # notified when removals let the lease go
        self._drops_holding = 0  # `_drop_when_due` calls under way, each holding the lease once
        self._yielding = False  # this process's turns leave the lease to other replicas a moment (`_lease_for_turn`)
        # the schema-version mark an earlier release left on the tables, kept by a process that only
        # reads a store another one serves (`finish_purges` False): that one may be the earlier release
        self._older_mark: str | None = None
        self._marks = finish_purges
        # the tables such a process left as the earlier release wrote them: each one's columns this
        # release adds, which it lacks (read as null, `_present`); nothing is written to them (`_refuse_older`)
        self._older: dict[str, dict[str, pa.Field]] = {}
        self.schemas = {
            "preferences": preference_schema(encoder_id, dim),
            "interactions": interaction_schema(encoder_id, dim),
            "users": user_schema(encoder_id, dim),
            "stated_changes": stated_change_schema(encoder_id, dim),
        }
        self._adding_lock = threading.Lock()  # guards `_in_flight`
        self._in_flight: dict[tuple[str, str, str], threading.Event] = {}  # (tenant, user_id, pref_id) being added (`_adding`)
        self._appends = {name: GroupCommit(lambda data, name=name: self._commit_append(name, data))
                         for name in ("preferences", "interactions", "stated_changes")}
        # appends made again so far, by table (`_commit_rows`: only the keys the table lacks then): a row of a key another
        # replica stored meanwhile, with other content too, is left out there (`pluralign.store.ingest` reads them back)
        self.appends_made_again = dict.fromkeys(self._appends, 0)
        self._upserts = GroupCommit(self._commit_users)
        self.tables = {name: self._open(name, schema, name in existing) for name, schema in self.schemas.items()}
        # who was deleted, by hash, for other replicas' files (`pluralign.store.deletions`); apart from
        # `tables`: it names no user by id, so a user's DELETE, compaction and stats pass it by
        self.deletions = self._open(deletions.TABLE, deletions.deletion_schema(), deletions.TABLE in existing)
        self._new_deletions = 0
        # rows taken back, by hash, for other replicas' feedback logs (`pluralign.store.retractions`): apart, as `deletions`
        self.retractions = self._open(retractions.TABLE, retractions.retraction_schema(), retractions.TABLE in existing)
        self._retractions_forgotten = False  # a `delete_users` step deleted rows of it (compacted after the step)
        self._retraction_writes = 0  # commits to it since the last `compact`
        # several processes on the store: their maintenance takes turns (`pluralign.store.lease`)
        # several processes on the store: each id an import carries is claimed there before its 201
        # (`pluralign.store.claims`); alone, the service's import lock orders the check and the append
        self.claims = None if sync_seconds is None else claims_for(uri, storage_options)
        self.lease = None if sync_seconds is None else Lease(open_lease_table(self.db, lease.TABLE in existing), ttl_s=lease_ttl_s, db=self.db,
                                                                 where=uri, secrets=self._secrets, problems=self.problems)
        # the purges a stopped delete left to do: with replicas, beside the lease row; alone, in the same
        # table (its lease row stays free), so a killed process's purge is finished on its next start
        self.marks: PurgeMarks = self.lease or PurgeMarks(open_lease_table(self.db, lease.TABLE in existing), alone=True)
        self._turns = 0  # open `_maintenance` blocks of this process (1: its outermost turn)
        # with replicas, the removals of old versions this turn's purges owe once every process looks past them:
        # (tables, purged_at), each made when the turn ends, outside it (`_drop_when_due`), so that the wait
        # (`sync_seconds` + READ_MARGIN_S) holds no other delete's turn
        self._owed: list[tuple[list[str], float]] = []
        self._dropping: Counter[str] = Counter()  # by table: owed removals not made yet (their marks stay till then)
        # called by `delete_users` (tenant, its users, its `before`) once their rows left the tables' newest versions, before
        # the purge: a caller's note of when they went (`service.users.journal.DeleteJournal.rows_gone`) is then not
        # lost with a process killed in the purge, which may take long (every fragment with a deletion rewritten)
        self.rows_gone: Callable[[str, list[str], float | None], None] | None = None
        self._unpurged: set[str] = set()  # tables marked for a delete and not purged since (a turn stopped part way)
        self.writes_since_compaction = 0
        self._pending = dict.fromkeys(self.tables, 0)  # commits per table since its last compaction
        self._indexed: set[str] = set()
        self.histories = HistoryCache(history_bytes)
        self._adding_commits = AddingCommits(self._operation_of)  # which preferences commits only added rows (`_matches`)
        self._transactions = None  # the preferences table as a Lance dataset, for its commits' transactions
        self._warming: set[tuple[str, str]] = set()
        self._warmer = ThreadPoolExecutor(1, thread_name_prefix="history")
        # the purge of the users rows `withdraw_user` deleted, in a turn of its own: one queued at a time
        self._purge_queued = threading.Event()
        self._purging: list[threading.Thread] = []  # those started, for `wait_withdrawn`
        self._purge_lock = threading.Lock()  # guards the two above in `withdraw_user`, and `_withdrawing`
        self._withdrawing = 0  # `withdraw_user` calls between their note and their purge queued
        # read alone too: a replica's folder may serve the store alone later (the replica count changed to 1)
        self._withdrawn_note = Path(withdrawn_note) if withdrawn_note is not None else None
        for name in self.tables:
            # a process that only reads (`finish_purges` False) commits nothing at its open, not even an index: the
            # previous release's serve may be writing tables of this schema version that lack one this release adds
            # (`RANGE_INDEXED`); the serve's next start makes it. Nor to an earlier release's table it only reads
            if self._marks and name not in self._older:
                self._ensure_indexes(name)
        if self.lease is None and finish_purges:  # alone on the store: what a killed process of it left is finished now
            try:
                with self._maintenance():  # a turn begins with what a stopped one left
                    pass
            except (OSError, RuntimeError) as exc:  # Lance's; the marks stay for the next turn
                log.warning("the purge a stopped delete left was not finished at open (%s); the next delete or compaction tries again", exc)
            self.marks.drop_old_versions(timedelta(0))

    def finish_withdrawn(self) -> bool:
        """The purge `withdrawn_note` says a stopped process of this folder owed (a withdrawn users row it had not
        purged), started in the background (`wait_withdrawn`) when the note is there; returns whether one was. The
        service calls it once its start is not refused (`service.runtime.open_store`): a refused start exits at once,
        and its purge, holding the store's lease, would keep every replica's deletes waiting the lease's TTL."""
        if self._withdrawn_note is None or not self._withdrawn_note.exists():
            return False
        log.warning("finishing the purge of a withdrawn users row that a stopped process left (%s)", self._withdrawn_note)
        with self._purge_lock:
            if not self._purge_queued.is_set():  # one queued purges every row withdrawn before it begins
                self._start_withdrawn_purge()
        return True

    def recent_replicas(self, within_s: float) -> dict[int, float]:
        """`clocks.recent_replicas` of this store: the replicas whose clock rows were written within `within_s` seconds,
        each with its row's time (unix seconds). Raises as `recent_clock_rows`."""
        return clocks.replicas_of(self.recent_clock_rows(within_s))

    def recent_clock_rows(self, within_s: float) -> list[dict]:
        """`clocks.recent_rows` of this store: the clock rows written within `within_s` seconds. Raises StoreError naming
        the table when it cannot be read (damaged), and StoreUnavailable for an object store's endpoint, keys or bucket."""
        try:
            return clocks.recent_rows(self.db, within_s)
        except (OSError, RuntimeError) as exc:  # Lance's for a file missing, a manifest cut short
            if is_object_store(self.uri) and object_store_problem(str(exc)) is not None:  # its endpoint, keys or bucket
                raise unavailable(exc, f"table `{clocks.TABLE}`", self.uri, "read", self._secrets) from None
            raise StoreError(f"table `{clocks.TABLE}` at {self.uri} cannot be read (damaged or unreadable: {exc}); it says "
                             "whether replicas share the store: restore the folder from a backup, or, when no replica runs "
                             f"on the store any more, remove the table `{clocks.TABLE}` (replicas make it again)") from None

    @contextlib.contextmanager
    def _maintenance(self):
        """One delete or compaction at a time: in this process (a lock) and, with other processes on
        the store, among them (the store's lease). A new turn first finishes the purges a stopped one
        left (`PurgeMarks`): one whose process was killed (with replicas, this or another; alone, this
        one's, before it started again), or whose purge raised."""
        self._refuse_older(*self._older)
        owed: list[tuple[list[str], float]] = []
        try:
            with self._maintenance_lock, self._lease_for_turn():
                self._turns += 1
                try:
                    if self._turns == 1:  # this thread's outermost turn (the lease may be held by removals meanwhile)
                        # not those whose purge a turn of this process made and whose old versions wait for their
                        # removal, unless a delete marked them again since and stopped before its purge (`_unpurged`)
                        waiting = {name for name, n in self._dropping.items() if n > 0} - self._unpurged
                        left = sorted(self.marks.pending() & set(self.tables) - waiting)
                        if left:
                            log.warning("finishing the purge of %s that a stopped delete left", ", ".join(left))
                            self.refresh(*left)
                            self._purge_tables(left)
                    yield
                finally:
                    self._turns -= 1
                    if not self._turns and self._owed:
                        owed, self._owed = self._owed, []
                        if self.lease is not None:  # held through the wait: no other replica's purge meets these marks
                            self.lease.__enter__()
                            self._drops_holding += 1
        finally:
            if owed:
                self._drop_when_due(owed)

    def _drop_when_due(self, owed: list[tuple[list[str], float]]) -> None:
        """After a turn (its lock let go): each of `owed`'s removals of old versions (`_purge_tables`), once every
        process on the store looks at a version after its purge (`sync_seconds` + READ_MARGIN_S after `purged_at`),
        under the maintenance lock only for the removal itself; then the marks of the tables no other purge of
        this process still owes a removal. Other deletes and compactions of this process take their turns
        meanwhile (the wait does not hold the turn, which would keep every other tenant's DELETE waiting behind
        one tenant's). With replicas the store's lease stays held (taken once more by `_maintenance`) until
        the last removal, so no other replica purges beside them. Raises as `_drop_old_versions`, after which the
        tables' marks stay (the next turn purges them again)."""
        done = 0
        try:
            for names, purged_at in owed:
                wait = self.sync_seconds + READ_MARGIN_S
                time.sleep(max(0.0, min(wait, purged_at + wait - time.time())))  # at most `wait`: a clock set back meanwhile
                with self._maintenance_lock:
                    self._retried(lambda names=names, purged_at=purged_at: self._drop_old_versions(names, purged_at))
                    self._dropping.subtract(names)
                    done += 1
                    self.marks.clear([n for n in names if self._dropping[n] <= 0 and n not in self._unpurged])
        finally:
            with self._maintenance_lock:
                for names, _ in owed[done:]:  # not made: their marks stay for the next turn
                    self._dropping.subtract(names)
                if self.lease is not None:
                    self._drops_holding -= 1
                    self.lease.__exit__(None, None, None)
                    if not self._drops_holding:
                        self._lease_let_go.notify_all()

    def _lease_for_turn(self) -> contextlib.AbstractContextManager:
        """Under the maintenance lock, at the start of a turn: the store's lease (None alone on the store). When this
        thread is in no turn yet and the lease has been held longer than LEASE_SHARE_S by this process's removals of
        old versions alone (`_drop_when_due`: their waits overlap, each taking it again while the last is held), first
        waits for them to let it go (the lock released meanwhile) and gives other replicas' polls (`lease.POLL_S`) a
        chance to take it: else the lease would never be let go while this process's deletes kept coming, and
        another replica's delete would wait its 10 minutes, then fail."""
        if self.lease is None:
            return contextlib.nullcontext()
        if self._turns:  # a turn of this thread holds it
            return self.lease
        alone_holding = self._drops_holding and self.lease.depth == self._drops_holding  # no turn or caller holds it
        if alone_holding and time.monotonic() - self.lease.taken_at > LEASE_SHARE_S:
            self._yielding = True
        if self._yielding:  # every turn of this process waits, not only the first to see it (the lock is not fair)
            while self._drops_holding:
                self._lease_let_go.wait(0.5)
            if self._yielding:  # the first here once they let it go: the others wait for the lock meanwhile
                time.sleep(LEASE_YIELD_S)
                self._yielding = False
        return self.lease

    def maintenance(self) -> contextlib.AbstractContextManager:
        """This process's turn at deletes and compactions (re-entrant; `delete_user` and `compact` take
        it themselves). A caller that holds other locks across a delete takes the turn first, so that
        while it waits for the turn (with replicas, for the store's lease: up to 10 minutes, then
        TimeoutError) it holds nothing else. With replicas, the removals of old versions its purges owe are made
        as it ends (`_drop_when_due`): the `with` block's exit waits for them holding no turn, so a caller should
        hold no other lock across that exit."""
        return self._maintenance()

    @contextlib.contextmanager
    def _on(self, name: str, action: str):
        """Around a read ("read") or write ("written") of the table `name`: Lance's or the system's
        storage failures (`pluralign.store.failures.storage_problem`) are raised as StoreUnavailable
        naming the table and its folder, and noted in `problems`; a success clears a failed write."""
        what = f"table `{name}`"
        try:
            yield
        except (OSError, RuntimeError, ValueError) as exc:
            found = unavailable(exc, what, self.uri, action, self._secrets)
            if found is None or found is exc:
                raise
            if found.problem == "unreadable" and is_object_store(self.uri):
                found = self._bucket_gone(found)
            self.problems.failed(found)
            raise found from exc
        self.problems.succeeded(what, action)
        if action == "written":
            self.problems.written()

    def _bucket_gone(self, found: StoreUnavailable) -> StoreUnavailable:
        """`found` (a file of an object store's table unreadable: Lance says "Not found" for every file of
        a bucket deleted under it, where a write meets S3's NoSuchBucket) as "no-bucket" when a listing of
        the store, the one request made for it, finds no bucket; else `found` as it was."""
        try:
            self.db.list_tables()
        except (OSError, RuntimeError, ValueError) as exc:
            listed = unavailable(exc, found.name, self.uri, found.action, self._secrets)
            if listed is not None and listed.problem == "no-bucket":
                return listed
        return found

    def _mark(self, names: list[str]) -> None:
        """Before deleting rows from the named tables: mark them (`PurgeMarks.mark`) so that, should this
        turn stop before their purge, the next turn (with replicas, the lease's next holder; alone, this
        process's next, or its next start) purges them."""
        if names:
            self._unpurged.update(names)
            self.marks.mark(names)

    def purges_left(self) -> set[str]:
        """The tables whose purge a stopped delete left to do (empty once the next turn has run)."""
        return self.marks.pending() & set(self.tables)

    def _deletes_on_newest(self) -> None:
        """The start of a step that counts and deletes a user's rows (`delete_user`, `delete_feedback_before`), under
        `_lock`: `_fence`, then, with replicas, every table on its newest version. A row another replica committed less
        than `sync_seconds` ago (its refit's users row, feedback it moved in) is not in a stale view: it would be
        neither counted nor deleted, and stay for good."""
        self._fence()
        self.refresh(*self.tables)

    def _fence(self) -> None:
        """Before each destructive maintenance step: with replicas, confirm this process still holds
        the store's lease (raises `LeaseLost` when another took it meanwhile; nothing more is done)."""
        if self.lease is not None:
            self.lease.confirm()

    def _open(self, name: str, schema: pa.Schema, exists: bool):
        """The table `name`: made with `schema` when it does not exist, else opened, checked
        (`_check_made_alike`) and upgraded (`_upgrade`). Raises StoreError (damaged, not ours, another
        encoder's) or StoreUnavailable (an object store's endpoint, keys or bucket)."""
        try:
            if not exists:
                made = schema
                if self._older_mark is not None:  # beside an earlier release: a table it would refuse is not made
                    made = schema.with_metadata({**schema.metadata, b"schema_version": self._older_mark.encode()})
                try:
                    return self.db.create_table(name, schema=made)
                except ValueError:  # "already exists": another process (a replica started with this one) made it
                    if name not in self.db.list_tables().tables:
                        raise
                    exists = True  # checked and upgraded as any existing table, below
            table = self.db.open_table(name)
            found = table.schema.metadata or {}
        except (RuntimeError, OSError, ValueError) as exc:  # lance's errors for a manifest cut short, a file missing, ...
            if is_object_store(self.uri) and object_store_problem(str(exc)) is not None:  # its endpoint, keys or bucket
                raise unavailable(exc, f"table `{name}`", self.uri, "opened" if exists else "created", self._secrets) from None
            if not exists:
                raise
            raise StoreError(f"table `{name}` at {self.uri} cannot be opened (damaged or unreadable: {exc}); "
                             "restore the folder from a backup, or use another data folder") from None
        self._check_made_alike(name, schema, found)
        return self._upgrade_retrying(name, schema, table)

    def _check_made_alike(self, name: str, schema: pa.Schema, found: dict[bytes, bytes]) -> None:
        """Raise StoreError unless the table `name`, whose schema metadata is `found`, is one of ours
        (its schema_version this release's or an earlier one's) made with this store's encoder
        (encoder_id and dim as in `schema`'s metadata). A table made under the encoder id '' (by an earlier release,
        which refuses it) is taken as this store's encoder's: `_upgrade` records it there."""
        refuse_newer(name, self.uri, found)
        for key, want in schema.metadata.items():
            have = found.get(key, b"").decode()
            if have == want.decode() or key == b"schema_version" and older_schema(have) or _made_without_encoder(key, found):
                continue
            if key == b"schema_version":  # none at all, or one no release writes: not a table of ours
                raise StoreError(f"table `{name}` at {self.uri} has schema_version={have or 'missing'}, this release "
                                 f"writes {want.decode()}: not a pluralign table; use another data folder")
            field = key.decode()  # encoder_id or dim: vectors of another encoder
            raise StoreError(
                f"table `{name}` at {self.uri} was made with {field}={have or 'missing'}, and is opened with "
                f"{field}={want.decode()} (Store's `{field}`; the service's from its `encoder` setting): open it with "
                "the encoder that made it, or use another data folder"
            )

    def _upgrade_retrying(self, name: str, schema: pa.Schema, table):
        """`_upgrade`, looking at the table again when its commit raced another process's; StoreError
        after UPGRADE_ATTEMPTS such races, other storage errors as they came."""
        for attempt in range(UPGRADE_ATTEMPTS):
            try:
                return self._upgrade(name, schema, table)
            except (OSError, RuntimeError) as exc:
                # Lance refuses a commit that raced another one on the table ("Incompatible transaction",
                # "Retryable commit conflict"): replicas started together each upgrade it at the same
                # moment. The table as the winner left it is looked at again (its columns or mark may be in)
                if not _commit_conflict(exc):  # a full or read-only disk, ...: as it came
                    raise
                if attempt == UPGRADE_ATTEMPTS - 1:
                    raise StoreError(f"table `{name}` at {self.uri} could not be upgraded to this release's columns "
                                     f"and schema_version (another process kept committing to it: {exc})") from None
                table = self.db.open_table(name)
                # what the winner recorded: its encoder's id where the table was made under '' (`_made_without_encoder`),
                # another encoder's than ours when it raced us, is refused as any other, not written over
                self._check_made_alike(name, schema, table.schema.metadata or {})
        raise AssertionError("unreachable")

    def _upgrade(self, name: str, schema: pa.Schema, table):
        """Add the columns this release adds to a table an earlier release wrote, then its mark (with
        `finish_purges`). A process that only reads commits nothing to it: that release may be serving
        it, and a commit of ours could clash with its writes. It keeps the earlier mark (`_older_mark`)
        and the table as it is: the columns it lacks read as null (`_present`)."""
        found = table.schema.metadata or {}
        missing = added_columns(schema, table.schema)
        mark = schema.metadata[b"schema_version"]
        if found.get(b"schema_version") != mark and not self._marks:
            self._older_mark = found[b"schema_version"].decode()
            self._older[name] = {f.name: f for f in missing}
            return table
        if missing:
            table.add_columns(missing)
        marks = {key.decode(): want.decode() for key, want in schema.metadata.items()  # encoder_id: where it was ''
                 if key in (b"schema_version", b"encoder_id") and found.get(key) != want}  # (`_check_made_alike`)
        if marks and self._marks:
            # an earlier release's table: its columns are in place (above), so the mark goes last, in
            # one commit; a start stopped before it redoes only this. Releases before this version
            # refuse a marked table at start (their check above wants their own mark).
            table.to_lance().update_schema_metadata(marks)
            table = self.db.open_table(name)
        return table

    def _refuse_older(self, *names: str) -> None:
        """Before a write or a delete: refuse it on a table an earlier release wrote and this process
        only reads (`_upgrade`), naming it and what to do."""
        for name in names:
            if name in self._older:
                raise StoreError(
                    f"table `{name}` at {self.uri} has schema_version={self._older_mark}, an earlier release's, and this "
                    "process only reads it (finish_purges=False): nothing is written to it; start this release's "
                    "`pluralign serve` on the folder first (it upgrades the tables), or write through the release serving it"
                )

    def _present(self, name: str, columns: list[str]) -> list[str]:
        """Of `columns`, those the table holds: all but this release's added ones in an earlier
        release's table that this process only reads (`_upgrade`)."""
        absent = self._older.get(name, {})
        return [c for c in columns if c not in absent]

    def _with_absent(self, name: str, rows: pa.Table) -> pa.Table:
        """`rows` of the table `name` with the columns it lacks (`_present`) added, null."""
        for field in self._older.get(name, {}).values():
            rows = rows.append_column(field, pa.nulls(rows.num_rows, field.type))
        return rows

    @property
    def preferences(self):
        return self.tables["preferences"]

    @property
    def interactions(self):
        return self.tables["interactions"]

    @property
    def users(self):
        return self.tables["users"]

    # ---- writes -----------------------------------------------------------------------------

    @_uses("preferences", "written")
    def add_preferences(
        self, rows: list[StoredPreference], prompt_vec: np.ndarray, chosen_vec: np.ndarray, rejected_vec: np.ndarray
    ) -> int:
        """Append rows with their (N, dim) vectors (numpy arrays, lists or CPU tensors of numbers) in
        one committed version; returns how many rows were new (stored now).

        A `pref_id` names one preference of its user (tenant, user_id): a row the user's rows already
        hold under its id with the same content (`SAME_ROW_FIELDS`: a replayed import, a retried
        feedback; `received_at` aside) is not stored again, nor a row repeated within `rows` (of its
        copies, the latest-received is stored); a held one received since the held row moves that row's
        `received_at` on (`received_again`, after the append). Calls adding one id at once are ordered:
        the second finds the first's row stored. The check looks in the users' cached histories, else
        reads these ids among their users' rows (`held_preferences`): on a 50,000-row store one new
        row's add took p50 ~5 ms with the history cached, ~12-18 ms without (was 3-6 ms), a 2,048-row
        batch of 1,000 users ~0.2-0.3 s (benchmarks/add_known_ids.py).

        Raises PrefIdConflict (a StoreError) naming the row, its `pref_id` and the first field that
        differs when a row's id is held (or given twice in `rows`) with other content; StoreError
        naming the vector column that is not (N, dim) numbers; RowRefused (a StoreError: the row's own
        content) naming the row whose owner is blank, whose `created_at` or `received_at` is not a finite
        time, whose vector holds NaN or inf, or which Arrow cannot hold in the table's columns. Nothing is
        written when it raises."""
        if not rows:
            return 0
        for i, r in enumerate(rows):
            if (refused := _row_refused(i, r)) is not None:
                raise refused
        vectors = self._checked_vectors(len(rows), prompt_vec=prompt_vec, chosen_vec=chosen_vec, rejected_vec=rejected_vec)
        columns = self._row_columns(rows)  # before any read or write: RowRefused for a row Arrow cannot hold
        first = self._first_of_each(rows)
        with self._adding([(r.tenant, r.user_id, r.pref_id) for r in (rows[i] for i in first)]):
            new, _, since = self._held_apart(rows, first)
            if new:
                self._append_preferences(columns.take(new), {name: array[new] for name, array in vectors.items()})
        later: dict[tuple[str, str], list[str]] = {}  # held with the same content, received again since
        for i in since:
            later.setdefault((rows[i].tenant, rows[i].user_id), []).append(rows[i].pref_id)
        for (tenant, user_id), ids in later.items():  # a DELETE begun before the copy came keeps the row
            self.received_again(tenant, user_id, ids)
        return len(new)

    def refused_rows(self, rows: list[StoredPreference]) -> dict[int, RowRefused]:
        """The rows of `rows` that `add_preferences` refuses for their own content, each looked at on its own (their
        vectors aside), by position: {i: RowRefused naming row i}; {} for none. No read or write: the same answer on
        every try, whatever the store's state (what the feedback mover sets aside of a record, `Ingestor._set_aside`)."""
        refused = {i: problem for i, r in enumerate(rows) if (problem := _row_refused(i, r)) is not None}
        rest = [i for i in range(len(rows)) if i not in refused]
        try:
            self._row_columns([rows[i] for i in rest])
            return refused
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            pass
        for i in rest:  # one at a time only when they fail together
            try:
                self._row_columns([rows[i]])
            except RowRefused as exc:
                refused[i] = RowRefused(f"row {i} (pref_id {rows[i].pref_id!r}) cannot be stored: {str(exc).split(': ', 1)[-1]}",
                                        i, exc.field)
            except (pa.ArrowException, ValueError, TypeError, OverflowError):
                continue  # not this row's own (it fails with others only)
        return refused

    _ROW_COLUMNS = ("tenant", "user_id", "pref_id", "prompt", "chosen", "rejected", "tie", "margin", "kind", "source", "created_at",
                    "received_at", "attributes", "trl")

    def _row_columns(self, rows: list[StoredPreference]) -> pa.Table:
        """`rows`' columns but their vectors, as the preferences table holds them. Raises RowRefused naming the first
        row that Arrow cannot hold on its own (looked for one row at a time only when the whole call fails), and the
        call's error itself where each row alone converts (not a row's fault)."""
        schema = pa.schema([self.schemas["preferences"].field(name) for name in self._ROW_COLUMNS])

        def converted(part: list[StoredPreference]) -> pa.Table:
            columns = {name: [getattr(r, name) for r in part] for name in self._ROW_COLUMNS[:-2]}
            columns["attributes"] = [json.dumps(r.attributes, sort_keys=True) for r in part]
            columns["trl"] = [None if r.trl is None else _TRL_ENCODER.encode(r.trl).decode() for r in part]
            return pa.table(columns, schema=schema)

        try:
            return converted(rows)
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            for i, r in enumerate(rows):
                try:
                    converted([r])
                except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                    raise RowRefused(f"row {i} (pref_id {r.pref_id!r}) cannot be stored: {type(exc).__name__}: {exc}", i,
                                     "row") from None
            raise

    def _append_preferences(self, kept: pa.Table, vectors: dict[str, np.ndarray]) -> None:
        """`add_preferences`' commit of its new rows (`_row_columns`) with their vectors (by column name, in `kept`'s
        order)."""
        columns = {name: kept.column(name) for name in self._ROW_COLUMNS}
        for name, array in vectors.items():
            columns[name] = _vectors(array, self.dim)
        columns["schema_version"] = [SCHEMA_VERSION] * kept.num_rows
        self._append("preferences", pa.table(columns, schema=self.schemas["preferences"]))

    def _checked_vectors(self, n: int, **arrays) -> dict[str, np.ndarray]:
        """`arrays` (by column name) as (n, dim) float32 arrays; StoreError naming the column that is not (n, dim)
        numbers or holds NaN or inf."""
        vectors = {}
        for name, array in arrays.items():
            try:  # lists and torch tensors (on the CPU) too
                array = np.asarray(array, np.float32)
            except (TypeError, ValueError, RuntimeError):
                raise StoreError(f"`{name}` is not an (N, {self.dim}) array of numbers") from None
            if array.shape != (n, self.dim):
                raise StoreError(f"`{name}` has shape {array.shape}, expected ({n}, {self.dim})")
            bad = ~np.isfinite(array).all(-1)
            if bad.any():  # the vector of that row's text: the same on every try
                raise RowRefused(f"`{name}` row {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)", int(np.flatnonzero(bad)[0]), name)
            vectors[name] = array
        return vectors

    def new_and_held(self, rows: list[StoredPreference], pending: Iterable[StoredPreference] = (),
                     untimed: frozenset[str] = frozenset()) -> tuple[list[int], list[int]]:
        """(new, held): positions in `rows` of one row of each (tenant, user_id, pref_id) (the first, or of
        copies received at different times the latest-received: `_first_of_each`), split into those no row
        holds yet and those held with the same content (`SAME_ROW_FIELDS`), either `pending` (rows
        acknowledged and not yet in the table: a feedback log's, looked at first) or in the table
        (`held_preferences`). `untimed`: ids whose `created_at` is not compared. What `add_preferences`
        checks, and an import asks before it logs its rows.

        Raises PrefIdConflict for a row whose id a held row, or an earlier row of `rows`, has with other
        content (its `earlier` says which)."""
        new, held, _ = self._held_apart(rows, self._first_of_each(rows, untimed), pending, untimed)
        return new, held

    def _held_apart(self, rows: list[StoredPreference], first: list[int], pending: Iterable[StoredPreference] = (),
                    untimed: frozenset[str] = frozenset()) -> tuple[list[int], list[int], list[int]]:
        """`new_and_held` of the positions `first` in `rows`, and third the positions of the held ones received
        later than the row holding them (a copy logged again by an import, `service.users.services.received_again`:
        `add_preferences` moves the stored row's `received_at` on). Run under `_adding` of their keys when adding."""
        keys = {(rows[i].tenant, rows[i].user_id, rows[i].pref_id) for i in first}
        held = {key: r for r in pending if (key := (r.tenant, r.user_id, r.pref_id)) in keys}
        held.update(self.held_preferences([rows[i] for i in first if (rows[i].tenant, rows[i].user_id, rows[i].pref_id) not in held]))
        new, same, since = [], [], []
        for i in first:
            r = rows[i]
            stored = held.get((r.tenant, r.user_id, r.pref_id))
            if stored is None:
                new.append(i)
            elif (field := _differs(stored, r, untimed)) is not None:
                raise PrefIdConflict(f"row {i}: `pref_id` {r.pref_id!r} of user {r.user_id!r} is already stored with another "
                                     f"`{field}` (a pref_id names one preference: send other rows under new ids)", r.pref_id, i, field)
            else:
                same.append(i)
                if r.received() > stored.received():
                    since.append(i)
        return new, same, since

    @staticmethod
    def _first_of_each(rows: list[StoredPreference], untimed: frozenset[str] = frozenset()) -> list[int]:
        """The positions of one row of each (tenant, user_id, pref_id) in `rows`, in the order of their first:
        the first, or of copies received at different times the latest-received (the mover keeps the latest
        time of one row's copies). A later row under the same key is the same preference (left out) or a
        PrefIdConflict."""
        first: dict[tuple[str, str, str], int] = {}
        for i, r in enumerate(rows):
            j = first.setdefault((r.tenant, r.user_id, r.pref_id), i)
            if j != i and (field := _differs(rows[j], r, untimed)) is not None:
                raise PrefIdConflict(f"rows {j} and {i} share `pref_id` {r.pref_id!r} of user {r.user_id!r} but differ in "
                                     f"`{field}` (a pref_id names one preference)", r.pref_id, i, field, earlier=j)
            if j != i and r.received() > rows[j].received():  # the latest copy's time: received again since
                first[(r.tenant, r.user_id, r.pref_id)] = i
        return list(first.values())

    @contextlib.contextmanager
    def _adding(self, keys: list[tuple[str, str, str]]) -> Iterator[None]:
        """Held from a call's check of its ids to their commit: a call adding one of `keys` already being
        added by another waits for that one, then finds its row stored. Calls of other ids go on at once
        (and share a commit, `GroupCommit`)."""
        while True:
            with self._adding_lock:
                busy = [self._in_flight[k] for k in keys if k in self._in_flight]
                if not busy:
                    done = threading.Event()
                    for k in keys:
                        self._in_flight[k] = done
                    break
            for event in busy:
                event.wait()
        try:
            yield
        finally:
            with self._adding_lock:
                for k in keys:
                    del self._in_flight[k]
            done.set()

    @_uses("preferences", "read")
    def held_preferences(self, rows: list[StoredPreference]) -> dict[tuple[str, str, str], StoredPreference]:
        """The stored rows under the (tenant, user_id, pref_id) of `rows`, by that key. A user whose history
        is cached (`_cached`: what reads of them use, kept up to date by every write through this Store) is
        looked up in it; the others in one read of those ids among their users' rows (BITMAP index on user_id),
        text and labels only: each write since the last compaction is one more small unindexed file that
        read opens (~0.3 ms each)."""
        ids_of: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            ids_of.setdefault((r.tenant, r.user_id), []).append(r.pref_id)
        found: list[tuple[str, str, dict]] = []
        unread = {}
        for (tenant, user_id), ids in ids_of.items():
            history = self._cached(tenant, user_id)
            if history is None:
                unread[(tenant, user_id)] = ids
                continue
            meta = history.meta
            hits = meta.filter(pc.is_in(meta.column("pref_id"), value_set=pa.array(ids, pa.string())))
            found += [(tenant, user_id, row) for row in hits.to_pylist()]
        if unread:
            found += self._read(lambda: self._read_held(unread))
        return {(t, u, row["pref_id"]): self._preference(row, t, u) for t, u, row in found}

    def _read_held(self, ids_of: dict[tuple[str, str], list[str]]) -> list[tuple[str, str, dict]]:
        """`held_preferences`' read of the table. A few ids (a feedback): one query of them among their users'
        rows. More (a batch of many users, an import): the users' keys only, matched in Arrow, then the rows of
        the ids found: an `owner AND pref_id IN` clause per user took 1-2 s for 2,048 rows of 1,000 users (a
        filter of that size is slow to plan), the keys ~70 ms."""
        users = lambda owners: f"tenant IN ({', '.join(quote(t) for t in {t for t, _ in owners})}) AND user_id IN ({', '.join(quote(u) for u in {u for _, u in owners})})"
        wanted = {(t, u, i) for (t, u), ids in ids_of.items() for i in ids}
        if len(wanted) > FEW_IDS:
            keys = self.preferences.search().where(users(ids_of)).select(["tenant", "user_id", "pref_id"]).limit(None).to_arrow()
            joined = pc.binary_join_element_wise(keys.column("tenant"), keys.column("user_id"), keys.column("pref_id"), "\x00")
            asked = pa.array(["\x00".join(key) for key in wanted], pa.string())
            wanted = {tuple(key.split("\x00")) for key in pc.filter(asked, pc.is_in(asked, value_set=joined)).to_pylist()}
            if not wanted:
                return []
        columns = self._present("preferences", ["tenant", "user_id", "pref_id", "kind", "received_at", *SAME_ROW_FIELDS])
        where = f"{users({(t, u) for t, u, _ in wanted})} AND pref_id IN ({', '.join(quote(i) for i in {i for _, _, i in wanted})})"
        rows = self.preferences.search().where(where).select(columns).limit(None).to_arrow().to_pylist()
        return [(r["tenant"], r["user_id"], r) for r in rows if (r["tenant"], r["user_id"], r["pref_id"]) in wanted]

    @_uses("preferences", "read")
    def check_newest(self, rows: list[StoredPreference], untimed: frozenset[str] = frozenset()) -> None:
        """Raises PrefIdConflict (its `index` the row's position in `rows`) for a row whose (tenant, user_id,
        pref_id) the table's newest version holds with other content (`SAME_ROW_FIELDS`; `untimed`: ids whose
        `created_at` is not compared). Read from the table, not the users' cached histories, which with replicas may be
        `sync_seconds` old: an import that claimed an id afresh asks it (`pluralign.store.claims`: another replica
        removes its claim once that id's row is committed, so a claim put after that finds nothing to refuse)."""
        if not rows:
            return
        held = {(h.tenant, h.user_id, h.pref_id): h for h in self._newest_rows(rows)}
        for i, r in enumerate(rows):
            stored = held.get((r.tenant, r.user_id, r.pref_id))
            if stored is not None and (field := _differs(stored, r, untimed)) is not None:
                raise PrefIdConflict(f"row {i}: `pref_id` {r.pref_id!r} of user {r.user_id!r} is already stored with another "
                                     f"`{field}` (a pref_id names one preference: send other rows under new ids)", r.pref_id, i, field)

    @_uses("preferences", "written")
    def received_again(self, tenant: str, user_id: str, pref_ids: list[str]) -> int:
        """The user's rows under `pref_ids` count as received now: their `received_at` is set to the
        current time (unix seconds) in one commit. For rows sent again with the same content (an export
        imported again), which `add_preferences` does not store twice: a DELETE of the user finished
        later, on any replica, tells what came after it began by `received_at` (`received_before`), and
        must keep them. Returns how many rows were updated (fewer than the distinct ids when some were
        not held, or were deleted meanwhile). The user's cached history is dropped (its count of rows,
        which other processes check theirs by, does not change: `received_since` reads the table).
        A commit that met another's on the table (a compaction's rewrite) is made again on the newest
        version (`PURGE_ATTEMPTS`); raises the last error when every attempt failed."""
        ids = list(dict.fromkeys(pref_ids))
        if not ids:
            return 0
        where = f"{owner_filter(tenant, user_id)} AND pref_id IN ({', '.join(quote(i) for i in ids)})"
        key = (tenant, user_id)
        # under the write lock, as appends and a DELETE's row step take it: no delete of the user falls between
        # the update and the cache's drop, nor a load of their history lands with the rows as they were
        with self._lock, self.histories.writing([key]):
            updated = self._committed_to_preferences(
                "a received_at update",
                lambda: self.preferences.update(where=where, values={"received_at": time.time()}).rows_updated)
            self.histories.invalidate([key])
            if updated:
                self._after_write("preferences")
        return updated

    @_uses("preferences", "read")
    def received_since(self, tenant: str, user_id: str, since: float) -> bool:
        """Whether the table holds a row of the user received at or after `since` (unix seconds;
        `StoredPreference.received`). Read from the table, not the cached history: another process's
        `received_again` leaves the user's row count as it was, so a cached history would not show it."""
        t = repr(float(since))  # `received_before`'s complement (a NOT of it would pass over a null `received_at`)
        later = f"(received_at >= {t} OR (received_at IS NULL AND NOT {made_before(since)}))"  # created_at is never null
        return self.preferences.count_rows(f"{owner_filter(tenant, user_id)} AND {later}") > 0

    @_uses("preferences", "read")
    def holds_received_before(self, tenant: str, user_id: str, before: float) -> bool:
        """Whether the table holds a row of the user received before `before` (unix seconds; `StoredPreference.received`,
        as `received_before` filters: what a DELETE's steps delete): one count, no row read. What a DELETE finished for
        a user who came back asks inside the store's maintenance turn (`service.users.services._stored_before`): a count,
        not a read of every row of theirs there (`preferences_for`; 100,000 rows: benchmarks/stored_before.py)."""
        return self.preferences.count_rows(f"{owner_filter(tenant, user_id)} AND {received_before(before)}") > 0

    @_uses("preferences", "read")
    def received_before_left_at(self, tenant: str, user_id: str, before: float, since: float | None = None) -> float | None:
        """When the user's preference rows received before `before` (unix seconds; `received_before`) left the table,
        as the versions it still keeps tell (LanceDB's `list_versions`): the commit time (unix seconds, this machine's
        clock, as Lance stamps it) of the first of the kept versions from which on none holds such a row. None when
        the newest version holds one. An upper bound of when they went: a purge that removed older versions leaves
        the first kept one, committed after. What was made from the table after it holds none of those rows; what
        was made before may (a DELETE finished from the journal, `service.users.services.forget_before`: the DELETE's
        beginning in its place would leave what another replica made while it waited for its store's step). The versions are looked at by bisection, each on a handle of its own (the shared one stays
        on its version); a version that cannot be read (files removed under the look, a column it lacks) counts as
        holding such a row. `since` (unix seconds): only the versions committed at or after it are looked at (such rows
        were seen in the table then, and may have left and come back before: the bisection looks for one run of
        versions holding them, then one holding none)."""
        table = self.db.open_table("preferences")
        versions = sorted(table.list_versions(), key=lambda v: v["version"])
        if since is not None:
            versions = [v for v in versions if _stamp_seconds(v["timestamp"]) >= since]
        where = f"{owner_filter(tenant, user_id)} AND {received_before(before)}"

        def holds(i: int) -> bool:
            try:
                table.checkout(versions[i]["version"])
                return table.count_rows(where) > 0
            except (OSError, RuntimeError, ValueError):
                return True

        if not versions or holds(len(versions) - 1):
            return None
        low, high = 0, len(versions) - 1  # versions[high] holds none; the first of the run that holds none
        while low < high:
            mid = (low + high) // 2
            if holds(mid):
                low = mid + 1
            else:
                high = mid
        return _stamp_seconds(versions[low]["timestamp"])

    @_uses("interactions", "written")
    def add_interaction(self, item: Interaction) -> None:
        """Append one served response. Raises StoreError naming `tenant` or `user_id` when one names no one."""
        _check_owner(item.tenant, item.user_id)
        row = msgspec.to_builtins(item)
        row["messages"] = json.dumps(item.messages)
        row["schema_version"] = SCHEMA_VERSION
        self._append("interactions", pa.Table.from_pylist([row], schema=self.schemas["interactions"]))

    @_uses("users", "written")
    def put_user(self, user: UserRecord) -> None:
        """Insert or replace the (tenant, user_id) row; a row whose `updated_at` is older than the
        stored one's is dropped (writes are ordered by it, not by arrival)."""
        self._upserts.submit(self._user_rows(user))

    def _user_rows(self, user: UserRecord) -> pa.Table:
        _check_owner(user.tenant, user.user_id)  # put_user, put_user_if
        row = msgspec.to_builtins(user, builtin_types=(bytes,))
        row["attributes"] = json.dumps(user.attributes, sort_keys=True)
        row["schema_version"] = SCHEMA_VERSION
        return pa.Table.from_pylist([row], schema=self.schemas["users"])

    @_uses("users", "written")
    def put_user_if(self, user: UserRecord, read: UserRecord | None) -> bool:
        """`put_user` for a row drawn from `read`, the user's row as the caller read it (None: they had none): written
        only where the table's newest version still holds that row (the same `updated_at`; None: still no row of
        theirs), in one conditional commit. A row committed since (a stated preference PATCHed through another replica,
        or stamped before `user` and committed after the read) is never replaced by one that does not carry it, and a
        row another process's DELETE took is not put back. Not for two inserts at once (`read` None in two processes):
        Lance rebases one onto the other without checking the key, both are written, and `get_user` takes the newer
        (measured: 10 of 10 tries with two Stores on one folder); an update over a row read is
        checked again when its commit meets another (1 of 2 written, 15 of 15 tries). Returns whether it was
        written; when not, the caller reads the row again and draws its row from that one
        (`service.users.services._write_over_read`). Raises StoreUnavailable as `put_user` does."""
        data = self._user_rows(user)
        written: list[int] = []

        def merge() -> None:
            merge = self.users.merge_insert(["tenant", "user_id"])
            if read is None:
                merge = merge.when_not_matched_insert_all()
            else:  # float repr round-trips: the stored value exactly (as `withdraw_user`)
                merge = merge.when_matched_update_all(where=f"target.updated_at = {float(read.updated_at)!r}")
            result = merge.execute(data)
            written.append(result.num_inserted_rows + result.num_updated_rows)

        with self._lock:
            self._commit("users", self.users, merge)
            self._after_write("users")
        return bool(written[-1])

    @_uses("stated_changes", "written")
    def add_stated_changes(self, tenant: str, user_id: str, changes: list[dict]) -> None:
        """Append changes of the user's stated preferences (dicts with `version`, `at`, `feature`,
        `direction`) in one committed version. Raises StoreError naming `tenant` or `user_id` when one names no one."""
        _check_owner(tenant, user_id)
        if not changes:
            return
        rows = [{"tenant": tenant, "user_id": user_id, "version": c["version"], "at": c["at"], "feature": c["feature"],
                 "direction": c["direction"], "schema_version": SCHEMA_VERSION} for c in changes]
        self._append("stated_changes", pa.Table.from_pylist(rows, schema=self.schemas["stated_changes"]))

    @_uses("deletions", "written")
    def record_deletion(self, *records: Deletion) -> None:
        """Append users' DELETEs to the deletion record every process on this store reads (one commit for all)."""
        rows = [{**msgspec.to_builtins(d), "schema_version": SCHEMA_VERSION} for d in records]
        if not rows:
            return
        with self._lock:
            self._commit_rows(deletions.TABLE, self.deletions, pa.Table.from_pylist(rows, schema=self.deletions.schema))
            self._new_deletions += len(rows)

    @_uses("retractions", "written")
    def record_retraction(self, tenant: str, user_id: str, pref_id: str, retracted_at: float, replica: int,
                          pending: bool = False) -> None:
        """Note, for every process on this store, that the user's row `pref_id` was taken back (a retraction begun at
        `retracted_at`, unix seconds): their replays and moves of it are dropped (`retracted`). `pending`: the row was not
        in the table (it may still wait in another replica's feedback log); the tenant's pending records older than
        `retractions.PENDING_KEEP_S` go first, and one past `retractions.PENDING_PER_USER` of the user's younger ones or
        `PENDING_PER_TENANT` of the tenant's raises `retractions.TooManyPending`, nothing written, unless the key has one
        already: then the new record replaces the key's older pending ones (the same retraction sent again), and counts
        toward those bounds only when one of them did (sent again once the row came, `pending_met`, it is marked so too:
        review late56c). Not `pending` (the row found stored, and taken back): the key's pending records from before it
        no longer count toward those bounds (`pending_met`). Raises StoreUnavailable."""
        row = retractions.retraction_row(tenant, user_id, pref_id, retracted_at, replica, pending)
        with self._lock:
            again = self._room_for_pending(tenant, row["user_hash"], row["pref_hash"], retracted_at) if pending else None
            if again == retractions.ARRIVED:  # every record of the key is of a row that came: so is this one's
                row["retraction_id"] = retractions.ARRIVED + row["retraction_id"].removeprefix(retractions.PENDING)
            self._commit_rows(retractions.TABLE, self.retractions, pa.Table.from_pylist([row], schema=self.retractions.schema))
            self._retraction_writes += 1
            # after the new record (a crash or failure between the two leaves one more, or one still counted, never none)
            try:
                if again:  # it covers theirs
                    self.retractions.delete(f"tenant = {quote(tenant)} AND pref_hash = {quote(row['pref_hash'])} AND retraction_id "
                                            f"LIKE '{retractions.PENDING}%' AND retraction_id != {quote(row['retraction_id'])} "
                                            f"AND retracted_at <= {float(retracted_at)!r}")
                elif not pending:  # a pending one recorded before the row was found stored (its row came)
                    self.pending_met([(tenant, user_id, pref_id)], retracted_at)
            except Exception as exc:  # noqa: BLE001 (recorded: the older ones go at the next copy, or past their keep)
                log.warning("a retraction was recorded; the row's older pending records stay as they were for now: %s", exc)

    @_uses("retractions", "written")
    def pending_met(self, keys: Iterable[tuple[str, str, str]], before: float = math.inf) -> int:
        """The pending records (`record_retraction`) of the rows `keys` (tenant, user_id, pref_id), begun at or before
        `before` (unix seconds), whose row arrived: dropped by a mover before it was stored (`pluralign.store.ingest`),
        or found stored and taken back. Marked `retractions.ARRIVED` in one commit (none such: one read, no commit), they
        count toward no bound on pending records (`_room_for_pending`) and stay as they were otherwise: read by
        `retracted_before` (a copy of the row received before them, a replay's, is still dropped), the key's answer
        still pending (`retraction_recorded`), deleted past PENDING_KEEP_S. Returns how many were marked. Raises
        StoreUnavailable."""
        hashes = sorted({retractions.pref_hash(*key) for key in keys})
        if not hashes:
            return 0
        where = (f"pref_hash IN ({', '.join(quote(h) for h in hashes)}) AND retraction_id LIKE '{retractions.PENDING}%' "
                 f"AND retraction_id NOT LIKE '{retractions.ARRIVED}%'")
        if math.isfinite(before):
            where += f" AND retracted_at <= {float(before)!r}"
        marked = [0]

        def mark() -> None:
            marked[0] = self.retractions.update(where=where, values_sql={
                "retraction_id": f"replace(retraction_id, '{retractions.PENDING}', '{retractions.ARRIVED}')"}).rows_updated

        with self._lock:
            self._retractions_latest()
            if self.retractions.count_rows(where):
                self._commit(retractions.TABLE, self.retractions, mark)
                self._retraction_writes += 1
        return marked[0]

    def _room_for_pending(self, tenant: str, hashed_user: str, hashed_pref: str, now: float) -> str | None:
        """The tenant's pending records older than PENDING_KEEP_S deleted, then TooManyPending when the user (by
        `hashed_user`) or the tenant holds their most younger ones whose row may still come (not `retractions.ARRIVED`:
        `pending_met`), unless one of the tenant's pending records is of the same row (`hashed_pref`): then the
        retraction is sent again (a record of its own replaces those, `record_retraction`: the newest retraction's time is
        the one a row is held against, `retracted_before`), and the start of its record's id is returned:
        `retractions.ARRIVED` when every one of those is so marked (its row came: sent again, it counts toward no bound
        either), else `retractions.PENDING`. None: not sent again. One scan of the tenant's pending records."""
        self._retractions_latest()
        cutoff = float(now - retractions.PENDING_KEEP_S)
        mine = f"tenant = {quote(tenant)} AND retraction_id LIKE '{retractions.PENDING}%'"
        read = self.retractions.search().where(mine).select(["retraction_id", "user_hash", "pref_hash", "retracted_at"])
        read = read.limit(None).to_arrow()
        at = read.column("retracted_at")
        if len(read) and pc.min(at).as_py() < cutoff:
            self.retractions.delete(f"{mine} AND retracted_at < {cutoff!r}")
            read = read.filter(pc.greater_equal(at, cutoff))
        same = read.filter(pc.equal(read.column("pref_hash"), hashed_pref))
        if len(same):
            came = pc.all(pc.starts_with(same.column("retraction_id"), retractions.ARRIVED)).as_py()
            return retractions.ARRIVED if came else retractions.PENDING
        read = read.filter(pc.invert(pc.starts_with(read.column("retraction_id"), retractions.ARRIVED)))  # their row came
        theirs = read.filter(pc.equal(read.column("user_hash"), hashed_user))
        for whose, held, limit in (("user", theirs, retractions.PENDING_PER_USER), ("tenant", read, retractions.PENDING_PER_TENANT)):
            if len(held) >= limit:
                raise retractions.TooManyPending(whose, limit, max(1.0, pc.min(held.column("retracted_at")).as_py() - cutoff))
        return None

    @_uses("retractions", "read")
    def retraction_recorded(self, tenant: str, user_id: str, pref_id: str) -> str | None:
        """What the store records of a retraction of the user's row `pref_id`: "done" (taken back from the table),
        "pending" (recorded before the row was in the table: `record_retraction`), or None (none recorded)."""
        self._retractions_latest()
        if not self.retractions.count_rows():
            return None
        where = f"tenant = {quote(tenant)} AND pref_hash = {quote(retractions.pref_hash(tenant, user_id, pref_id))}"
        ids = self.retractions.search().where(where).select(["retraction_id"]).limit(None).to_arrow().column("retraction_id").to_pylist()
        if not ids:
            return None
        return "pending" if all(i.startswith(retractions.PENDING) for i in ids) else "done"

    @_uses("retractions", "read")
    def retracted(self, rows: list[StoredPreference]) -> set[tuple[str, str, str]]:
        """The keys (tenant, user_id, pref_id) of `rows` with a row taken back after it was received (`retracted_before`).
        A row received after its retraction (the same id sent again) does not count; another row of the same key
        received before it does."""
        before = self.retracted_before(rows)
        return {key for r in rows if (key := (r.tenant, r.user_id, r.pref_id)) in before and r.received() < before[key]}

    @_uses("retractions", "read")
    def retracted_before(self, rows: list[StoredPreference]) -> dict[tuple[str, str, str], float]:
        """key (tenant, user_id, pref_id) -> a time (unix seconds), for the keys of `rows` with a retraction recorded by
        `record_retraction`: a row of that key received (`received()`) before that time was taken back, and a replay of
        it from a feedback log must not move it in again; one received at or after it is the user's word since (the
        same id sent again). The time is the newest retraction's beginning plus `sync_seconds` (the skew the replicas'
        clocks may have); a key whose every retraction began before the earliest of `rows` arrived (less that skew) is
        left out: it takes none of them back. Per key, not per row: a log may hold a taken-back record and the same id sent again (looked
        up by one of them, the acknowledged one sent again could be dropped at the replay while the taken-back one was
        moved in)."""
        if not rows:
            return {}
        self._retractions_latest()
        if not self.retractions.count_rows():  # none recorded (one process alone never records any): no hashing
            return {}
        keys = {retractions.pref_hash(r.tenant, r.user_id, r.pref_id): (r.tenant, r.user_id, r.pref_id) for r in rows}
        where = "tenant IN (" + ", ".join(quote(t) for t in sorted({r.tenant for r in rows})) + ")"
        # only records that may take one of `rows` back: begun after the earliest arrival among them less the skew (a
        # mover's batch, just received, reads the few recent ones, not every record the tenant ever made: 0.12 s a move
        # with 200,000 of them)
        earliest = min(r.received() for r in rows) - (self.sync_seconds or 0.0) - 1.0
        if math.isfinite(earliest):
            where += f" AND retracted_at > {earliest!r}"
        # one scan of their tenants' records, matched here (no index on `pref_hash`: a query per thousand hashes would
        # scan the table each time, ~0.8 s at a start replaying 100,000 rows)
        read = self.retractions.search().where(where).select(["pref_hash", "retracted_at"]).limit(None).to_arrow()
        read = read.filter(pc.is_in(read.column("pref_hash"), value_set=pa.array(list(keys), pa.string())))
        found: dict[tuple[str, str, str], float] = {}
        for hashed, began in zip(read.column("pref_hash").to_pylist(), read.column("retracted_at").to_pylist(), strict=True):
            key, at = keys[hashed], began + (self.sync_seconds or 0.0)
            found[key] = max(at, found.get(key, at))
        return found

    @_uses("retractions", "read")
    def retractions_since(self, since: float, other_than: int | None = None) -> dict[str, tuple[str, str]]:
        """retraction_id -> (tenant, user_hash) of the retractions begun at or after `since` (unix seconds), but those
        answered by replica `other_than` (None: every one's). A pending record's id is given as it was written, also once
        marked as its row came (`pending_met`): a reader taking each retraction once by its id (`service.deletions.
        DeletionSweep.drop_retracted`) does not take it again (review late56c: it rewrote the user's log segments again)."""
        self._retractions_latest()
        where = f"retracted_at >= {float(since)!r}" + ("" if other_than is None else f" AND replica != {int(other_than)}")
        rows = self.retractions.search().where(where).select(["retraction_id", "tenant", "user_hash"])
        return {retractions.first_id(r["retraction_id"]): (r["tenant"], r["user_hash"]) for r in rows.limit(None).to_arrow().to_pylist()}

    @_uses("retractions", "written")
    def forget_retractions(self, tenant: str) -> int:
        """Delete every retraction record of `tenant` (its removal's last step; its users' DELETEs took theirs) and
        compact the table, so that no file of its current version holds them. Returns how many went."""
        where = f"tenant = {quote(tenant)}"
        with self._lock:
            self._retractions_latest()
            found = self.retractions.count_rows(where)
            if found:
                self.retractions.delete(where)
                self._retraction_writes += 1
        if found:
            self._compact_retractions()
        return found

    def _retractions_latest(self) -> None:
        """With replicas, the retractions table on its newest version: a record another replica wrote less than
        `sync_seconds` ago is read (and deleted) too; alone, nothing to do."""
        if self.sync_seconds is not None:
            self.retractions.checkout_latest()

    def _compact_retractions(self) -> None:
        """Compact the retractions table, its deleted rows rewritten away: no file of its current version keeps the
        hashes of the records deleted (older versions go at `compact`'s cleanup)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            compact_with_deletions(self.retractions)

    @_uses("deletions", "read")
    def deletions_since(self, since: float) -> list[Deletion]:
        """Deletion records with `deleted_at` at or after `since` (unix seconds), any order. Columns a
        later version adds are passed over (a replica of this version still reads its records)."""
        rows = self.deletions.search().where(f"deleted_at >= {float(since)!r}").limit(None).to_arrow().to_pylist()
        return [msgspec.convert({k: r[k] for k in _DELETION_FIELDS if k in r}, Deletion) for r in rows]

    @_uses("deletions", "read")
    def deletion_reaches(self, user_hash: str, made_at: float) -> bool:
        """Whether a deletion record names `user_hash` whose DELETE reaches what was made at `made_at` (unix seconds): it
        may hold the user's rows from before that DELETE (`Deletion.made`: `made_until`, else `deleted_at`, at or after it)."""
        if not all(c in "0123456789abcdef" for c in user_hash):
            raise ValueError(f"not a user hash: {user_hash!r}")
        t = repr(float(made_at))
        made = f"(made_until >= {t} OR (made_until IS NULL AND deleted_at >= {t}))"
        return self.deletions.count_rows(f"user_hash = '{user_hash}' AND {made}") > 0

    @_uses("deletions", "read")
    def deleted_after(self, user_hash: str, since: float) -> bool:
        """Whether a deletion record names `user_hash` (`deletions.user_hash`) at or after `since`."""
        if not all(c in "0123456789abcdef" for c in user_hash):
            raise ValueError(f"not a user hash: {user_hash!r}")
        return self.deletions.count_rows(f"user_hash = '{user_hash}' AND deleted_at >= {float(since)!r}") > 0

    def _commit_users(self, data: pa.Table) -> None:
        keys = list(zip(data.column("tenant").to_pylist(), data.column("user_id").to_pylist(), strict=True))
        last = {key: i for i, key in enumerate(keys)}  # a batch may update one user twice: keep the newest
        if len(last) < len(keys):
            data = data.take(sorted(last.values()))
        with self._lock:
            # a version check: a row only replaces one it is not older than, so a slower writer (another
            # replica's refit that started first) never silently puts back older weights
            self._commit("users", self.users, lambda: (
                self.users.merge_insert(["tenant", "user_id"])
                .when_matched_update_all(where="target.updated_at <= source.updated_at")
                .when_not_matched_insert_all()
                .execute(data)
            ))  # made twice, the same (a row replaces only one not newer than itself)
            self._after_write("users")

    def _append(self, name: str, data: pa.Table) -> None:
        self._appends[name].submit(data)

    def _commit_append(self, name: str, data: pa.Table) -> None:
        owners = list(zip(data.column("tenant").to_pylist(), data.column("user_id").to_pylist(), strict=True)) if name == "preferences" else []
        # a delete of the user cannot fall between the commit and the cache update, nor a load of their history land
        with self._lock, self.histories.writing(owners):
            made_again = self._commit_rows(name, self.tables[name], data)
            self._after_write(name)
            if made_again:  # the table may hold some of `data` from another writer, which a cached history may hold
                self.appends_made_again[name] += 1
                # too: grown by all of `data` it would hold them twice, a row more than the table, which another
                # replica's new row of the user evens out for `_matches`' count: dropped instead
                self.histories.invalidate(owners)
            elif owners:
                self._grow_histories(data, owners)

    @_uses("preferences", "read")
    def held_pref_ids(self, rows: list[StoredPreference]) -> set[tuple[str, str, str]]:
        """The (tenant, user_id, pref_id) of those of `rows` the table's newest version holds for their user (a
        `pref_id` is each user's own: not the ids any user of `rows` holds, by which an import's `p-1` would be taken
        for stored when another user of the batch held a `p-1`): one look for that version and one read by the users'
        BITMAP index. With replicas the feedback log's mover asks it
        before each move (`pluralign.store.ingest`): a feedback or import sent with `Idempotency-Key` has
        the same ids on every attempt (`service.feedback.services.idempotent_ids`), and a retry that
        reached another replica than the first attempt, while the first still waited in that one's
        log, cannot see it there and is acknowledged again; the copy found stored is not stored again
        (`Store.newest_rows` then tells same content from other). Two replicas moving one id in the same
        instant both commit (Lance appends without a key check): on a store without claims the mover reads
        the ids back after its commit (`held_twice`)."""
        if not rows:
            return set()
        return {(r.tenant, r.user_id, r.pref_id) for r in rows}.intersection(self._newest_keys(rows))

    def _newest_keys(self, rows: list[StoredPreference]) -> list[tuple[str, str, str]]:
        """The (tenant, user_id, pref_id) of each row the table's newest version holds among the users and ids of `rows`
        (a key held twice comes twice; a key of one user's id held by another user of `rows` too, which the callers
        match against their keys): one look for that version and one read of the key columns by the users' BITMAP index.
        What `held_pref_ids` and `held_twice` read (one copy for both)."""
        users = " OR ".join(f"({owner_filter(t, u)})" for t, u in dict.fromkeys((r.tenant, r.user_id) for r in rows))
        ids = ", ".join(quote(i) for i in dict.fromkeys(r.pref_id for r in rows))
        # a copy another replica committed a moment ago: reads may otherwise be `sync_seconds` stale
        self.preferences.checkout_latest()
        held = self.preferences.search().where(f"({users}) AND pref_id IN ({ids})").select(["tenant", "user_id", "pref_id"]).limit(None).to_arrow()
        return list(zip(*(held.column(c).to_pylist() for c in ("tenant", "user_id", "pref_id")), strict=True))

    @_uses("preferences", "read")
    def newest_rows(self, rows: list[StoredPreference]) -> list[StoredPreference]:
        """Every row the table's newest version holds under the (tenant, user_id, pref_id) of `rows`, text and labels
        (no vectors), two rows under one key included (two replicas' movers that committed it at once on a store
        without claims, `pluralign.store.ingest`). Not from the users' cached histories, which with replicas may be
        `sync_seconds` old. One look for the newest version and one read (`_read_held`)."""
        return self._newest_rows(rows) if rows else []

    def _newest_rows(self, rows: list[StoredPreference]) -> list[StoredPreference]:
        """`newest_rows`, what `check_newest` reads too (one copy for both)."""
        ids_of: dict[tuple[str, str], list[str]] = {}
        for r in rows:
            ids_of.setdefault((r.tenant, r.user_id), []).append(r.pref_id)
        self.preferences.checkout_latest()
        return [self._preference(row, t, u) for t, u, row in self._read(lambda: self._read_held(ids_of))]

    @_uses("preferences", "read")
    def held_twice(self, rows: list[StoredPreference]) -> dict[tuple[str, str, str], list[tuple[int, StoredPreference]]]:
        """The (tenant, user_id, pref_id) of `rows` that the table's newest version holds more than one row under, each
        with those rows as (their Lance `_rowid`, the row without vectors): two replicas' movers that committed one id
        at once on a store without claims (`pluralign.store.ingest`). One look for the newest version and one read of
        the keys (as `held_pref_ids`); the rows themselves are read only when a key is held twice."""
        if not rows:
            return {}
        wanted = {(r.tenant, r.user_id, r.pref_id) for r in rows}
        counted = Counter(self._read(lambda: self._newest_keys(rows)))
        doubled = [key for key, n in counted.items() if n > 1 and key in wanted]
        if not doubled:
            return {}
        columns = self._present("preferences", ["pref_id", "kind", "received_at", *SAME_ROW_FIELDS])
        found: dict[tuple[str, str, str], list[tuple[int, StoredPreference]]] = {}
        for t, u, pref_id in doubled:
            where = f"{owner_filter(t, u)} AND pref_id = {quote(pref_id)}"
            held = self._read(lambda where=where: self.preferences.search().where(where).select(columns).with_row_id(True)
                              .limit(None).to_arrow().to_pylist())
            found[(t, u, pref_id)] = [(row.pop("_rowid"), self._preference(row, t, u)) for row in held]
        return found

    @_uses("preferences", "written")
    def delete_copy(self, row: StoredPreference, row_id: int) -> int:
        """Deletes the one row `row` held at `row_id` (`held_twice`'s): the user's row under its `pref_id`, received at
        its `received_at`, at that row id; returns 1, or 0 when no row is both (another replica deleted it already, or a
        compaction meanwhile gave it another row id: `held_twice` again tells). The user's cached history is dropped.
        A commit that met another's (a compaction's rewrite) is made again on the newest version (`PURGE_ATTEMPTS`)."""
        received = "received_at IS NULL" if row.received_at is None else f"received_at = {float(row.received_at)!r}"
        where = f"{owner_filter(row.tenant, row.user_id)} AND pref_id = {quote(row.pref_id)} AND {received} AND _rowid = {int(row_id)}"
        key = (row.tenant, row.user_id)
        with self._lock, self.histories.writing([key]):  # as `received_again`: no load of the history lands meanwhile
            gone = self._committed_to_preferences("a delete of a row stored twice",
                                                  lambda: self.preferences.delete(where).num_deleted_rows)
            self.histories.invalidate([key])
            if gone:
                self._after_write("preferences")
        return gone

    def _committed_to_preferences(self, what: str, commit: Callable[[], T]) -> T:
        """`commit()`'s result, one commit to the preferences table made again on its newest version when it met
        another's (a compaction's rewrite; with `sync_seconds`, also a version another process removed: "not found"),
        up to PURGE_ATTEMPTS times with a growing random pause; `what` names it in the warning. Raises the last error
        when every attempt failed, and any other error as it came. For the caller holding the write lock."""
        for attempt in range(PURGE_ATTEMPTS):
            try:
                return commit()
            except (OSError, RuntimeError, ValueError) as exc:
                retry = _commit_conflict(exc) or (self.sync_seconds is not None and "not found" in str(exc).lower())
                if not retry or attempt == PURGE_ATTEMPTS - 1:
                    raise
                log.warning("%s met another commit on preferences (%s); again on the newest version", what, exc)
                time.sleep(random.uniform(0.02, 0.1) * (attempt + 1))
                self.preferences.checkout_latest()
        raise AssertionError("unreachable")

    @_uses("preferences", "read")
    def still_holds(self, tenant: str, user_id: str, pref_id: str) -> bool:
        """Whether the table's newest version (not one `sync_seconds` stale) holds the user's row `pref_id`:
        a row read a moment ago and gone now was deleted meanwhile, by any process (a DELETE of the user
        deletes every row of theirs at once, so one of the rows read is enough to tell)."""
        self.preferences.checkout_latest()
        return self.preferences.count_rows(f"{owner_filter(tenant, user_id)} AND pref_id = {quote(pref_id)}") > 0

    @_uses("users", "written")
    def withdraw_user(self, tenant: str, user_id: str, updated_at: float) -> None:
        """Delete the user's users row written at `updated_at` (unix seconds, as `put_user` wrote it), and
        no later one: a fit drawn from rows another process's DELETE took meanwhile (`still_holds`). Reads
        no longer see it when this returns; the files that hold it (its fragment, the index, old versions)
        go in the background, in a maintenance turn of their own (`wait_withdrawn`), as a DELETE's purge:
        the DELETE that took the user's rows had purged before this row came. Not in the caller's turn: a
        refit holds the user's lock, which a DELETE takes after its turn (waiting here for the turn, a
        DELETE of the same user on this process would wait for the refit for good). `withdrawn_note` is written
        first: a process killed before the purge's turn leaves the purge to its next start (`finish_withdrawn`)."""
        where = f"{owner_filter(tenant, user_id)} AND updated_at = {float(updated_at)!r}"
        with self._purge_lock:
            self._withdrawing += 1
        deleted = False
        try:
            self._note_withdrawn()
            with self._lock:
                self._commit("users", self.users, lambda: self.users.delete(where))
                self._after_write("users")
            deleted = True
        finally:
            with self._purge_lock:  # two refits withdrawing at once start one purge, and `_purging` loses neither
                self._withdrawing -= 1
                if deleted and not self._purge_queued.is_set():  # one queued purges every row withdrawn before it begins
                    self._start_withdrawn_purge()

    def _note_withdrawn(self) -> None:
        """Before a withdrawal's delete: `withdrawn_note` written, so that a process killed before the purge's turn
        (a mark is written only in one) has the next start purge (`finish_withdrawn`). One that cannot be written is logged: the delete
        and its purge go on (a kill meanwhile would leave the row in the files until a later purge)."""
        if self._withdrawn_note is None or self._withdrawn_note.exists():
            return
        try:
            write_atomic(self._withdrawn_note, b"")
        except OSError as exc:
            log.error("the note of a withdrawn users row's purge could not be written (%s); purged in this process only", exc)

    def _start_withdrawn_purge(self) -> None:
        """Under `_purge_lock`: the purge of the withdrawn rows queued, on a thread of its own."""
        self._purge_queued.set()
        # a daemon: a stop waits for it only so long (`wait_withdrawn`; with replicas its turn may wait up to the
        # lease's wait); stopped after its mark, the next turn finishes it, before it, the next start (`finish_withdrawn`)
        purging = threading.Thread(target=self._purge_withdrawn, daemon=True, name="withdrawn-purge")
        purging.start()  # before `wait_withdrawn` can see it: a thread not started yet cannot be joined (RuntimeError)
        self._purging = [*(t for t in self._purging if t.is_alive()), purging]

    def _purge_withdrawn(self) -> None:
        """The users table purged (`_purge_tables`), marked first so that a turn stopped part way is finished
        by the next (`PurgeMarks`). A failure is logged; the mark stays for the next turn."""
        try:
            with self._maintenance():
                self._purge_queued.clear()  # a row withdrawn from now on is in a fragment this purge may not rewrite
                self._mark(["users"])
                self._purge_tables(["users"])
            with self._purge_lock:  # the note goes once no withdrawal is between its note and a purge queued
                if self._withdrawn_note is not None and not self._withdrawing and not self._purge_queued.is_set():
                    self._withdrawn_note.unlink(missing_ok=True)
        except Exception:
            self._purge_queued.clear()
            # marked: the next delete or compaction finishes it; not (no turn): the note, at the next start (`finish_withdrawn`)
            log.exception("the purge of withdrawn users rows failed")

    def wait_withdrawn(self, timeout: float | None = None) -> bool:
        """Block until the purges of withdrawn users rows started so far are done, at most `timeout` seconds in all
        (None: however long); returns whether they are (a stop: one that still waits for its turn is not marked
        yet: the row stays in the users table's files until the next start's `finish_withdrawn` purges them)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for purging in list(self._purging):
            purging.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(purging.is_alive() for purging in self._purging)

    def _grow_histories(self, data: pa.Table, owners: list[tuple[str, str]]) -> None:
        rows_of: dict[tuple[str, str], list[int]] = {}
        for i, key in enumerate(owners):
            rows_of.setdefault(key, []).append(i)
        part = lambda idx: History.from_arrow(data.take(idx).drop_columns(["tenant", "user_id", "schema_version"]), self.dim)
        for key, idx in rows_of.items():
            self.histories.extend(key, lambda idx=idx: part(idx))

    def _commit(self, name: str, table, write: Callable[[], object]) -> None:
        """`write()`, one commit to `table`, which another process's removal of old versions may meet as
        a read does (`_read`): the version this process's handle looks at lost its files ("Not found",
        met as Lance begins from that version, before it commits), and every later write from the
        handle would meet it again. The table is pointed at its newest version and the write made again
        (an upsert: the same twice; an append: `_commit_rows`). Alone on the store nothing removes what
        a write uses: raised at once (a damaged table)."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                write()
                return
            except (OSError, RuntimeError, ValueError) as exc:
                if self.sync_seconds is None or attempt == WRITE_ATTEMPTS - 1 or "not found" not in str(exc).lower():
                    raise
                log.warning("a write to %s met another process's removal of old versions (%s); again on the newest version", name, exc)
                table.checkout_latest()

    def _commit_rows(self, name: str, table, data: pa.Table) -> bool:
        """Append `data` in one commit (`_commit`). Made again, it appends only the rows the table
        lacks by their key (`APPEND_KEYS`): the first attempt may have committed (a commit is whole or
        absent), and a batch holds several writers' rows, any of which another replica may have stored
        meanwhile (an idempotent retry moved by both), so no row is stored twice and none is dropped.
        Returns whether it was made again (then which rows of `data` this process appended is not known)."""
        attempts = 0

        def append() -> None:
            nonlocal attempts
            rows = self._lacking(table, name, data) if attempts else data
            attempts += 1
            if rows.num_rows:
                table.add(rows)

        self._commit(name, table, append)
        return attempts > 1

    @staticmethod
    def _lacking(table, name: str, data: pa.Table) -> pa.Table:
        """The rows of `data` whose key (`APPEND_KEYS[name]`) `table` does not hold (a scan of the
        key columns, on the rare write made again)."""
        keys = APPEND_KEYS[name]

        def joined(rows: pa.Table) -> pa.Array:
            columns = [pc.cast(rows.column(k), pa.string()) for k in keys]
            return columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x00")

        held = joined(table.search().select(list(keys)).limit(None).to_arrow())
        return data.filter(pc.invert(pc.is_in(joined(data), value_set=held)))

    def _after_write(self, name: str) -> None:
        self.writes_since_compaction += 1
        self._pending[name] += 1
        if name not in self._indexed:
            self._ensure_indexes(name)

    def _ensure_indexes(self, name: str) -> None:
        """BITMAP indexes on tenant and user_id, and the table's RANGE_INDEXED (created once the table has rows). Another process
        making them at the same moment preempts this one's (Lance: "Retryable commit conflict"): then
        its index serves. Never raises for a write already committed: an index still missing after
        INDEX_ATTEMPTS is logged and made at a later write (reads scan meanwhile)."""
        table = self.tables[name]
        for attempt in range(INDEX_ATTEMPTS):
            try:
                if not table.count_rows():
                    return
                have = {tuple(i.columns) for i in table.list_indices()}
                for column, config in _indexes(name):
                    if (column,) not in have:
                        table.create_index(column, config=config, replace=True)
                self._indexed.add(name)
                return
            except (OSError, RuntimeError) as exc:
                if attempt == INDEX_ATTEMPTS - 1:
                    log.warning("indexes of %s not made (%s); a later write makes them", name, exc)
                    return
                time.sleep(random.uniform(0.02, 0.1))
                self.refresh(name)

    # ---- reads ------------------------------------------------------------------------------

    def _read(self, read: Callable[[], T]) -> T:
        """A read that a DELETE may overlap: another process's removes old versions only after every
        process looks at a newer one (`_purge_tables`), and this process's own (alone on the store) at
        once, beside this process's other reads, which take no lock; a read that began on such a
        version and is still running then meets "Not found"; it is read again, on the newest version.
        Within a read already read again this way (every `_uses` read), once: the outer read does it
        again, whole."""
        if getattr(self._reading, "on", False):
            return read()
        self._reading.on = True
        try:
            for attempt in range(READ_ATTEMPTS):
                try:
                    return read()
                except (OSError, RuntimeError, ValueError) as exc:
                    if attempt == READ_ATTEMPTS - 1 or "not found" not in str(exc).lower():
                        raise
                    log.warning("a read met a DELETE's removal of old versions (%s); read again", exc)
                    self.refresh(*self.tables)
            raise AssertionError("unreachable")
        finally:
            self._reading.on = False

    def _rows(self, name: str, where: str, columns: list[str] | None = None) -> list[dict]:
        def read() -> list[dict]:
            query = self.tables[name].search().where(where)
            if columns:
                query = query.select(columns)
            return query.limit(None).to_arrow().to_pylist()

        return self._read(read)

    @staticmethod
    def _preference(row: dict, tenant: str, user_id: str) -> StoredPreference:
        return StoredPreference(
            tenant=tenant, user_id=user_id, pref_id=row["pref_id"], prompt=row["prompt"],
            chosen=row["chosen"], rejected=row["rejected"], kind=row["kind"], created_at=stored_seconds(row["created_at"]),
            tie=row["tie"], margin=row["margin"], source=row["source"], attributes=json.loads(row["attributes"]),
            received_at=row.get("received_at"),
            trl=None if row.get("trl") is None else _TRL_DECODER.decode(row["trl"]),
        )

    def _cached(self, tenant: str, user_id: str, any_age: bool = False) -> History | None:
        """The user's cached history, if any and (with `sync_seconds`) not older than that unless it
        still holds the rows the table holds of the user: the table is at the version the history was last
        found to match (nothing read), or it has as many rows as the table holds of the user and every commit
        since only added rows, or its rows of the user have the history's `pref_id`s, received at the same times
        (`_matches`). Otherwise it is dropped. `any_age`: checked however young it is. The count of the user's
        rows alone is not enough: another replica's DELETE of the user and an import of as many rows (or its
        `received_again`) would leave a history of the deleted rows cached, which refits fit and reranking searches."""
        key = (tenant, user_id)
        history = self.histories.peek(key)
        if history is None or self.sync_seconds is None or (not any_age and self.histories.age(key, history) < self.sync_seconds):
            return history
        since = time.monotonic()
        version = self._read(lambda: self.preferences.version)
        if self._matches(tenant, user_id, history, self.histories.version(key, history), version):
            self.histories.checked(key, since, version, history)
            return history
        self.histories.invalidate([key])  # another process added, deleted or received again rows of the user
        return None

    def _matches(self, tenant: str, user_id: str, history: History, known: int | None, version: int) -> bool:
        """`_cached`'s check of `history`, known to match the table at version `known` (None: not known), against the
        table, now at `version`. When every commit since `known` only added rows (`AddingCommits`; another user's
        feedback, an index update; not a compaction, whose ReserveFragments is unnamed), the user's rows can only have
        grown: a count of them (BITMAP index, no data page read) tells, made at `version` (the table looked at again
        after it: not moved on meanwhile). Otherwise their ids and arrival times are read and compared (`_same_rows`,
        ~3x the count's cost, which every check of a table that had moved would otherwise pay, a chat of each user
        idle past `sync_seconds` under load)."""
        if known is not None and self._adding_commits.only_added(known, version):
            if known == version:
                return True
            count = self._read(lambda: self.preferences.count_rows(owner_filter(tenant, user_id)))
            if self._read(lambda: self.preferences.version) == version:
                return count == len(history)
        return _same_rows(history, self._read(lambda: self._row_keys(tenant, user_id)))

    def _operation_of(self, version: int) -> str | None:
        """The name of the Lance operation that committed `version` of the preferences table (`AddingCommits`), None
        when its transaction is not found. Raises OSError (or Lance's RuntimeError, ValueError) when it cannot be read
        (the version's files removed by a purge), TypeError for a compaction's Rewrite that remapped indexes (Lance's
        binding cannot build its `RewrittenIndex`, lance 14.0.2). Called one call at a time (`AddingCommits`): the handle read from two
        threads at once raises "Already borrowed"."""
        if self._transactions is None:  # one dataset handle, opened once: it reads any version's transaction
            import lance  # as lancedb's `to_lance` does: not at the top (seconds of imports)

            # its own small caches: Lance's default (1 GiB of metadata) kept every transaction read, ~0.7 KB a version
            caches = lance.Session(index_cache_size_bytes=0, metadata_cache_size_bytes=TRANSACTION_CACHE_BYTES)
            self._transactions = self.preferences.to_lance(session=caches)
        found = self._transactions.read_transaction(version)
        return None if found is None else type(found.operation).__name__

    def _row_keys(self, tenant: str, user_id: str) -> pa.Table:
        """The user's rows' `pref_id` and `received_at` (those of them the table holds), as the table holds them."""
        columns = self._present("preferences", ["pref_id", "received_at"])
        return self.preferences.search().where(owner_filter(tenant, user_id)).select(columns).limit(None).to_arrow()

    @_uses("preferences", "read")
    def history(self, tenant: str, user_id: str, latest: bool = False) -> History:
        """Every preference row of the user with its vectors (cached until their rows change). `latest`: with
        other processes on the store, as the table's newest version holds them, not a view (or a cached
        history) up to `sync_seconds` stale: one more look for that version and a check of the cached history
        (`_cached`, `_matches`; a refit, whose row must not be drawn from rows another process's DELETE took a
        moment ago)."""
        if self.sync_seconds is not None:
            if latest:
                self.preferences.checkout_latest()
            self._cached(tenant, user_id, any_age=latest)  # drops a history that no longer matches the table

        def load() -> History:
            columns = self._present("preferences", [f.name for f in self.schemas["preferences"] if f.name not in ("tenant", "user_id", "schema_version")])
            table = self._read(lambda: self.preferences.search().where(owner_filter(tenant, user_id)).select(columns).limit(None).to_arrow())
            return History.from_arrow(self._with_absent("preferences", table), self.dim)

        version = (lambda: self._read(lambda: self.preferences.version)) if self.sync_seconds is not None else None
        return self.histories.get((tenant, user_id), load, version)

    def preferences_for(self, tenant: str, user_id: str, offset: int = 0, limit: int | None = None,
                        after: tuple[float, str] | None = None) -> tuple[list[StoredPreference], int]:
        """A page of the user's preferences, oldest first (by `created_at`, which every read of the store gives as the
        seconds it meant: `stored_seconds`; then by pref_id; ties in storage order; `offset`
        rows skipped, at most `limit`: None for all), and the total count. Sorted in Arrow and only the page
        made into Python objects: a page of 50 of a user's 50,000 rows built all 50,000 dicts (~60 MB) to keep
        50. `after` (created_at, pref_id), a keyset: only rows sorting after that one are paged (`offset` then
        counts from there), so a walk that passes each page's last row on is not shifted by rows added or
        deleted meanwhile behind it. Raises StoreError when `offset` or `limit` is not a whole number >= 0 (a
        negative one would slice from the newest end)."""
        whole_numbers(offset=offset, **({} if limit is None else {"limit": limit}))
        meta = self.history(tenant, user_id).meta
        total = meta.num_rows
        if after is not None:
            created_at, pref_id = meta.column("created_at"), meta.column("pref_id")
            later = pc.or_(pc.greater(created_at, after[0]), pc.and_(pc.equal(created_at, after[0]), pc.greater(pref_id, after[1])))
            meta = meta.filter(later)
        order = pc.sort_indices(meta, sort_keys=[("created_at", "ascending"), ("pref_id", "ascending")])  # stable, as `sorted`
        stop = len(order) if limit is None else min(len(order), offset + limit)
        page = meta.take(order.slice(offset, max(0, stop - offset))).to_pylist() if offset < stop else []
        return [self._preference(r, tenant, user_id) for r in page], total

    @_uses("preferences", "read")
    def texts_of(self, tenant: str, user_ids: list[str], before: float | None = None) -> list[str] | None:
        """Every text of `texts_in_batches` when they are one list of it (TEXT_ROWS_PER_READ rows, TEXT_BYTES_PER_READ of
        text), else None (more: read a list at a time): for a caller that holds them at once (a batch of a tenant's
        removal, before its turn: `service.users.services.delete_batch`), read again whole when another process's
        removal of old versions met the read (`_read`)."""
        lists = self.texts_in_batches(tenant, user_ids, before)
        texts = next(lists)
        return texts if next(lists, None) is None else None

    def texts_in_batches(self, tenant: str, user_ids: list[str], before: float | None = None,
                         rows_per_read: int | None = None) -> Iterator[list[str]]:
        """The prompts and answers of every stored preference row of `user_ids` (of `tenant`), a list of the texts of at
        most `rows_per_read` rows (None: TEXT_ROWS_PER_READ) and TEXT_BYTES_PER_READ at a time (a row larger alone: a list
        of its own), read from the table TEXT_ROWS_PER_BATCH rows at a time as the iterator advances:
        what a batch of a tenant's removal, or a user's DELETE, forgets from the embedding caches (their texts alone: no
        vectors, no row objects, so 100,000 rows of a user are not read whole: benchmarks/stored_before.py; and a batch
        at a time: one read of every text held a user's whole history in memory at once); one empty list when they have
        no row. `before` (unix seconds):
        only rows received before it (`received_before`). The rows are those of the table's version when the read
        begins (Lance's scan); a caller that must not see them change (a DELETE) holds the store's turn. Advancing
        raises StoreUnavailable as a read does."""
        if not user_ids:
            return iter(([],))
        per_read = max(1, int(TEXT_ROWS_PER_READ if rows_per_read is None else rows_per_read))
        where = owners_filter(tenant, sorted(set(user_ids))) + ("" if before is None else f" AND {received_before(before)}")
        with self._on_unless_read("preferences"):
            reader = self._read(lambda: self.preferences.search().where(where).select(["prompt", "chosen", "rejected"])
                                .limit(None).to_batches(min(per_read, TEXT_ROWS_PER_BATCH)))
        return self._texts_read(reader, per_read)

    def _on_unless_read(self, name: str):
        """`_on(name, "read")`, but within a `_read` (`texts_of`, whose `_uses` reads it all again when it met another
        process's removal of old versions): nothing then, its `_on` says what failed once read again in vain; an error
        taken for a damaged table first would be noted for /health as one (`problems`) though the read again succeeded."""
        return contextlib.nullcontext() if getattr(self._reading, "on", False) else self._on(name, "read")

    def _texts_read(self, reader: pa.RecordBatchReader, per_read: int) -> Iterator[list[str]]:
        """`texts_in_batches`' lists, from `reader`'s batches: gathered up to `per_read` rows or TEXT_BYTES_PER_READ of
        text (Lance hands over a batch per fragment, one row each for a user whose feedback came one at a time since the
        last compaction: a list each would clean the caches once per row) and cut there (it may hand over larger ones
        than asked)."""
        held: list[pa.RecordBatch] = []
        rows, size, lists = 0, 0, 0
        while True:
            with self._on_unless_read("preferences"):
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    batch = None
            if batch is None:
                if rows or not lists:  # one list at least, empty for no row: a DELETE's step runs as for any user
                    yield _texts(held)
                return
            while batch.num_rows:
                sizes = np.cumsum(_text_bytes(batch))
                take = min(per_read - rows, int(np.searchsorted(sizes, TEXT_BYTES_PER_READ - size, side="right")))
                take = take or (0 if rows else 1)  # a row larger than the bound alone: a list of its own
                if take:
                    held.append(batch.slice(0, take))
                    rows, size, batch = rows + take, size + int(sizes[take - 1]), batch.slice(take)
                if rows == per_read or batch.num_rows:  # full: the next row would pass a bound
                    yield _texts(held)
                    held, rows, size, lists = [], 0, 0, lists + 1

    @_uses("preferences", "read")
    def count_of(self, tenant: str, user_ids: list[str]) -> int:
        """How many preference rows `user_ids` (of `tenant`) have: one count by the BITMAP indexes, no row read (what
        tells a tenant's removal whether the texts it read before the store's turn, `texts_of`, are still all)."""
        if not user_ids:
            return 0
        return self.preferences.count_rows(owners_filter(tenant, sorted(set(user_ids))))

    def warm(self, tenant: str, user_id: str) -> None:
        """Load the user's history into the cache in the background (once at a time per user)."""
        key = (tenant, user_id)
        if key in self._warming:
            return
        self._warming.add(key)

        def load() -> None:
            try:
                self.history(tenant, user_id)
            finally:
                self._warming.discard(key)

        self._warmer.submit(load)

    def wait_warm(self) -> None:
        """Block until the background loads queued so far are done (tests, benchmarks)."""
        self._warmer.submit(lambda: None).result()

    @_uses("preferences", "read")
    def stored_rows(self, tenant: str, user_id: str) -> list[StoredPreference]:
        """Every preference row of the user (text, labels and times; no vectors) as the table holds it, in storage
        order: one read by the BITMAP index on user_id, not through the histories cache, which it leaves as it
        was (a pass over many users, `PrefIdClaims.sweep_stored`, would otherwise load each one's history with its
        vectors into the bounded cache, evicting the users being served)."""
        columns = self._present("preferences", ["pref_id", "kind", "received_at", *SAME_ROW_FIELDS])
        return [self._preference(row, tenant, user_id) for row in self._rows("preferences", owner_filter(tenant, user_id), columns)]

    @_uses("preferences", "read")
    def stored_row(self, tenant: str, user_id: str, pref_id: str) -> StoredPreference | None:
        """The user's preference row `pref_id` (text, labels and times; no vectors) as the table holds it, None when
        the user holds none under that id: one read by the BITMAP indexes, not through the histories cache. Of two
        copies (`held_twice`) the one received first."""
        columns = self._present("preferences", ["pref_id", "kind", "received_at", *SAME_ROW_FIELDS])
        rows = [self._preference(row, tenant, user_id) for row in
                self._rows("preferences", f"{owner_filter(tenant, user_id)} AND pref_id = {quote(pref_id)}", columns)]
        return min(rows, key=StoredPreference.received, default=None)

    @_uses("preferences", "read")
    def preference_owners(self) -> list[tuple[str, str]]:
        """Every (tenant, user_id) the preferences table holds rows of: one read of those two columns of every row
        (a one-time pass: `PrefIdClaims.sweep_stored`)."""
        keys = self._read(lambda: self.preferences.search().select(["tenant", "user_id"]).limit(None).to_arrow()
                          .group_by(["tenant", "user_id"]).aggregate([]))
        return list(zip(keys.column("tenant").to_pylist(), keys.column("user_id").to_pylist(), strict=True))

    @_uses("preferences", "read")
    def users_with_preferences(self, owners: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of `owners` (tenant, user_id) whose rows the preferences table holds any of: one read of their rows'
        keys per USERS_PER_READ of them (BITMAP index on user_id), not a count per user (~1.4 ms each: a stop's
        check of 5,500 users took 7.4 s, benchmarks/stop_waiting_refits.py)."""
        owners = list(dict.fromkeys(owners))
        held: set[tuple[str, str]] = set()
        for start in range(0, len(owners), USERS_PER_READ):
            chunk = owners[start:start + USERS_PER_READ]
            where = (f"tenant IN ({', '.join(quote(t) for t in {t for t, _ in chunk})}) "
                     f"AND user_id IN ({', '.join(quote(u) for u in {u for _, u in chunk})})")
            keys = self._read(lambda where=where: self.preferences.search().where(where).select(["tenant", "user_id"]).limit(None)
                              .to_arrow().group_by(["tenant", "user_id"]).aggregate([]))
            held.update(zip(keys.column("tenant").to_pylist(), keys.column("user_id").to_pylist(), strict=True))
        return held.intersection(owners)

    @_uses("preferences", "read")
    def count_preferences(self, tenant: str, user_id: str) -> int:
        history = self._cached(tenant, user_id)
        return len(history) if history is not None else self.preferences.count_rows(owner_filter(tenant, user_id))

    @_uses("preferences", "read")
    def count_comparisons(self, tenant: str, user_id: str) -> int:
        """How many strict comparisons (what a reward fit uses) the user has."""
        history = self._cached(tenant, user_id)
        if history is not None:
            return int(history.comparison.sum())
        return self.preferences.count_rows(owner_filter(tenant, user_id) + COMPARISON_FILTER)

    @_uses("preferences", "read")
    def count_ties(self, tenant: str, user_id: str) -> int:
        """How many of the user's rows are ties (neither answer preferred; a rating of 3 too): rows a pairwise
        reward cannot learn from."""
        history = self._cached(tenant, user_id)
        if history is not None:
            return int(history.meta.column("tie").to_numpy(zero_copy_only=False).astype(bool).sum())
        return self.preferences.count_rows(owner_filter(tenant, user_id) + " AND tie = true")

    @_uses("preferences", "read")
    def count_paired_ties(self, tenant: str, user_id: str) -> int:
        """How many of the user's ties name two answers (`History.tie_set`; not a rating of 3, which names one):
        the ties the user model learns from (`pluralign.user.model.fit_posterior`)."""
        history = self._cached(tenant, user_id)
        if history is not None:
            tie = history.meta.column("tie").to_numpy(zero_copy_only=False).astype(bool)
            return int((tie & pc.not_equal(history.meta.column("rejected"), "").to_numpy(zero_copy_only=False).astype(bool)).sum())
        return self.preferences.count_rows(owner_filter(tenant, user_id) + " AND tie = true AND rejected != ''")

    @_uses("preferences", "read")
    def count_paired(self, tenant: str, user_id: str) -> int:
        """How many of the user's rows name two answers, with a winner or tied (`count_comparisons` plus
        `count_paired_ties`): everything the user model fits, in one count (for a users row's staleness check,
        `service.users.services.user_weights`, instead of two counts; reading the rows' `tie` column to have both
        from one query took twice as long as the two counts, benchmarks/user_counts.py)."""
        history = self._cached(tenant, user_id)
        if history is not None:
            return int(pc.not_equal(history.meta.column("rejected"), "").to_numpy(zero_copy_only=False).astype(bool).sum())
        return self.preferences.count_rows(owner_filter(tenant, user_id) + " AND rejected != ''")

    @_uses("preferences", "read")
    def count_unpaired(self, tenant: str, user_id: str) -> int:
        """How many of the user's rows hold one answer and no tie (a rating of an answer that had no other to
        compare it with): rows a pairwise reward cannot learn from. With `count_comparisons` and `count_ties`,
        every row of the user."""
        history = self._cached(tenant, user_id)
        if history is not None:
            tie = history.meta.column("tie").to_numpy(zero_copy_only=False).astype(bool)
            return int((~tie & ~history.comparison).sum())
        return self.preferences.count_rows(owner_filter(tenant, user_id) + " AND tie = false AND rejected = ''")

    def comparisons(self, tenant: str, user_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(prompt, chosen, rejected) vectors, each (N, dim), of the user's strict comparisons."""
        return self.history(tenant, user_id).comparison_set()[:3]

    @_uses("preferences", "read")
    def all_comparisons(self) -> list[StoredPreference]:
        """Every strict comparison of every tenant and user (population retraining), without vectors."""
        # without the TRL form: the population models read the text
        columns = self._present("preferences", [f.name for f in self.schemas["preferences"]
                                                if f.name not in ("schema_version", "trl") and not f.name.endswith("_vec")])
        rows = self._rows("preferences", "tie = false AND rejected != ''", columns)
        for row in rows:
            row["attributes"] = json.loads(row["attributes"])
        return [msgspec.convert(row, StoredPreference) for row in rows]

    @_uses("preferences", "read")  # `_cached` reads the table (replicas): a storage failure named as every read's
    def own_answers_sample(self, tenant: str, user_id: str, limit: int = 200, seed: int = 0) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """Both answers of up to `limit` of the user's own stored pairs (a comparison or a tie of two answers), each
        pair of answers once whatever its prompt: `answers_sample(tenant, limit, per="pair", only_user=user_id)`, but
        from the user's cached history when it is cached (`History.answers_sample`: no read at all). An uncached
        user's history is not loaded for it (every row's vectors: a user of 20,000 rows took 1.3 s and 94 MB of 384-d
        vectors for 200 pairs, against 0.1 s): the table's draw reads their row ids, the texts of at most 8 * `limit` rows and the vectors
        of the kept ones, whatever the user's size. What a profile's nearest prototype is described by by default."""
        history = self._cached(tenant, user_id)
        if history is not None:
            return history.answers_sample(limit, seed)
        return self.answers_sample(tenant, limit, seed=seed, per="pair", only_user=user_id)

    @_uses("preferences", "read")
    def answers_sample(
        self, tenant: str | None, limit: int = 200, *, seed: int = 0, keep: Callable[[str, str, str], bool] | None = None,
        leave_out_user: str | None = None, max_rows: int | None = None, with_tenants: bool = False, per: str = "question",
        only_user: str | None = None,
    ) -> tuple[list[str], list[str], np.ndarray, np.ndarray] | tuple[list[str], list[str], np.ndarray, np.ndarray, list[str]]:
        """Both answers of up to `limit` stored comparisons of the tenant (None: of every tenant),
        drawn at random (`seed`) from all of them: their prompts, texts, and prompt and answer
        vectors, (M, dim) each, M = 2 * pairs, each pair's two answers side by side; `with_tenants`
        adds the tenant of each answer (M,), for a page of every tenant's that says whose each is.

        A question (a prompt and its pair of answers, `question_key`) counts once however many users stored it (in NFC or
        NFD: `answer_key`), and pairs `keep(prompt, chosen, rejected)` refuses do not count: the draw reads past them (the
        same two answers to another prompt are another question); `per="pair"`
        counts a pair of answers once whatever its prompt, for a sample that shows each answer once (the prototypes'
        description, whose slots a questionnaire's "Yes."/"No." questions would otherwise take). Raises
        ValueError for another `per`. Rows of `leave_out_user` are not drawn at all; with `only_user` (a tenant's user) only
        that user's rows are. The
        cost is bounded whatever the tenant's size: one read of the row ids of its comparisons (the
        BITMAP index, no texts), the texts of at most `max_rows` drawn rows (default 8 * `limit`),
        and the vectors of the `limit` kept ones; where most of the tenant's pairs are refused, a
        few kept ones may lie beyond `max_rows` and go unseen."""
        if per not in DISTINCT_PER:
            raise ValueError(f"`per` must be one of {', '.join(DISTINCT_PER)}, got {per!r}")
        where = "rejected != ''" if tenant is None else f"tenant = {quote(tenant)} AND rejected != ''"
        if leave_out_user is not None:
            where += f" AND user_id != {quote(leave_out_user)}"
        if only_user is not None:
            if tenant is None:
                raise ValueError("`only_user` names a user of one tenant: give `tenant` too")
            where += f" AND user_id = {quote(only_user)}"
        columns = ["prompt", "chosen", "rejected", "prompt_vec", "chosen_vec", "rejected_vec", *(["tenant"] if with_tenants else [])]
        for attempt in range(DRAW_ATTEMPTS):
            # row ids change when the table is compacted (a background compaction commits beside this read):
            # a draw, or the read of its rows, that lost rows to one is redone on the new ids; the last
            # attempt draws and reads one pinned version, which no commit meanwhile changes (its files stay
            # for `compact`'s keep_versions_for), so compactions in a row cannot leave it short
            table = self.preferences if attempt < DRAW_ATTEMPTS - 1 else self._pinned_preferences()
            picked, complete = self._draw_pairs(where, limit, seed, keep, 8 * limit if max_rows is None else max_rows, table,
                                                DISTINCT_PER[per])
            taken = table.take_row_ids(picked).select(columns).with_row_id().to_arrow().to_pylist() if picked else []
            found = {r["_rowid"]: r for r in taken}
            if complete and all(i in found for i in picked):
                break
        rows = [found[i] for i in picked if i in found]
        prompts = [r["prompt"] for r in rows for _ in range(2)]
        answers = [t for r in rows for t in (r["chosen"], r["rejected"])]
        vec = lambda name: np.asarray([r[name] for r in rows], np.float32).reshape(-1, self.dim)  # noqa: E731
        prompt_vec = np.repeat(vec("prompt_vec"), 2, axis=0)
        answer_vec = np.stack([vec("chosen_vec"), vec("rejected_vec")], axis=1).reshape(-1, self.dim)
        if with_tenants:
            return prompts, answers, prompt_vec, answer_vec, [r["tenant"] for r in rows for _ in range(2)]
        return prompts, answers, prompt_vec, answer_vec

    def _pinned_preferences(self):
        """A handle of the preferences table at the version `self.preferences` reads now, which later
        commits (another process's, a background compaction's) do not move."""
        pinned = self.db.open_table("preferences")
        pinned.checkout(self.preferences.version)
        return pinned

    def _draw_pairs(self, where: str, limit: int, seed: int, keep: Callable[[str, str, str], bool] | None,
                    max_rows: int, table=None, key: Callable[[str, str, str], Hashable] = question_key) -> tuple[list[int], bool]:
        """Row ids of up to `limit` rows matching `where` with distinct (`key(prompt, chosen, rejected)`) kept pairs, read in a random
        order in batches of `limit` up to `max_rows` rows (`answers_sample`) from `table` (default the
        preferences table's latest version), and whether every drawn row was still there to read."""
        table = self.preferences if table is None else table
        ids = table.search().where(where).with_row_id(True).select(["_rowid"]).limit(None).to_arrow()
        drawn = np.random.default_rng(seed).permutation(ids.column("_rowid").to_numpy())[:max_rows]
        picked, seen, complete, step = [], set(), True, max(limit, 1)
        for start in range(0, len(drawn), step):
            batch = drawn[start : start + step].tolist()
            rows = table.take_row_ids(batch).select(["prompt", "chosen", "rejected"]).with_row_id().to_arrow().to_pylist()
            complete &= len(rows) == len(batch)
            by_id = {r["_rowid"]: r for r in rows}  # a take answers in row-id order: keep the drawn one
            for row in (by_id[i] for i in batch if i in by_id):
                pair = key(row["prompt"], row["chosen"], row["rejected"])  # NFC and NFD: one question (one pair)
                if pair not in seen and (keep is None or keep(row["prompt"], row["chosen"], row["rejected"])):
                    seen.add(pair)
                    picked.append(row["_rowid"])
            if len(picked) >= limit:
                break
        return picked[:limit], complete

    @_uses("preferences", "read")
    def search(self, tenant: str, user_id: str, vector: np.ndarray, limit: int) -> list[tuple[StoredPreference, float]]:
        """The user's `limit` preferences whose prompt is nearest (cosine) to `vector`: from the cached
        history, else one LanceDB vector search (selected columns only, prefiltered by the BITMAP
        indexes; cheaper than loading the whole history), and the history is loaded behind it.
        Returns (preference, cosine distance: 0 the same direction, up to 2) pairs, nearest first.
        Raises StoreError when `vector` is not (dim,) finite numbers or is all zeros (no cosine
        distance to it), or `limit` is not a whole number >= 0 (0: no rows)."""
        whole_numbers(limit=limit)
        vector = np.asarray(vector, np.float32)
        if vector.shape != (self.dim,):
            raise StoreError(f"`vector` has shape {vector.shape}, expected ({self.dim},)")
        if not np.isfinite(vector).all():
            raise StoreError("`vector` is not finite (NaN or inf)")
        if not vector.any():  # the cache ranked every row at distance 1, LanceDB returned none
            raise StoreError("`vector` is all zeros: it has no cosine distance to any prompt")
        if limit == 0:  # LanceDB's vector search refuses a limit of 0
            return []
        history = self._cached(tenant, user_id)
        if history is None:
            self.warm(tenant, user_id)
            columns = self._present("preferences", [f.name for f in self.schemas["preferences"]
                                                    if f.name not in ("tenant", "user_id", "schema_version") and not f.name.endswith("_vec")])
            rows = (
                self.preferences.search(np.asarray(vector, np.float32), vector_column_name="prompt_vec")
                .distance_type("cosine")
                .where(owner_filter(tenant, user_id), prefilter=True)
                .select([*columns, "_distance"])
                .limit(limit)
                .to_arrow()
                .to_pylist()
            )
            return [(self._preference(r, tenant, user_id), float(r["_distance"])) for r in rows]
        nearest = history.nearest(vector, limit)
        rows = history.take([i for i, _ in nearest])
        return [(self._preference(row, tenant, user_id), distance) for row, (_, distance) in zip(rows, nearest, strict=True)]

    def refresh(self, *names: str) -> None:
        """Point the named tables at their latest version now, so the next reads see every commit of
        other processes (with `sync_seconds`, reads may otherwise be that stale; alone, nothing to do).
        For a read-then-write that must not start from a stale row (a user's stated-preference version)."""
        if self.sync_seconds is None:
            return
        for name in names:
            self.tables[name].checkout_latest()

    @_uses("stated_changes", "read")
    def stated_changes(self, tenant: str, user_id: str, first: int = 1, last: int | None = None) -> list[dict]:
        """The user's stated-preference changes of versions `first` to `last` (None: the newest), in
        version order, each a dict with `version`, `at`, `feature`, `direction`. One query prefiltered
        by the owner's BITMAP indexes and the BTREE on `version` (`RANGE_INDEXED`), reading only those versions' rows
        (and the rows appended since the last compaction, which no index holds yet)."""
        where = owner_filter(tenant, user_id) + f" AND version >= {int(first)}"
        if last is not None:
            where += f" AND version <= {int(last)}"
        rows = self._rows("stated_changes", where, ["version", "at", "feature", "direction"])
        return sorted(rows, key=lambda r: r["version"])

    @_uses("stated_changes", "read")
    def stated_since(self, tenant: str, user_id: str, since: float) -> bool:
        """Whether the table holds a stated-preference change of the user made at or after `since` (unix seconds): one
        count, no row read, as `interacted_since` (`service.users.services.came_back`: a read of every change there
        read 7 rows a version of a user's whole history while every tenant's DELETE waited for the store's turn)."""
        return self.tables["stated_changes"].count_rows(f"{owner_filter(tenant, user_id)} AND at >= {float(since)!r}") > 0

    @_uses("interactions", "read")
    def get_interaction(self, tenant: str, response_id: str) -> Interaction | None:
        rows = self._rows("interactions", f"tenant = {quote(tenant)} AND response_id = {quote(response_id)}")
        if not rows:
            return None
        return _interaction(rows[0])

    @_uses("interactions", "read")
    def count_interactions(self, tenant: str, user_id: str) -> int:
        return self.interactions.count_rows(owner_filter(tenant, user_id))

    @_uses("interactions", "read")
    def interacted_since(self, tenant: str, user_id: str, since: float) -> bool:
        """Whether the table holds a chat (interaction) of the user created at or after `since` (unix seconds): one
        count, no row read. What a DELETE finished from the journal asks, twice, inside the store's maintenance turn
        (`service.users.services.came_back`): a count, not a read of every chat of the user there
        (`interactions_for`: 1.2-2.5 s for 20,000 at load 13, while every tenant's DELETE waited)."""
        return self.interactions.count_rows(f"{owner_filter(tenant, user_id)} AND created_at >= {float(since)!r}") > 0

    @_uses("interactions", "read")
    def interactions_for(self, tenant: str, user_id: str) -> list[Interaction]:
        rows = self._rows("interactions", owner_filter(tenant, user_id))
        rows.sort(key=lambda r: r["created_at"])
        return [_interaction(row) for row in rows]

    @_uses("preferences", "read")
    def preferences_in_order(self, tenant: str, user_id: str, rows_per_read: int = ROWS_PER_READ) -> InOrder[StoredPreference]:
        """Every preference of the user, in `preferences_for`'s order (oldest first, then by pref_id),
        without vectors, read `rows_per_read` at a time: what is held at once does not grow with the
        user's rows (beyond their pref_ids and row ids in sort order, ~50 bytes a row, in Arrow's memory).

        The rows of one version of the table are read throughout: they and the order are fixed by this
        call (a storage failure raises StoreUnavailable here), the rows are read as the iterator
        advances, so rows written meanwhile (an import) are not mixed in. Should that version's files be
        removed meanwhile (any DELETE's purge, a compaction's cleanup), the same rows are read on from
        the newest version. Advancing raises StoreUnavailable when the table cannot be read, and
        DeletedMeanwhile when rows not yet read were deleted meanwhile (a DELETE of the user: alone on
        the store at once; with replicas `sync_seconds` + READ_MARGIN_S after it)."""
        columns = self._present("preferences", [f.name for f in self.schemas["preferences"]
                                                if f.name not in ("tenant", "user_id", "schema_version") and not f.name.endswith("_vec")])
        batches = self._in_order("preferences", owner_filter(tenant, user_id), ["created_at", "pref_id"], "pref_id", columns, rows_per_read)
        return InOrder((self._preference(row, tenant, user_id) for batch in batches for row in batch), len(batches))

    @_uses("interactions", "read")
    def interactions_in_order(self, tenant: str, user_id: str, rows_per_read: int = ROWS_PER_READ) -> InOrder[Interaction]:
        """Every interaction of the user in `interactions_for`'s order (by `created_at`), read as
        `preferences_in_order` reads preferences: one version, `rows_per_read` rows at a time, the
        same errors."""
        columns = self._present("interactions", [f.name for f in self.schemas["interactions"]])
        batches = self._in_order("interactions", owner_filter(tenant, user_id), ["created_at"], "response_id", columns, rows_per_read)
        return InOrder((_interaction(row) for batch in batches for row in batch), len(batches))

    def _in_order(self, name: str, where: str, keys: list[str], identity: str, columns: list[str], rows_per_read: int) -> InOrder[list[dict]]:
        """The rows of table `name` matching `where`, sorted by `keys` (ascending; ties in the order
        a scan reads them, as Python's stable sort of a whole read leaves them), as lists of at most
        `rows_per_read` dicts of `columns` (`len()`: the rows in all). The version and the order are read now; the rows lazily.
        `identity` is a column telling the rows apart (`pref_id`, `response_id`): should that version's
        files be removed under the read, it goes on from the newest version (`_taken`)."""
        pinned, order = self._pinned(name, where, list(dict.fromkeys([*keys, identity])))
        if "created_at" in keys:  # an older release's time in milli-, micro- or nanoseconds sorts as its seconds, NaN as inf
            order = with_stored_seconds(order)
        order = order.take(pc.sort_indices(order, sort_keys=[(k, "ascending") for k in keys])).select([identity, "_rowid"])  # stable
        return InOrder(self._taken(name, where, pinned, order, columns, max(1, int(rows_per_read))), order.num_rows)

    def _pinned(self, name: str, where: str, columns: list[str]) -> tuple:
        """The newest version of table `name`, checked out (later commits: an import, a compaction, a DELETE
        do not move it), and the `columns` and row ids of its rows matching `where`."""
        pinned = self.db.open_table(name)
        pinned.checkout(pinned.version)
        return pinned, pinned.search().where(where).select(columns).with_row_id(True).limit(None).to_arrow()

    def _taken(self, name: str, where: str, pinned, order: pa.Table, columns: list[str], rows_per_read: int) -> Iterator[list[dict]]:
        """`order`'s rows (identity and row id, in order) taken from the version `pinned`, `rows_per_read` at a
        time. Any DELETE's purge (of this user or another: alone on the store, it removes every old version
        at once) and a compaction dropping versions older than its `keep_versions_for` remove the files of
        the version read; the rows not yet read are then found by identity on the newest version and read
        from it (DeletedMeanwhile when some are gone: the user's rows were deleted meanwhile). A failure
        that persists READ_ATTEMPTS times on one batch is the table's (StoreUnavailable, noted)."""
        identity = order.column_names[0]
        start, moves = 0, 0
        while start < order.num_rows:
            wanted = order.column("_rowid").slice(start, rows_per_read).to_pylist()
            failed: Exception | None = None
            try:
                rows = pinned.take_row_ids(wanted).select(columns).with_row_id().to_arrow().to_pylist()
            except (OSError, RuntimeError, ValueError) as exc:
                failed, rows = exc, []
            by_id = {row.pop("_rowid"): row for row in rows}  # a take answers in row-id order
            if failed is None and len(by_id) == len(wanted):
                yield [by_id[i] for i in wanted]
                start, moves = start + len(wanted), 0
                continue
            if moves == READ_ATTEMPTS - 1:
                if failed is None:
                    raise DeletedMeanwhile(f"{len(wanted) - len(by_id)} rows of table `{name}` were removed while being read")
                with self._on(name, "read"):
                    raise failed
            moves += 1
            log.info("the version of table `%s` a streamed read was on was removed (%s); on from the newest", name, failed)
            left = order.slice(start)
            with self._on(name, "read"):
                pinned, now = self._pinned(name, where, [identity])
            at = pc.index_in(left.column(identity), value_set=now.column(identity).combine_chunks())
            if at.null_count:
                raise DeletedMeanwhile(f"{at.null_count} rows of table `{name}` being read were deleted meanwhile")
            order, start = pa.table({identity: left.column(identity), "_rowid": now.column("_rowid").take(at)}), 0

    @_uses("users", "read")
    def get_user(self, tenant: str, user_id: str) -> UserRecord | None:
        rows = self._rows("users", owner_filter(tenant, user_id))
        if not rows:
            return None
        # two processes inserting a new user at once can both commit (Lance rebases one insert onto
        # the other without checking the key): the newest row is the user's
        row = max(rows, key=lambda r: r["updated_at"])
        row.pop("schema_version")
        row["attributes"] = json.loads(row["attributes"])
        return msgspec.convert(row, UserRecord)

    def tenant_users(self, tenant: str, after: str | None = None, limit: int = 100):
        """`pluralign.store.tenants.tenant_users` over this store's tables: a page of the tenant's users and whether
        more follow. Read again on the newest version when a DELETE's removal of old versions met it (`_read`): a
        tenant's removal purges them user after user while an operator pages. With replicas, the tables are looked at
        on their newest versions first (`refresh`): another replica's commit of a moment ago is listed (not a page up
        to `sync_seconds` stale)."""
        from pluralign.store.tenants import TIME_COLUMNS, tenant_users

        self.refresh(*(name for name in TIME_COLUMNS if name in self.tables))
        return self._read(lambda: tenant_users(self.tables, tenant, after, limit))

    def tenant_user_ids(self, tenant: str) -> set[str]:
        """Every user id of `tenant` with a row in any table (`pluralign.store.tenants.tenant_user_ids`), read as
        `tenant_users` is (its tables' newest versions first)."""
        from pluralign.store.tenants import TIME_COLUMNS, tenant_user_ids

        self.refresh(*(name for name in TIME_COLUMNS if name in self.tables))
        return self._read(lambda: tenant_user_ids(self.tables, tenant))

    @_uses("users", "read")
    def fitted_users(self, tenant: str, limit: int, pal_version: str | None = None, answered: bool = False) -> list[UserRecord]:
        """Up to `limit` users of the tenant with a fitted user model (a stored state), in storage
        order, the newest row of each: the population a new user is compared against when onboarding
        asks which of them the user is like. One query, bounded by `limit` (rows of a user written
        twice by two processes count twice). With `pal_version`, only rows fitted against that
        population checkpoint: users not back since a retrain must not fill the bound. With
        `answered`, only users fitted on at least one answer, a comparison or a tie of two answers (their
        row's PAL logits are set; a refit of none leaves them null): users who only stated preferences (a model
        from no answer) must not fill it either. (Counting comparisons alone, `n_preferences`, would leave
        out a user who had answered only "no preference".) With replicas (`sync_seconds`),
        a user is one whose newest row passes (a second query, of two columns of the users found: ~40-70 ms for 129 of
        300 users on a loaded 2-core machine, as much as the first): two processes inserting a user at once leave two
        rows of theirs (`get_user`), and an older one passing must not stand for a user whose newest row does
        not (a stale state of theirs in a pooled prior or an onboarding population); a newest row past the first query's
        bound is read by a third query (of those users only) and stands for them where it passes (not left out). One process alone writes one row a
        user (its commits take turns under its lock), so it pays nothing for this."""
        if limit <= 0 or not self._present("users", ["user_model"]):  # an earlier release's table without user models
            return []
        where = f"tenant = {quote(tenant)} AND user_model IS NOT NULL"
        if pal_version is not None:
            where += f" AND pal_version = {quote(pal_version)}"
        if answered:
            where += " AND pal_logits IS NOT NULL"
        rows = self.users.search().where(where).limit(int(limit)).to_arrow().to_pylist()
        newest: dict[str, dict] = {}
        for row in rows:
            if row["user_id"] not in newest or row["updated_at"] > newest[row["user_id"]]["updated_at"]:
                newest[row["user_id"]] = row
        if newest and self.sync_seconds is not None:
            self._newest_of_each(tenant, where, newest)
        out = []
        for row in newest.values():
            row.pop("schema_version")
            row["attributes"] = json.loads(row["attributes"])
            out.append(msgspec.convert(row, UserRecord))
        return out

    def _newest_of_each(self, tenant: str, where: str, found: dict[str, dict]) -> None:
        """`fitted_users`'s check with replicas: `found` (user -> the newest of their rows that passed `where` and the
        query's bound) left with the users whose newest row passes, that row for each (read by a query of the users
        with a newer row than found: rare, two rows of a user), in the order they were found."""
        latest = self.users.search().where(owners_filter(tenant, list(found))).select(["user_id", "updated_at"]).limit(None).to_arrow()
        newer: dict[str, float] = {}  # user -> the time of their newest row, newer than the one found
        for user_id, updated_at in zip(latest["user_id"].to_pylist(), latest["updated_at"].to_pylist(), strict=True):
            if user_id in found and updated_at > max(found[user_id]["updated_at"], newer.get(user_id, -math.inf)):
                newer[user_id] = updated_at
        if not newer:
            return
        for row in self.users.search().where(f"{where} AND {owners_filter(tenant, list(newer))}").limit(None).to_arrow().to_pylist():
            if row["updated_at"] == newer[row["user_id"]]:
                found[row["user_id"]] = row
        for user_id, updated_at in newer.items():
            if found[user_id]["updated_at"] != updated_at:
                del found[user_id]  # their newest row did not pass

    # ---- maintenance ------------------------------------------------------------------------

    def delete_user(self, tenant: str, user_id: str, before: float | None = None) -> dict[str, int]:
        """Delete every row of the user, then compact and drop old versions so no file keeps them.
        When it returns, no file of the store holds the user's rows.

        Other users' writes wait for the write lock only while the rows are deleted and while old
        versions are removed, not while fragments are rewritten and indexes rebuilt (appends commit
        beside a compaction; see `_purge`). With other processes on the store (replicas), deletes and
        compactions take turns among them under the store's lease (`pluralign.store.lease`; raises
        TimeoutError when it is not free within 10 minutes). A step that meets another process's
        commit (an upsert that conflicts with a rewrite) is done again on the newest version
        (`PURGE_ATTEMPTS`, with a random pause), and raises the last error when every attempt failed.

        Stopped part way (its process killed, a step raising, LeaseLost) after the rows went and before
        their files did: the tables were marked first (`PurgeMarks`), so the next turn finishes the purge
        (any delete, even of no one, or compaction; with replicas, the lease's next holder's; alone, at
        the latest when the store opens again). Returns the rows deleted, by table (all 0 when none of
        the user's rows was left, as for such a call sent again). `before` (unix seconds): of their preference rows,
        only those received before it (`received_before`; a DELETE finished from the journal: rows the user sent since
        it began, which another replica moves in meanwhile, stay theirs). Once the rows left the newest versions, before
        the purge, `rows_gone` (when set) is called with the tenant, the users and `before`."""
        return self.delete_users(tenant, [user_id], before)

    def delete_users(self, tenant: str, user_ids: list[str], before: float | None = None) -> dict[str, int]:
        """`delete_user` of each of `user_ids` (of `tenant`) at once: one predicate per table
        (`tenant = .. AND user_id IN (..)`), one delete of each table that holds any of them, then one purge
        (`_purge_tables`: each fragment rewritten and each index rebuilt once, old versions removed once, with
        replicas one wait for the others' reads). What a tenant's removal does a batch of users at a time: one by
        one, each user cost a whole purge of every table (~0.9 s). Returns the rows deleted by table, summed. Called
        inside a caller's turn (`maintenance()`), with replicas the old versions go once that turn ends (`_drop_when_due`).
        `before`: as `delete_user`'s."""
        users = sorted(set(user_ids))
        if not users:
            return dict.fromkeys(self.tables, 0)
        owners = owners_filter(tenant, users)
        wheres = {name: owners for name in self.tables}
        if before is not None:
            wheres["preferences"] = f"{owners} AND {received_before(before)}"
        counts = dict.fromkeys(self.tables, 0)
        with self._maintenance():  # one delete or compaction at a time
            def delete_rows() -> None:
                with self._lock:  # the user's rows go in one step: no commit of theirs falls in between
                    self._deletes_on_newest()
                    # the users row last: a DELETE stopped part way leaves the user there (delete again),
                    # never rows of theirs (stated changes) without the row that numbers them
                    found = {}
                    for name, table in self.tables.items():
                        with self._on(name, "read"):
                            found[name] = table.count_rows(wheres[name])
                    self._mark([name for name, n in found.items() if n])
                    for name, table in sorted(self.tables.items(), key=lambda item: item[0] == "users"):
                        if found[name]:
                            with self._on(name, "written"):
                                table.delete(wheres[name])
                            counts[name] += found[name]
                    self.histories.invalidate([(tenant, u) for u in users])
                    # their rows taken back (`retract`), recorded for the replicas' logs: nothing of theirs is left. With
                    # `before`, only retractions begun before it: a row received since stays theirs, and the record of its
                    # retraction keeps another replica's replay from moving it in again (were every
                    # record to go, a row sent since and taken back would come back at that replica's next start)
                    hashes = ", ".join(quote(deletions.user_hash(tenant, u)) for u in users)
                    taken_back = f"tenant = {quote(tenant)} AND user_hash IN ({hashes})" + (
                        "" if before is None else f" AND retracted_at < {float(before)!r}")
                    with self._on(retractions.TABLE, "written"):
                        self._retractions_latest()  # one another replica wrote a moment ago is deleted too
                        if self.retractions.count_rows(taken_back):
                            self.retractions.delete(taken_back)
                            self._retractions_forgotten = True
                            self._retraction_writes += 1

            self._retried(delete_rows)
            if self.rows_gone is not None:  # before the purge (`rows_gone`)
                self.rows_gone(tenant, users, before)
            if self._retractions_forgotten:  # no file of the current version keeps their hashes (older ones: `_compact`'s cleanup)
                self._retractions_forgotten = False
                with self._on(retractions.TABLE, "written"):
                    self._compact_retractions()
            self._purge_tables([n for n, c in counts.items() if c])  # only the tables that held them
        return counts

    def delete_feedback_before(self, tenant: str, user_id: str, before: float, chats_before: float | None = None) -> int:
        """Delete the user's feedback rows received before `before` (unix seconds; `received_before`):
        those a process acknowledged before another one answered their DELETE, and moved in after it.
        `chats_before` (unix seconds): their chats (interactions) created before it too (a chat is stored when
        it is served: a DELETE finished after the user came back, or chats another replica stored before it
        saw the DELETE's record). Purged as `delete_user` purges; when nothing else of the user is left, every
        row of theirs goes (the users row a refit of those rows wrote). Returns the rows deleted."""
        names = ["preferences", *(["interactions"] if chats_before is not None else [])]
        owner = owner_filter(tenant, user_id)
        wheres = {"preferences": f"{owner} AND {received_before(before)}",
                  "interactions": f"{owner} AND created_at < {float(chats_before or 0.0)!r}", "users": owner}
        found: dict[str, int] = {}
        with self._maintenance():
            def delete_rows() -> None:
                with self._lock:
                    self._deletes_on_newest()
                    found.clear()
                    for name in names:
                        with self._on(name, "read"):
                            found[name] = self.tables[name].count_rows(wheres[name])
                    # nothing else of theirs left: the users row goes in this step too. Looked at after the step
                    # (a later turn), feedback they sent since, committed in between, went with it
                    if sum(found.values()):
                        left = 0
                        for name in ("preferences", "interactions", "stated_changes"):
                            with self._on(name, "read"):
                                left += self.tables[name].count_rows(owner)
                        if left == sum(found.values()):
                            with self._on("users", "read"):
                                found["users"] = self.users.count_rows(owner)
                    self._mark([name for name, n in found.items() if n])
                    for name, n in sorted(found.items(), key=lambda item: item[0] == "users"):  # the users row last
                        if n:
                            with self._on(name, "written"):
                                self.tables[name].delete(wheres[name])
                    self.histories.invalidate([(tenant, user_id)])

            self._retried(delete_rows)
            self._purge_tables([name for name, n in found.items() if n])
        return sum(n for name, n in found.items() if name != "users")

    def delete_preference(self, tenant: str, user_id: str, pref_id: str) -> int:
        """Delete the user's preference row `pref_id` (every copy of it: two replicas' race can store one id twice,
        `held_twice`), then purge the table as `delete_user` does, so that no file of the store holds it when this
        returns (with replicas, the old versions go once the caller's turn ends: `_purge_tables`). Their other rows,
        their users row and other tables are untouched; the user's cached history is dropped. Called in a caller's
        turn (`maintenance()`), as `delete_users`. Returns how many rows went: 0 when the user holds no such row
        (another user's or tenant's id, or one deleted already), and then nothing is written."""
        where = f"{owner_filter(tenant, user_id)} AND pref_id = {quote(pref_id)}"
        found: list[int] = [0]
        with self._maintenance():
            def delete_rows() -> None:
                with self._lock, self.histories.writing([(tenant, user_id)]):  # no load of the history lands meanwhile
                    self._deletes_on_newest()
                    with self._on("preferences", "read"):
                        found[0] = self.preferences.count_rows(where)
                    if found[0]:
                        self._mark(["preferences"])
                        with self._on("preferences", "written"):
                            self.preferences.delete(where)
                    self.histories.invalidate([(tenant, user_id)])

            self._retried(delete_rows)
            if found[0]:
                self._purge_tables(["preferences"])
        return found[0]

    def _purge_tables(self, names: list[str]) -> None:
        """`_purge` each named table, then remove their old versions (the caller holds the maintenance
        lock). With other processes on the store, which may read a version from before the purge until
        they next look for a newer one, the old versions go `sync_seconds` + READ_MARGIN_S later: once the
        turn ends, after it (`_drop_when_due`), so that the wait holds no other delete's turn.
        No table named: nothing to wait for (a DELETE of no one keeps no replica waiting)."""
        if not names:
            return
        for name in names:
            self._retried(lambda name=name: self._purge(name))  # `_purge` names the table it fails on
        self._unpurged.difference_update(names)
        if self.sync_seconds is None:  # alone on the store: no one else reads an older version
            self._retried(lambda: self._drop_old_versions(names, None))
            self.marks.clear(names)
        else:  # made when the turn ends, outside it (`_drop_when_due`)
            self._owed.append((list(names), time.time()))
            self._dropping.update(names)

    def _retried(self, step: Callable[[], None]) -> None:
        """Run a maintenance step, again on the newest versions when it failed: another process's
        concurrent maintenance removed files it read or wrote, or committed a conflicting rewrite first."""
        passed: list[StoreUnavailable] = []  # failures a later attempt got past: not the health check's
        for attempt in range(PURGE_ATTEMPTS):
            try:
                step()
                for exc in passed:
                    self.problems.forget(exc.name, exc.action)
                return
            except LeaseLost:  # another process's turn now: this one stops (a TimeoutError, so an OSError)
                raise
            except StoreUnavailable as exc:  # no room, or read-only: doing it again cannot help
                if exc.problem != "unreadable" or attempt == PURGE_ATTEMPTS - 1:  # unreadable: maybe another's removal
                    raise
                passed.append(exc)
                log.warning("store maintenance could not read (%s); again on the newest version", exc)
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                self.refresh(*self.tables)
            except (OSError, RuntimeError) as exc:  # "Not found", "conflict", "failed to persist": Lance names
                if attempt == PURGE_ATTEMPTS - 1:  # no kind for them, and each step is safe to do again
                    raise
                log.warning("store maintenance met another process's (%s); again on the newest version", exc)
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                self.refresh(*self.tables)

    def _purge(self, name: str) -> None:
        """After a delete: no file of the table may still hold a deleted row. Every fragment with a
        deletion is rewritten (Lance's compaction otherwise keeps a fragment below 10% deleted, the
        row still in its data file) and its indexes are rebuilt (an index keeps the values of
        deleted rows); `_drop_old_versions` then removes the older versions with their files
        (transaction files name the delete's filter). The caller holds the maintenance lock.

        The rewrite and the index rebuild run beside other writers' appends (Lance commits an
        append next to a rewrite or an index; rows appended meanwhile stay outside the rebuilt
        index and are scanned until the next compaction). The users table takes upserts, which
        conflict with a rewrite, so it is purged under the write lock (one small row per user)."""
        table = self.tables[name]
        with self._on(name, "written"), self._lock if name == "users" else contextlib.nullcontext(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if table.count_rows():
                try:
                    self._fence()
                    self._rewrite(table, name)
                except (OSError, RuntimeError) as exc:  # Lance gave up committing beside many appends
                    if "conflict" not in str(exc).lower() or name == "users":
                        raise
                    log.warning("purge of %s conflicted with appends (%s); redoing it with appends held", name, exc)
                    with self._lock:
                        self._fence()
                        self._rewrite(table, name)
                self._indexed.add(name)
                self._pending[name] = 0
            else:  # nothing left: the indexes go (an empty table cannot hold one); the next write makes them
                with self._lock:  # an append now would make an index for its rows; none is running
                    if not table.count_rows():
                        self._fence()
                        indexes = table.list_indices()
                        for index in indexes:
                            table.drop_index(index.name)
                        if not indexes:  # none (another replica's purge dropped them): the delete would stay the newest
                            # version, which the removal of old versions keeps, with its filter (the user's id) in its
                            # transaction file and manifest; a delete of nothing commits one naming no one
                            table.delete("false")
                        self._indexed.discard(name)

    def _drop_old_versions(self, names: list[str], purged_at: float | None) -> None:
        """Remove the named tables' versions from before a purge, with every file only they hold:
        all but the newest (`purged_at` None), or those made before `purged_at` (unix seconds; the
        caller waited until every process on the store looks at a newer one). Under the write lock.
        Alone on the store, it also removes files no version names (`delete_unverified`), such as
        those of an append that a killed process wrote and never committed. With other processes
        (`lease` set) it does not: those files may be another process's write in flight, which would
        then commit a version naming files that are gone. No purge of another process can have lost
        to this one's meanwhile (they take turns under the lease), so no such file holds the rows
        deleted here; what a killed process left goes by Lance's own rule, once 7 days old."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # not `Table.optimize`, which would also compact and re-index here, under the write lock (store.versions)
            for name in names:
                older = timedelta(0) if purged_at is None else timedelta(seconds=max(0.0, time.time() - purged_at))
                self._fence()
                with self._on(name, OLD_VERSIONS):  # shown until a later removal succeeds, not the next append
                    remove_old_versions(self.tables[name], older, delete_unverified=self.lease is None)

    @staticmethod
    def _rewrite(table, name: str) -> None:
        """Rewrite every fragment with a deletion and rebuild the table `name`'s indexes (`_purge`, `_indexes`)."""
        # not `Table.optimize`, which has no `materialize_deletions_threshold` (lancedb 0.40): without 0.0,
        # a fragment under 10% deleted keeps the deleted rows in its data file
        compact_with_deletions(table)
        for column, config in _indexes(name):
            table.create_index(column, config=config, replace=True)

    def compact(self, keep_versions_for: timedelta = timedelta(minutes=5), every_table: bool = False) -> None:
        """Merge small fragments, fold new rows into the indexes and drop versions older than given
        (tables written since their last compaction, or all of them).

        Appends go on meanwhile: Lance commits an append and a compaction side by side. The users
        table takes upserts, which would conflict with a rewrite, so it is compacted under the
        write lock."""
        with self._maintenance():
            self.writes_since_compaction = 0
            for name, table in self.tables.items():
                if not (every_table or self._pending[name]) or not table.count_rows():
                    continue
                self._pending[name] = 0
                with self._on(name, "written"), self._lock if name == "users" else contextlib.nullcontext(), warnings.catch_warnings():
                    # keep_versions_for=0 only comes from delete_user, which holds every lock
                    warnings.simplefilter("ignore", UserWarning)
                    self._fence()
                    table.optimize(cleanup_older_than=keep_versions_for)
                self._ensure_indexes(name)
            if self._new_deletions >= 64:  # one small fragment per DELETE: merged now and then
                self._new_deletions = 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    # a chat of a replica looks its user up here (`deleted_after`): 18 ms per lookup in 100,000
                    # records without an index, 2.4 ms with (lancedb 0.40, one core); `optimize` folds new rows in
                    if not any(tuple(i.columns) == ("user_hash",) for i in self.deletions.list_indices()):
                        self.deletions.create_index("user_hash", config=BTree())
                    self._fence()
                    self.deletions.optimize(cleanup_older_than=keep_versions_for)
            if self._retraction_writes:  # retractions recorded or a user's rows of it deleted: merged, old versions gone
                self._retraction_writes = 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    self._fence()
                    self.retractions.optimize(cleanup_older_than=keep_versions_for)

    @property
    def cache_bytes(self) -> int:
        """What LanceDB's caches of this store hold now (at most the `cache_bytes` it was opened with)."""
        return self._session.size_bytes

    def stats(self) -> dict[str, int]:
        """Rows per table; a table that cannot be counted (damaged) is left out (and noted in `problems`)."""
        counts = {}
        for name, table in self.tables.items():
            with contextlib.suppress(StoreUnavailable), self._on(name, "read"):
                counts[name] = table.count_rows()
        return counts


_DELETION_FIELDS = tuple(f.name for f in msgspec.structs.fields(Deletion))


def _stamp_seconds(stamp) -> float:
    """A version's `timestamp` from `list_versions` (a datetime, or seconds) as unix seconds."""
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


def received_before(before: float) -> str:
    """A filter for preference rows the service received before `before` (unix seconds): by
    `received_at`, or by `created_at` for a row stored before that column was kept (null there; `made_before`)."""
    return f"(received_at < {float(before)!r} OR (received_at IS NULL AND {made_before(before)}))"


def made_before(before: float, now: float | None = None) -> str:
    """A filter for rows whose `created_at`, as `stand_in_received(created_at, now)` reads it, is before `before` (unix
    seconds): a time in seconds, or in milli-, micro- or nanoseconds an older version stored (past MAX_CREATED_AT,
    within the end of year 9999 in that unit), up to `now` (None: the clock's now), compared as its seconds, and one
    that means no time in any unit (negative, past that in nanoseconds, infinite or NaN) or a later one (a date still
    to come) as 0.0, before any DELETE. Compared as they are, such times would be dates past any DELETE, and a DELETE
    finished after the user came back (or that took them for back) would keep such a row of theirs."""
    latest = min(time.time() if now is None else float(now), MAX_CREATED_AT)
    floors = [("created_at >= 0", 1)] + [(f"created_at > {past!r}", per_second) for past, _, per_second in unit_ranges()]
    meant = [f"{floor} AND created_at <= {latest * per_second!r}" for floor, per_second in floors]  # a time up to now
    earlier = [f"({held} AND created_at < {float(before) * per_second!r})" for held, (_, per_second) in zip(meant, floors, strict=True)]
    no_time = f"isnan(created_at) OR NOT ({' OR '.join(f'({m})' for m in meant)})" if before > 0 else "false"  # 0.0 < before
    return f"({' OR '.join(earlier)} OR {no_time})"


def new_created_at() -> float:
    return time.time()
