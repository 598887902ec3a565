"""Moves acknowledged feedback from the log into the preferences table, with its embeddings.

A worker thread embeds the oldest pending records in batches (one encoder call over their distinct
texts: far cheaper per text than one call per feedback) and appends them in one LanceDB commit; each
batch takes the tenants' records in turn (`Ingestor._next_batch`), so one tenant's backlog of imports
keeps another's records waiting for at most one batch. Its embedding runs at a lower CPU
priority (nice) than the request threads, so under load the backlog grows instead of request latency;
what the request paths wait for (the commit into the table under the lock a DELETE takes, the hooks
that take a user's lock) runs at the priority of the thread that opened it (`Ingestor._run`). A reader that needs a user's history calls `flush_user` first: that
user's few pending rows are embedded and moved at once, so nothing acknowledged is ever missing
from a search or a refit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import msgspec
import numpy as np

from pluralign.data.record import Base
from pluralign.embed.base import Encoder
from pluralign.files import DECODE_ERRORS, append_durably, fsync_dir, write_atomic
from pluralign.store.claims import Claim, claim_of, earlier_claims, folder_of, named
from pluralign.store.dead_letter import DeadLetters
from pluralign.store.failures import StoreUnavailable
from pluralign.store.feedback_log import Entry, FeedbackLog
from pluralign.store.tables import PrefIdConflict, RowRefused, Store, StoredPreference, differs_but_time

log = logging.getLogger("pluralign.store")
# rows per worker batch at most (a record holding more goes alone): an import is one record of up to
# ~8,000 rows (1 MB), and a batch of 64 of them was one encoder call over 1.5M texts and one commit
# that other tenants' reads of their own pending rows (`flush_user`) waited behind
INGEST_BATCH_ROWS = 2048
ENCODE_CHUNK = 1024  # texts a batch is embedded by at a time, its rows checked still pending between (a DELETE drops them)
STORED_CLAIMS = "stored-claims"  # in the log's folder: a note a move, of the claims to remove once its rows are stored
DEAD_LETTER = "dead-letter"  # in the log's folder: the records set aside (`pluralign.store.dead_letter`)
SET_ASIDE_AFTER = 3  # failures of a record on its own (a row's error: ROW_ERRORS) before it is set aside
RETRY_S = 1.0  # the worker's pause after a failed batch, before it tries again; doubled after each failure in a row
MAX_RETRY_S = 5.0  # up to this (`_pause`): a store back after an outage is written to within 5 s
WORKER_LOOK_S = 0.1  # a flush waiting for the worker's lock looks this often whether its rows were moved meanwhile
PROBE_TEXT = "a probe of the encoder"  # embedded after the encoder refused texts: whether it refuses those only (`_embed`)


class TextRefused(ValueError):
    """The encoder refused a text of records (a ValueError or TypeError on it) while it embeds another text
    (`PROBE_TEXT`) at once, and again twice when that text is embedded alone: its content, the same on every try
    (`Ingestor._refusal`)."""


# a row's error, the same on every try: the store refusing a row's own content (`RowRefused`: a blank owner, a time or
# a vector that is not finite, a value Arrow cannot hold) or the encoder its text (`TextRefused`). Any other failure (a
# StoreUnavailable, an OSError, a ValueError of the store's that names no row, a bug) is the store's or the encoder's:
# retried with backoff (`_pause`), never set aside. Not any ValueError or TypeError: else a one-record batch in a
# quiet service met by a store's passing error three times would be set aside, a good record
ROW_ERRORS = (RowRefused, TextRefused)


# the fields `Store.add_preferences` checks on each row alone before any read or write (`tables._row_refused`)
OWN_CONTENT_FIELDS = frozenset({"tenant", "user_id", "created_at", "received_at"})


def _own_content(error: Exception) -> bool:
    """Whether `error` is the store refusing a row for its own content, a check of that row alone before any read or
    write (`RowRefused` naming its owner or a time: OWN_CONTENT_FIELDS). Not a vector (the encoder's output, which a
    broken model makes NaN for every text), nor a value Arrow cannot hold (`row`: a schema the release does not match
    fails every row so), nor a text the encoder refused (`TextRefused`, told by a probe)."""
    return isinstance(error, RowRefused) and error.field in OWN_CONTENT_FIELDS


def _by_texts(error: Exception) -> bool:
    """Whether `error` comes from a record's texts as the encoder embeds them: a text it refused (`TextRefused`), or a
    vector of one that is not finite (`RowRefused` naming a vector column). Which rows are at fault is then found by
    embedding the record's texts again (`Ingestor._texts_at_fault`), not by the store's look at each row
    (`Store.refused_rows`, which has no vector)."""
    return isinstance(error, TextRefused) or (isinstance(error, RowRefused) and error.field.endswith("_vec"))


def _text_hash(text: str) -> bytes:
    """sha256 of `text` (`Ingestor._refused_texts`: no text kept in the clear once its rows are gone)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _kind(error: Exception) -> tuple[str, str]:
    """What a probe of `Ingestor._theirs` tells apart: the error's type and, for a RowRefused, its kind of field (a
    vector's, an owner's or time's, or a value Arrow cannot hold)."""
    if not isinstance(error, RowRefused):
        return type(error).__name__, ""
    return "RowRefused", "vector" if error.field.endswith("_vec") else "own" if error.field in OWN_CONTENT_FIELDS else error.field


class StoredClaims(Base, frozen=True):
    """A move's note (`Ingestor._note_stored`): the claims of the rows it stored, {user folder: {id hash: the claim of
    the stored copy}} (`pluralign.store.claims.named`: hashes, no user id or pref_id in the clear)."""

    claims: dict[str, dict[str, Claim]]


_encode_note = msgspec.json.Encoder().encode
_decode_note = msgspec.json.Decoder(StoredClaims).decode


class _Closed(Exception):
    """The Ingestor was closed: the start's sweep of claims stops before its next user (`_sweep_stored_claims`), a look
    for the texts at fault before its next chunk (`Ingestor._texts_at_fault`, which a record no longer pending stops
    too)."""


_UNKNOWN = object()  # the rows at fault of a record could not be told (`Ingestor._faults`)


def _run_at(nice: int) -> None:
    """The calling thread runs at `nice` (Linux: a thread's nice value is its own; the request threads keep theirs).
    Raising it (a lower value) needs CAP_SYS_NICE or RLIMIT_NICE: without them the thread keeps its nice."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


def _own_nice() -> int | None:
    """The calling thread's nice value; None where the OS has none (`os.getpriority`: not on Windows)."""
    try:
        return os.getpriority(os.PRIO_PROCESS, 0)
    except (AttributeError, OSError):
        return None


def _threads_at(nice: int) -> list[int]:
    """The native ids of this process's threads running at `nice` (Linux: /proc/self/task; elsewhere none, where a
    thread has no nice of its own: `os.setpriority` of a native thread id is Linux's)."""
    try:
        tids = [int(name) for name in os.listdir("/proc/self/task")]
    except (OSError, ValueError):
        return []
    found = []
    for tid in tids:
        with contextlib.suppress(OSError):  # ended meanwhile
            if os.getpriority(os.PRIO_PROCESS, tid) == nice:
                found.append(tid)
    return found


def _raise_to(nice: int | None, tids: list[int]) -> None:
    """The threads `tids` run at `nice` from now on (the stopper's, which waits for them). Raising a thread's priority
    needs CAP_SYS_NICE or RLIMIT_NICE (root has them; a container's unprivileged user mostly not): without them a
    thread keeps its nice, and the stopper waits as long as it takes."""
    if nice is None:
        return
    for tid in tids:
        with contextlib.suppress(AttributeError, OSError):  # ended meanwhile, or not allowed
            os.setpriority(os.PRIO_PROCESS, tid, nice)


class _Lowered:
    """One daemon thread that runs the calls given to it (`run`), one at a time, after `begin` (which lowers its
    priority: `Ingestor._at_low_priority`). Daemon, unlike a ThreadPoolExecutor's, so an encoder call that does not
    return keeps no process from exiting."""

    def __init__(self, name: str, begin: Callable[[], None]):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, args=(begin,), daemon=True, name=name)
        self._thread.start()

    def run(self, fn: Callable, *args):
        """`fn(*args)` on this thread: its result, or its exception raised here."""
        done: Future = Future()
        self._calls.put((fn, args, done))
        return done.result()

    def close(self) -> None:
        """The thread ends after the call under way, if any."""
        self._calls.put(None)

    def _serve(self, begin: Callable[[], None]) -> None:
        begin()
        while (call := self._calls.get()) is not None:
            fn, args, done = call
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 (raised in the caller's thread, `run`)
                done.set_exception(exc)
            # not held while this thread waits for its next call: the call's rows and result (vectors by text)
            del call, fn, args, done


class Backlogged(Exception):
    """More of a user's rows wait in the feedback log than a reader moves itself (`Ingestor.flush_user`'s
    `at_most`): embedding them inside one request would hold it for minutes (6,000 imported rows took
    ~2 minutes on 2 cores at load 12, measured 4 Dec 2026)."""

    def __init__(self, rows: int, at_most: int):
        super().__init__(f"{rows} of the user's rows are still being stored (more than {at_most})")
        self.rows = rows
        self.at_most = at_most


class StillMoving(Exception):
    """`Ingestor.flush`'s deadline passed with `rows` acknowledged rows still waiting in the feedback log
    (what it moved by then stays moved; the worker goes on moving the rest)."""

    def __init__(self, rows: int):
        super().__init__(f"{rows} acknowledged feedback row{'s' * (rows != 1)} still being moved into the table")
        self.rows = rows


class _FolderMoves:
    """What the Ingestors of one feedback-log folder in this process share: the lock a move into the table
    holds from its check of what is pending to its commit."""

    def __init__(self):
        self.lock = threading.Lock()


_folders: weakref.WeakValueDictionary[str, _FolderMoves] = weakref.WeakValueDictionary()
_folders_lock = threading.Lock()


def _moves_of(folder) -> _FolderMoves:
    """One per folder, while an Ingestor of it (or its worker) lives: a log opened again on a folder whose
    closed log's worker is still in a store call (`Ingestor.close` gave up waiting) shares its lock."""
    with _folders_lock:
        key = os.path.realpath(folder)
        moves = _folders.get(key)
        if moves is None:
            moves = _folders[key] = _FolderMoves()
        return moves


Key = tuple[str, str, str]  # (tenant, user_id, pref_id)
SETTLE_ATTEMPTS = 3  # reads of ids stored twice after a commit (`Ingestor._one_content_each`) while a compaction moves rows


def keeps(copies: list[StoredPreference]) -> StoredPreference:
    """Of rows stored under one id with other content, the one kept: the earliest-received, then (received at the
    same instant) the least sha256 of its content (`pluralign.store.claims.claim_of`): the same on every replica."""
    return min(copies, key=lambda r: (r.received(), claim_of(r, stamped=False).content))


def split_held(entries: list[Entry], held: Mapping[Key, StoredPreference]) -> tuple[list[Entry], list[Entry], list[StoredPreference],
                                                                                     list[tuple[StoredPreference, str]]]:
    """(kept, done, again, refused) of `entries` against `held` (the rows the table holds, by key): `kept`, in their
    order, the entries left with a row to store, each holding only its rows of ids not held (the entry itself when
    all are; else a copy of it with the same `seq`, which `FeedbackLog.done` goes by); `done` the entries with none;
    `again` the rows held with the same content (`differs_but_time`: already stored); `refused` (row, the first field
    in which it differs) for the rows whose id is held with other content, left out. One pass with dict lookups.
    An entry any of whose ids is held does not go whole, its rows of new ids too: acknowledged rows would be lost
    (`split_stored`, 0.6 ms for 2,048 one-row entries half held; benchmarks/stored_elsewhere.py)."""
    kept: list[Entry] = []
    done: list[Entry] = []
    again: list[StoredPreference] = []
    refused: list[tuple[StoredPreference, str]] = []
    for entry in entries:
        left = []
        for r in entry.rows:
            stored = held.get((r.tenant, r.user_id, r.pref_id))
            if stored is None:
                left.append(r)
            elif (field := differs_but_time(stored, r)) is None:
                again.append(r)
            else:
                refused.append((r, field))
        if len(left) == len(entry.rows):
            kept.append(entry)
        elif left:
            kept.append(Entry(seq=entry.seq, segment=entry.segment, rows=left))
        else:
            done.append(entry)
    return kept, done, again, refused


class Ingestor:
    """Owns the move log -> table; `on_moved(rows)` is called after each batch is committed and has left the log.

    `before_done(rows)`, when given, is called with each batch's rows after their commit and before the log lets
    go of their records (`FeedbackLog.done`, which may remove their segment), under the move's lock: what a caller
    derives from moved rows and must not lose to a crash (a kill between the log letting go and `on_moved` would leave
    nothing naming them: the service's background refits of those users would be lost) is
    noted durably there. It should be quick (a file append); an exception is logged and the move goes on."""

    def __init__(
        self,
        feedback_log: FeedbackLog,
        store: Store,
        encoder: Encoder,
        batch: int = 64,
        batch_rows: int = INGEST_BATCH_ROWS,
        nice: int = 19,  # the lowest CPU priority: the request threads of this process come first
        on_moved: Callable[[list[StoredPreference]], None] | None = None,
        tries: int = SET_ASIDE_AFTER,  # failures of a record on its own before it is set aside (`_failed`)
        before_done: Callable[[list[StoredPreference]], None] | None = None,
    ):
        self.log = feedback_log
        self.store = store
        self.encoder = encoder
        self.batch = batch  # feedback records per worker batch
        self.batch_rows = batch_rows  # and rows per batch (`_bounded`)
        self.nice = nice
        self.on_moved = on_moved
        self.before_done = before_done
        # a record is appended to the table at most once: by this Ingestor, or another of the same folder in
        # this process (the log opened again while a closed one's worker was still in a store call)
        self._moves = _moves_of(feedback_log.folder)
        self._move = self._moves.lock
        # held by the worker over a batch's commit and its hooks (not its embedding: `_run`), by `flush` and `paused`
        self._worker = threading.Lock()
        # users whose rows stay in the log for now (`held`): replaced, never changed in place, under `_move`
        self._held: dict[tuple[str, str], int] = {}
        self._first_tenant: str | None = None  # whose records led the worker's last batch (`_next_batch`)
        self.moved = 0  # rows moved so far (for metrics and benchmarks)
        self.left_out = 0  # acknowledged rows left out so far: their id held with other content (`_left_out`, `_refused`)
        # records whose rows fail on their own (`_move_checked`) go there after `tries` failures: kept, not lost
        self.dead_letters = DeadLetters(Path(feedback_log.folder) / DEAD_LETTER)
        self.tries = tries
        self._failures: dict[int, int] = {}  # a record's `seq` -> its failures on its own so far (under `_move`)
        # the worker's: records of a batch each of which failed on its own (not counted: `_move_checked`), passed over by
        # its next batches until the store stores other rows (then counted) or nothing else waits (`_next_batch`)
        self._passed_over: dict[int, tuple[Entry, Exception]] = {}
        # sha256 of a text the encoder refused twice alone (`_refusal`) -> why, kept for the worker's batch (emptied at
        # the next, `_batch`): not embedded again by a reader's `_embed`, its rows at fault read off (`_read_off`)
        self._refused_texts: dict[bytes, str] = {}
        self.set_aside = 0  # rows set aside so far (for metrics)
        # when this Ingestor last committed rows into the table, per tenant and of any (`committed_at`)
        self._committed_at: dict[str, float] = {}
        self._committed_any = 0.0
        # the users (tenant, user_id) of the records the log held when opened: moved by the worker from its start (before
        # the caller may have hooked `on_moved` in), or found in the table already (a crash between the commit and the
        # log's update): whatever the caller derives from their rows may predate them
        self.replayed: frozenset[tuple[str, str]] = frozenset(e.key for e in feedback_log.pending.values())
        self._stop = threading.Event()
        self._stopper_nice: int | None = None  # the priority of the thread that stopped it when above `nice` (`stop`)
        # with replicas, the claims of stored rows (`pluralign.store.claims`): each move notes them in a file before the
        # log forgets the rows, and removes the file once they went (a kill between the two: the next start removes them)
        self._claims = store.claims
        self._notes = Path(feedback_log.folder) / STORED_CLAIMS
        self._notes_lock = threading.Lock()  # a note's removal (the drops' thread) against its rewrite (`forget_user`)
        # a reader's move (`flush_user`) leaves the removal to this thread: the claims are bookkeeping once rows are stored
        self._dropping = None if self._claims is None else ThreadPoolExecutor(1, thread_name_prefix="claims-drop")
        # shared without claims (gs://, az://, abfss://): each commit's ids read back (`_one_content_each`), a reader's
        # move's on this thread, not in the reader's request (one more read of the store: 15-20 ms at load 16 on a folder)
        self._settling = ThreadPoolExecutor(1, thread_name_prefix="ids-settle") if (
            store.sync_seconds is not None and self._claims is None) else None
        self._drop_already_moved()
        self._drop_left_notes()
        # once per store: what earlier releases left of stored rows' claims, on a thread of its own (on the drops'
        # thread, every removal of a move's claims would wait behind a sweep of every claimed user)
        self._sweeping = None if self._claims is None else threading.Thread(
            target=self._sweep_stored_claims, daemon=True, name="claims-sweep")
        if self._sweeping is not None:
            self._sweeping.start()
        # the worker's embedding, at `nice`; the worker's own thread (the commit, the hooks) keeps this thread's priority
        self._low = _Lowered("ingest-embed", self._at_low_priority)
        self._thread = threading.Thread(target=self._run, daemon=True, name="ingest")
        self._thread.start()

    def _drop_already_moved(self) -> None:
        """Replayed records whose rows reached the table before a crash (moved, but their segment
        was not yet deleted) are dropped, not moved twice."""
        replayed = list(self.log.pending.values())
        if not replayed:
            return
        if not self._move.acquire(blocking=False):  # an earlier open's worker is storing a batch: read the table after it
            log.warning("the feedback log %s was opened again while the worker of its earlier open in this process is "
                        "still storing a batch (a store call that has not returned); waiting for it, so that the batch is "
                        "not stored twice", self.log.folder)
            self._move.acquire()
        try:
            # held for their user: a pref_id is one user's (an export imported as another user keeps its ids)
            present = set(self.store.held_preferences([r for e in replayed for r in e.rows]))
            moved = [e for e in replayed if all((r.tenant, r.user_id, r.pref_id) in present for r in e.rows)]
            note = self._note_stored([r for e in moved for r in e.rows])
            if moved:  # stored before the crash, whose `before_done` may not have run: noted now, as the log lets go
                self._noted_before_done([r for e in moved for r in e.rows])
            self.log.done(moved)
            self._drop_retracted([e for e in replayed if e not in moved], present)
        finally:
            self._move.release()
        self._drop_claims(note)  # a crash between the commit and the claims' removal
        log.info("replayed %d pending feedback records from the log", len(self.log.pending))

    def _drop_retracted(self, replayed: list[Entry], present: set[tuple[str, str, str]]) -> None:
        """Of the replayed records not in the table whole, the rows a retraction took back after they were received
        (`Store.retracted_before`: through another replica, whose retraction could not rewrite this log) leave the log, from
        what is pending and from its files (`FeedbackLog.drop_rows`): moved again, a row taken back would come back."""
        if not replayed:
            return
        rows = [r for e in replayed for r in e.rows if (r.tenant, r.user_id, r.pref_id) not in present]
        before = self.store.retracted_before(rows)  # per key: a row of it sent again after its retraction stays (the user's new word)
        if not before:
            return
        try:
            gone = self.log.drop_rows(before)
        except StoreUnavailable as exc:  # no room to rewrite a segment: not pending all the same (the next open drops them again)
            log.error("replayed feedback rows taken back through another replica stay in the log's files for now: %s", exc)
            gone = sum(1 for r in rows if r.received() < before.get((r.tenant, r.user_id, r.pref_id), float("-inf")))
        if gone:
            log.info("dropped %d replayed feedback rows taken back through another replica", gone)
        self._pending_met({(r.tenant, r.user_id, r.pref_id) for r in rows
                           if r.received() < before.get((r.tenant, r.user_id, r.pref_id), float("-inf"))})

    def _not_retracted(self, entries: list[Entry]) -> list[Entry]:
        """`entries` without their rows a retraction took back after they were received (`Store.retracted_before`: with
        replicas, a user who took back through another replica a row still waiting here; that replica recorded it, the
        row pending), which leave the log, from what is pending and from its files (`FeedbackLog.drop_rows`); an entry
        left with none is done. One read of the store's `retractions` table (none recorded: a count). Runs under
        `_move`."""
        rows = [r for e in entries for r in e.rows]
        before = self.store.retracted_before(rows)
        if not before:
            return entries

        def taken(r: StoredPreference) -> bool:
            return r.received() < before.get((r.tenant, r.user_id, r.pref_id), float("-inf"))

        try:
            gone = self.log.drop_rows(before)
        except StoreUnavailable as exc:  # no room to rewrite a segment: not pending all the same (the next open drops them again)
            log.error("feedback rows taken back through another replica stay in the log's files for now: %s", exc)
            gone = sum(1 for r in rows if taken(r))
        if gone:
            log.info("dropped %d feedback rows taken back through another replica before they were stored", gone)
        self._pending_met({(r.tenant, r.user_id, r.pref_id) for r in rows if taken(r)})
        # `drop_rows` left a record its other rows (in place, before any rewrite of its files), or took it whole
        return [e for e in entries if self.log.is_pending(e)]

    def _pending_met(self, keys: set[tuple[str, str, str]]) -> None:
        """The pending retraction records of the rows `keys` just dropped (tenant, user_id, pref_id) no longer count
        toward the bounds on such records (`Store.pending_met`): their row came. A failure is logged (they count until
        they are PENDING_KEEP_S old, as they did) and the move goes on."""
        if not keys:
            return
        try:
            self.store.pending_met(keys)
        except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own commit conflict: the drop is done)
            log.warning("%d retractions through another replica whose rows came still count as pending: %s", len(keys), exc)

    def submit(self, rows: list[StoredPreference], received_at: float | None = None, bounded: bool = True) -> None:
        """Returns once the rows are durable in the log; the worker moves them later. `received_at`: their arrival
        time, kept (`FeedbackLog.append`); None: stamped by the log's writer. Raises TenantBacklog (nothing written)
        past the log's bound on one tenant's pending rows (`FeedbackLog.tenant_rows`), unless not `bounded` (copies of
        rows acknowledged already)."""
        self.log.append(rows, received_at, bounded)

    async def submit_async(self, rows: list[StoredPreference]) -> None:
        await self.log.append_async(rows)

    def flush_user(self, tenant: str, user_id: str, at_most: int | None = None) -> int:
        """Move the user's pending rows now (a reader is about to need them); returns how many.
        Raises Backlogged, moving nothing, when more than `at_most` rows of theirs wait (None: no
        limit): an import being stored, which the worker moves in batches meanwhile."""
        entries = [] if (tenant, user_id) in self._held else self.log.pending_for(tenant, user_id)
        if at_most is not None and (rows := sum(len(e.rows) for e in entries)) > at_most:
            raise Backlogged(rows, at_most)
        return self._move_checked(entries, reading=True)[0] if entries else 0

    def flush_some(self, tenant: str | None, at_most: int) -> int:
        """`flush_user` for every user of `tenant` (None: every tenant): their pending rows moved now, without
        waiting for the worker's batch; Backlogged, moving nothing, past `at_most` rows."""
        entries = self.log.oldest(at_most + 1, tenant, skip=self._held)  # a record holds one row at least
        if (rows := sum(len(e.rows) for e in entries)) > at_most:
            raise Backlogged(rows, at_most)
        return self._move_checked(entries, reading=True)[0] if entries else 0

    def committed_at(self, tenant: str | None = None) -> float:
        """When this Ingestor last committed rows of `tenant` (None: of any tenant) into the table: Unix seconds,
        taken after the commit; 0.0 for none. Set before those rows stop being pending, so once a `flush` returned
        (none of them pending) it is the time of their commit or later, whatever the `on_moved` hooks still do."""
        return self._committed_any if tenant is None else self._committed_at.get(tenant, 0.0)

    def pending_rows(self, tenant: str | None = None, at_most: int | None = None) -> int:
        """How many rows (of `tenant` only, when given) wait in the log to be moved; counting stops
        once past `at_most` (None: count them all), so asking "more than N?" stays cheap."""
        entries = self.log.oldest(len(self.log.pending) if at_most is None else at_most + 1, tenant)
        return sum(len(e.rows) for e in entries)

    def flush(self, tenant: str | None = None, deadline: float | None = None, until: threading.Event | None = None) -> int:
        """Move everything pending when called (of `tenant` only, when given), in the caller's
        thread (after the worker's commit under way, if any: not its embedding, which its commit's check of what is
        still pending makes moot); feedback acknowledged meanwhile is left to the
        worker, so a steady stream of it cannot keep the caller waiting. Returns how many rows moved; once the
        log is closed (the service stopping) none: what is pending stays in its files for the next start.

        `deadline` (`time.monotonic()` seconds; None: none): raises StillMoving once it passes, while
        waiting for the worker's batch or before a further batch (its own, or the other tenants' turn; also after batches
        whose records all failed on their own, which moved nothing), with rows still pending (none pending when the
        worker's lock is not had in time: 0, nothing to wait for). A
        batch it began (at most `batch_rows` rows: one encoder call and one commit) is not cut short, so
        the call may end that long after the deadline. A record whose rows fail on their own (a row's error:
        `_move_checked`) is passed over and stays pending, set aside after `tries` failures: the
        others are moved and the call returns (it does not raise that error at every call).

        With `tenant`, the other tenants' waiting rows move in turns with its own: between two of its batches, one
        batch of theirs (`_others_turn`), as the worker would take it. The worker waits for `_worker`, which the flush
        holds throughout: without the turns an audit of a tenant at its backlog bound (50,000 rows, minutes of
        embedding) would keep every other tenant's rows out of the table for as long. A flush of one tenant waiting for `_worker`
        returns once none of its tenant's rows waits (`_worker_unless_moved`): another flush's turns moved them (their
        `on_moved` hooks may still run); a flush of every tenant waits for `_worker`, and so for those hooks.

        `until` (an Event; the service stopping: `service.admin.services.Admin.stopping`) ends the call as a deadline
        passing does, at once: StillMoving with rows still pending, before a batch of its own: an audit's move going
        on through a stop would keep the service's stop waiting for it (the worker waits for `_worker`), and queue
        its audit after its request had been answered."""
        total = 0

        def stop_here(deadline_counts: bool) -> None:
            """StillMoving once `until` is set, or (`deadline_counts`) the deadline has passed."""
            if (until is not None and until.is_set()) or (deadline_counts and deadline is not None and time.monotonic() >= deadline):
                raise StillMoving(self.pending_rows(tenant))

        if not self._worker_unless_moved(tenant, deadline, until):
            return 0
        try:
            upto, failed = self.log.last_seq(), set()  # failed: the records whose rows failed here (`_move_checked`)
            turns = tenant is not None  # the other tenants' turns: none after one failed as a whole (`_others_turn`)
            while upto is not None and not self.log.closed and (entries := self._bounded(
                    [e for e in self.log.oldest(self.batch + len(failed), tenant, upto, self._held) if e.seq not in failed])):
                # the first batch is begun whatever the deadline; a further one not once it passed, whether the batches
                # before moved rows or failed on their own (records the store or the encoder refuses, batch after batch)
                stop_here(deadline_counts=bool(total or failed))
                if (total or failed) and turns:  # a batch of its own moved (or tried) already
                    turns = self._others_turn(tenant)
                    # and none of its own begun once the deadline passed during that turn: the call overruns it by one
                    # batch at most (theirs and one of its own would overrun it by two)
                    stop_here(deadline_counts=True)
                moved, failing = self._move_checked(entries)
                total += moved
                failed.update(e.seq for e, _ in failing)
        finally:
            self._worker.release()
        return total

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The worker moves nothing meanwhile (readers still move their own user's rows). Entered once a commit of the
        worker's under way and its hooks are done (its embedding is not waited for: the worker waits for the pause
        before it commits)."""
        with self._worker:
            yield

    @contextlib.contextmanager
    def held(self, tenant: str, user_id: str) -> Iterator[None]:
        """None of the user's pending rows is moved into the table meanwhile: they stay in the log, where
        `forget_user(before=...)` tells them apart by when they were received (a DELETE finished from its
        journal keeps what a returning user sent since it began, and its store step deletes every row of
        theirs in the table). Entered once a move under way has committed; other users' rows move as before,
        and the user's own reads (`flush_user`) read the table without them."""
        key = (tenant, user_id)
        with self._move:
            self._held = {**self._held, key: self._held.get(key, 0) + 1}
        try:
            yield
        finally:
            with self._move:
                held = dict(self._held)
                if held[key] == 1:
                    del held[key]
                else:
                    held[key] -= 1
                self._held = held

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        """Drop the user's pending rows (from memory and the log's files) and their rows set aside (the dead letters);
        none is moved afterwards. Returns how many rows went, pending or set aside (acknowledged rows, never stored: a
        DELETE counts them, so a DELETE of a user holding only rows set aside, whose profile and export are a 200,
        does not say 404). `before`: only rows received before it
        (`FeedbackLog.forget_user`). The notes of their stored rows' claims
        (`_note_stored`) forget those claims too: nothing of the user stays here (the DELETE removes the claims). The
        rows go whatever the notes' rewrite did: its OSError (a full disk) is raised once they went (skipping them, the
        worker would move the deleted user's rows into the table after their DELETE)."""
        return self.forget_users(tenant, [user_id], before)

    def forget_users(self, tenant: str, user_ids: list[str], before: float | None = None) -> int:
        """`forget_user` of each of `user_ids` at once: the claims' notes read once, each log segment holding any of
        them rewritten once (`FeedbackLog.forget_users`), the letters set aside read once. A tenant's removal forgets
        its users a batch at a time. Returns the rows dropped (pending or set aside), all together; raises as
        `forget_user`."""
        users = set(user_ids)
        with self._move:
            try:
                self._forget_noted({folder_of(tenant, u): before for u in users})
            except OSError:
                self.log.forget_users(tenant, users, before)  # its own failure, if any, raised with the notes' as context
                raise
            forgotten = self.log.forget_users(tenant, users, before)
            return forgotten + self.dead_letters.forget_users(tenant, users, before)  # the records set aside of theirs too

    def _bounded(self, entries: list[Entry]) -> list[Entry]:
        """The first of `entries` (oldest first) up to `batch_rows` rows in all; at least the first."""
        rows = 0
        for n, entry in enumerate(entries):
            rows += len(entry.rows)
            if n and rows > self.batch_rows:
                return entries[:n]
        return entries

    def _worker_unless_moved(self, tenant: str | None, deadline: float | None, until: threading.Event | None = None) -> bool:
        """`_worker` taken (True) for a flush of `tenant` (None: every tenant), or False, not taken, once none of its
        rows waits (a row leaves `pending` only once committed: the worker, or another flush's turns, `_others_turn`,
        moved them), looked at every WORKER_LOOK_S while waiting. Raises StillMoving, not taken, once `deadline` passes
        or `until` is set with rows still pending (False with none). A flush of every tenant waits for `_worker` itself
        (False only once `deadline` passed or `until` was set, nothing pending): the holder's `on_moved` hooks (a batch's
        refits queued) have run when it returns, as `Runtime.wait_for_background` needs (it waits for every tenant's
        rows, so another flush's turns end its wait no sooner), not as soon as nothing is pending, before those
        hooks."""
        while True:
            wait = WORKER_LOOK_S if deadline is None else min(WORKER_LOOK_S, max(0.0, deadline - time.monotonic()))
            if self._worker.acquire(timeout=wait):
                return True
            rows = self.pending_rows(tenant)
            if tenant is not None and not rows:
                return False
            if (deadline is not None and time.monotonic() >= deadline) or (until is not None and until.is_set()):
                if rows:
                    raise StillMoving(rows)
                return False

    def _others_turn(self, tenant: str) -> bool:
        """One batch of the worker's (`_next_batch`) of the tenants other than `tenant`, moved in the caller's thread,
        which holds `_worker` (a flush of `tenant`): what the worker would have moved meanwhile. Its records that
        failed on their own are passed over or counted as the worker's are (`_pass_over`). A failure of the batch as a
        whole (the store's or the encoder's, on their texts) is logged, not raised: its rows stay pending for the worker,
        which tries them again after its pause, and the flush goes on with its own, giving no further turn (False; else
        True): another tenant's failing record must not fail the audited tenant's audit at every try."""
        entries = self._next_batch(but=tenant)
        if not entries:
            return True
        try:
            moved, failed = self._move_checked(entries)
        except Exception:  # theirs to retry (the worker's backoff): a failure of the store itself meets the flush's own batch
            log.exception("moving other tenants' feedback in an audit's turn failed (the store's or the encoder's failure, not "
                          "a row's: its rows stay in the log, and the worker tries them again)")
            return False
        self._pass_over(entries, moved, failed)
        return True

    def _next_batch(self, but: str | None = None) -> list[Entry]:
        """The worker's next batch (`_bounded`): the pending records of the tenants in turn, each tenant's
        oldest first, the first tenant one after the last batch's first (by name, wrapping round). A tenant's
        backlog (imports of thousands of rows, each a batch of its own) no longer keeps another tenant's
        feedback waiting until all of it is moved: that waits for at most one batch of each other tenant's.
        `but`: a tenant whose records are left out (a flush of its own is moving them: `_others_turn`)."""
        passed = self._passed_over
        queues = self.log.oldest_per_tenant(self.batch + len(passed), skip=self._held)
        queues.pop(but, None)
        if passed:  # those the last batches passed over (`_pass_over`), unless nothing else waits: then tried again
            queues = {t: kept for t, entries in queues.items() if (kept := [e for e in entries if e.seq not in passed])}
            if not queues:
                self._passed_over = {}
                return self._next_batch(but)
        if not queues:
            return []
        tenants = sorted(queues)
        start = next((i for i, t in enumerate(tenants) if self._first_tenant is not None and t > self._first_tenant), 0)
        order = tenants[start:] + tenants[:start]
        self._first_tenant = order[0]
        taken = [queues[t][i] for i in range(self.batch) for t in order if i < len(queues[t])]
        return self._bounded(taken[: self.batch])

    def _move_entries(self, entries: list[Entry], reading: bool = False, vectors: dict[str, np.ndarray] | None = None) -> int:
        """Moves `entries` into the table; returns how many rows. `reading`: a reader's move (`flush_user`), which
        leaves the removal of the rows' claims to the drops' thread (on S3 ~14 ms a row: 7 s for 500 rows, kept out of
        the reader's request). `vectors`: their texts' (`_embed`), embedded already (the worker's,
        at `nice`, or `_move_checked`'s); the texts they lack are embedded here, in the caller's thread, but those the
        encoder refused (`_embed`): a record holding one raises TextRefused, before anything is stored."""
        vectors = self._embed(entries, vectors)  # the slow part, outside the lock (nothing left to embed, mostly)
        zero = np.zeros(self.encoder.dim, np.float32)
        notes: list[tuple[Path | None, dict[str, dict[str, Claim]]]] = []
        with self._move:
            if self.log.closed:  # stopped meanwhile: the batch stays in the log's files, for the next open
                return 0
            # not moved or forgotten meanwhile, nor of a user held in the log (`held`)
            entries = [e for e in entries if self.log.is_pending(e) and e.key not in self._held]
            if self.store.sync_seconds is not None:  # with replicas: rows another replica stored go, their claims noted
                entries, notes = self._not_stored_elsewhere(entries)
                entries = self._not_retracted(entries)
            again_before = self.store.appends_made_again["preferences"]  # a commit made again meanwhile: `_made_again`
            while True:
                rows = [r for e in entries for r in e.rows]
                if not rows:
                    break
                self._check_embedded(rows, vectors)
                prompt, chosen, rejected = (np.stack([vectors.get(getattr(r, name), zero) for r in rows]) for name in ("prompt", "chosen", "rejected"))  # (N, d)
                try:
                    self.store.add_preferences(rows, prompt, chosen, rejected)
                    break
                except PrefIdConflict as exc:  # left in the log it would stop every batch behind it
                    entries = self._left_out(entries, exc)
            made_again = self.store.appends_made_again["preferences"] != again_before
            if rows and self._settling is not None and not reading:
                self._one_content_each(rows, made_again)
            if rows:
                notes += self._note_stored(rows)
                # stamped before the rows leave the log's pending ones: a `flush` that finds them no longer pending
                # reads a time after their commit (the hooks, which run later, may take seconds: a compaction)
                now = time.time()
                self._committed_at = {**self._committed_at, **dict.fromkeys({r.tenant for r in rows}, now)}
                self._committed_any = now
                self._noted_before_done(rows)
                self.log.done(entries)
                self.moved += len(rows)
        self._drop_claims(notes, background=reading)
        if not rows:
            return 0
        if self._settling is not None and reading:
            self._settle_later(rows, made_again)
        if self.on_moved is not None:
            try:
                self.on_moved(rows)
            except Exception:
                log.exception("on_moved hook failed")
        return len(rows)

    def _noted_before_done(self, rows: list[StoredPreference]) -> None:
        """`before_done(rows)` (the class docstring), its failure logged: the rows are stored, so the move goes on."""
        if self.before_done is None:
            return
        try:
            self.before_done(rows)
        except Exception:
            log.exception("before_done hook failed")

    def _note_stored(self, stored: list[StoredPreference]) -> list[tuple[Path | None, dict[str, dict[str, Claim]]]]:
        """With claims (replicas), notes the claims of `stored` (rows now in the table: committed here, or found stored
        by another replica) in a file of `stored-claims/` in the log's folder, before the log forgets the rows: a process
        killed after that and before the claims went (`_drop_claims`) leaves the note, which the next start drops
        (`_drop_left_notes`; else such claims would stay for good, a file or object each). Of one id's copies
        the latest-received (the time the table keeps). The note is on disk when this returns: its bytes and its name
        fsynced (`append_durably`, as the feedback log's files), so a power loss after the log forgot the rows keeps it
        (unfsynced, the log's forgetting could reach the disk and the note not, the claims then left for good). Returns [(the note, its claims by name)], or [] (no claims, no rows, or no note). A note
        that cannot be written (a full disk) is logged and its claims removed here, before the log forgets the rows (a
        stop before then leaves the rows in the log, moved or dropped again at the next start; left to the drops' thread
        without a note, a stop before it got to them would leave them for good); one whose
        removal then fails (the store refusing) stays until a row of that id is moved again or the user is deleted,
        holding its id for the content the table holds. Under `_move`."""
        if self._claims is None or not stored:
            return []
        by_user: dict[tuple[str, str], dict[str, Claim]] = {}
        copies: dict[tuple[str, str, str | None], StoredPreference] = {}  # the copy each claim is of
        for row in stored:
            held = by_user.setdefault((row.tenant, row.user_id), {})
            claim = claim_of(row, stamped=False)
            if row.pref_id not in held or held[row.pref_id].received_at < claim.received_at:
                held[row.pref_id] = claim
                copies[(row.tenant, row.user_id, row.pref_id)] = row
        folders = named(by_user)
        # and the claims an earlier release made of them (acknowledged before an upgrade, moved by this release), whose
        # content is another (`earlier_claims`): dropped as these are, not noted (else kept until the
        # user was deleted)
        earlier: list[tuple[Path | None, dict[str, dict[str, Claim]]]] = [
            (None, form) for form in earlier_claims((copies[(tenant, user_id, pref_id)], claim)
                                                    for (tenant, user_id), held in by_user.items()
                                                    for pref_id, claim in held.items())]
        path = self._notes / f"{uuid.uuid4().hex}.json"
        try:
            append_durably(path, _encode_note(StoredClaims(folders)))  # a kill mid-write: before `done`, the rows still pending
        except OSError as exc:  # after the commit: the rows must still leave the log (the move must not fail)
            log.warning("the note of the pref_id claims of %d stored row(s) could not be written (%s): they are removed "
                        "now, without one", len(stored), exc)
            with contextlib.suppress(OSError):  # a part written (no room left): nothing of it stays
                path.unlink(missing_ok=True)
            self._drop_noted(None, folders)
            return earlier
        return [(path, folders), *earlier]

    def _drop_claims(self, notes: list[tuple[Path | None, dict[str, dict[str, Claim]]]], background: bool = False) -> None:
        """The noted claims go (`PrefIdClaims.drop_named`: only a claim of that row received no later than its copy
        here), then their note. Each user's claims are listed once, the users at once. A claim that cannot be
        removed is logged and its note left (the next start tries again): meanwhile it holds its id for the same
        content only, which the table holds anyway. `background`: on the drops' thread, not the caller's."""
        for note in notes:
            if not background:
                self._drop_noted(*note)
                continue
            try:
                self._dropping.submit(self._drop_noted, *note)
            except RuntimeError:  # closed meanwhile (`close`): the note stays, for the next start
                pass

    def _drop_noted(self, path: Path | None, folders: Mapping[str, Mapping[str, Claim]]) -> None:
        try:
            self._claims.drop_named(folders)  # the users' claims listed at once (on S3 a LIST each)
        except Exception as exc:  # noqa: BLE001 (left: the next start, the next move of the id, or a DELETE removes it)
            log.warning("pref_id claims of stored rows of %d user(s) were not all removed (%s): each takes only the "
                        "content the table holds; %s", len(folders), exc,
                        "the next start tries again" if path is not None else "not noted: a DELETE of the user or a move of the id again removes it")
            return
        if path is not None:  # None: not noted (`_note_stored`)
            with self._notes_lock:
                path.unlink(missing_ok=True)

    def _drop_left_notes(self) -> None:
        """The notes an earlier run left (killed before their claims went, or their removal failed): their claims go
        on the drops' thread. A note cut short by a kill mid-write was written before its rows left the log (they are
        moved again, noted again): removed, and so is a rewrite (`_forget_noted`) a kill cut short before its rename
        (the note itself is still whole: kept, the temp file would stay for good)."""
        if self._claims is None or not self._notes.is_dir():
            return
        for path in self._notes.iterdir():  # a rewrite's temporary file (`write_atomic`'s ".<note>.<random>"; *.tmp before)
            if path.name.startswith(".") or path.suffix == ".tmp":
                path.unlink(missing_ok=True)
        for path in sorted(self._notes.glob("*.json")):
            try:
                folders = _decode_note(path.read_bytes()).claims
            except (OSError, *DECODE_ERRORS):
                path.unlink(missing_ok=True)
                continue
            self._dropping.submit(self._drop_noted, path, folders)

    def _sweep_stored_claims(self) -> None:
        """`PrefIdClaims.sweep_stored` (on its own thread, at start, at the worker's priority): logged, never raised;
        not swept, the next start tries again, as when the Ingestor is closed first (the users not read by then are
        not read). Each user's rows are read from the table without their vectors and without the histories cache
        (`Store.stored_rows`; not `preferences_for`, which would load each claimed user's history, vectors and
        all, into the bounded cache, evicting the users being served)."""
        self._at_low_priority()

        def stored(tenant: str, user_id: str) -> dict[str, Claim]:
            if self._stop.is_set():
                raise _Closed
            return {r.pref_id: claim_of(r, stamped=False) for r in self.store.stored_rows(tenant, user_id)}

        try:
            gone = self._claims.sweep_stored(self.store.preference_owners, stored)
        except _Closed:
            log.info("the sweep of the pref_id claims earlier releases left of stored rows stopped with the service: the "
                     "next start sweeps again")
            return
        except Exception as exc:  # noqa: BLE001 (a claim left holds its id for the content the table holds)
            log.warning("the pref_id claims earlier releases left of stored rows were not all removed (%s): the next "
                        "start tries again", exc)
            return
        if gone:
            log.info("removed %d pref_id claims of stored rows that earlier releases left", gone)

    def forget_noted(self, folders: Mapping[str, float | None]) -> None:
        """The notes of stored rows' claims (`_note_stored`) no longer name the claims of the users whose claims'
        folders (`pluralign.store.claims.folder_of`: the hash their deletion records name them by) are `folders`'
        keys, received before its value (None: all): another replica's DELETE of users this replica's log no
        longer holds a record of (`service.deletions.apply_deletions`), so a note left by a removal that failed does not
        keep naming them until the next start."""
        if self._claims is None or not folders or not self._notes.is_dir():  # no note: the mover is not waited for
            return
        with self._move:
            self._forget_noted(folders)

    def _forget_noted(self, forgotten: Mapping[str, float | None]) -> None:
        """`forget_noted`. Under `_move`."""
        if self._claims is None or not forgotten or not self._notes.is_dir():
            return
        removed = False
        with self._notes_lock:
            for path in self._notes.glob("*.json"):
                try:
                    folders = dict(_decode_note(path.read_bytes()).claims)
                except (OSError, *DECODE_ERRORS):
                    continue
                if not (named_here := forgotten.keys() & folders.keys()):
                    continue
                for folder in named_here:
                    before = forgotten[folder]
                    kept = {h: c for h, c in folders.pop(folder).items() if before is not None and c.received_at >= before}
                    if kept:
                        folders[folder] = kept
                if not folders:
                    path.unlink(missing_ok=True)
                    removed = True
                    continue
                write_atomic(path, _encode_note(StoredClaims(folders)))  # whole, on disk, its name too
            if removed:  # the notes removed here stay removed after a power loss (and those the drops' thread removed)
                fsync_dir(self._notes)

    def claims_settled(self) -> None:
        """Returns once the start's sweep (`_sweep_stored_claims`) and the removals of stored rows' claims handed to the
        drops' thread so far are done (at once once closed: those not begun stay noted for the next start), and, on a
        store shared without claims, the read-backs of readers' moves handed to the settling thread (`_settle_later`)."""
        if self._sweeping is not None:
            self._sweeping.join()
        if self._dropping is not None:
            with contextlib.suppress(RuntimeError):
                self._dropping.submit(lambda: None).result()
        if self._settling is not None:  # and the read-backs of readers' moves (`_settle_later`)
            with contextlib.suppress(RuntimeError):
                self._settling.submit(lambda: None).result()

    def _left_out(self, entries: list[Entry], conflict: PrefIdConflict) -> list[Entry]:
        """`entries` without the row `conflict` names (its index in their rows), left out here, unstored: a row under a
        `pref_id` the user's rows hold with other content, or an earlier row of `entries` holds (the routes refuse one,
        a 409, its check and log append under the tenant's import lock, and with replicas the id's claim on the store,
        `pluralign.store.claims`; imports sent to two replicas of a store without claims can both pass it, and the row
        of the other replica can be committed after this mover's look, `_not_stored_elsewhere`). Its entry's other
        rows stay: the whole entry is not left out. Runs under `_move`."""
        offsets = np.cumsum([len(e.rows) for e in entries])
        n = int(np.searchsorted(offsets, conflict.index, side="right"))
        bad = entries[n]
        at = conflict.index - (int(offsets[n - 1]) if n else 0)
        log.error("an acknowledged row was left out (`pref_id` %r, received at %.3f): %s", conflict.pref_id,
                  bad.rows[at].received(), conflict)
        self.left_out += 1
        rest = bad.rows[:at] + bad.rows[at + 1:]
        if not rest:
            self.log.done([bad])
        return [e if e is not bad else Entry(seq=bad.seq, segment=bad.segment, rows=rest) for e in entries if e is not bad or rest]

    def _not_stored_elsewhere(self, entries: list[Entry]) -> tuple[list[Entry], list[tuple[Path, dict[str, dict[str, Claim]]]]]:
        """`entries` without their rows whose ids the store's newest version holds (`split_held`), and the note of the
        claims of those it holds with the same content (`_note_stored`, written before the entries left with nothing
        to store are done here). Another replica stored them: a request sent with `Idempotency-Key` whose retry reached
        the other one (which cannot see this log) has the same ids and rows, its time stamped anew; such rows count as
        received again (`Store.received_again`: a DELETE begun before this copy came keeps them). A row held with
        other content (two imports of one id sent to two replicas of a store without claims, `gs://`, `az://`,
        `abfss://`, both acknowledged; or a request of other rows sent with one key to two replicas, on one a 422) is
        left out and logged (`_refused`); the entry's other rows are stored, not left out with
        it. The common case (no id held)
        costs one read of ids (`Store.held_pref_ids`); a read of the held rows' text follows only when one is held
        (`Store.newest_rows`). Runs under `_move`."""
        rows = [r for e in entries for r in e.rows]
        ids = self.store.held_pref_ids(rows)
        if not ids:
            return entries, []
        held = self._held_once(self.store.newest_rows([r for r in rows if (r.tenant, r.user_id, r.pref_id) in ids]))
        if not held:  # the ids were another user's
            return entries, []
        kept, done, again, refused = split_held(entries, held)
        by_user: dict[tuple[str, str], list[str]] = {}
        for r in again:
            by_user.setdefault((r.tenant, r.user_id), []).append(r.pref_id)
        for (tenant, user_id), same in by_user.items():  # received again (a DELETE begun before this copy came keeps them)
            self.store.received_again(tenant, user_id, same)
        self._refused(refused, held)
        notes = self._note_stored(again)
        self.log.done(done)
        return kept, notes

    def _held_once(self, found: list[StoredPreference]) -> dict[Key, StoredPreference]:
        """`found` (`Store.newest_rows`) by key, one row each: of an id held more than once, the row kept (`keeps`).
        On a store shared without claims an id held twice with other content (a read-back that failed, or a replica
        stopped between its commit and its read-back: `_one_content_each`) is settled here first, the later-received
        row deleted (else both rows would stay, and a copy of the kept one would be compared with whichever row
        the read gave last, left out as "stored with another" content). Under `_move`."""
        copies: dict[Key, list[StoredPreference]] = {}
        for row in found:
            copies.setdefault((row.tenant, row.user_id, row.pref_id), []).append(row)
        twice = [rows[0] for rows in copies.values() if len(rows) > 1]
        if twice and self._settling is not None:
            self._one_content_each(twice)
        return {key: rows[0] if len(rows) == 1 else keeps(rows) for key, rows in copies.items()}

    def _refused(self, refused: list[tuple[StoredPreference, str]], held: Mapping[Key, StoredPreference]) -> None:
        """Logs (an error each) and counts (`left_out`) the acknowledged rows left out because the table holds their
        id with other content (`refused`: (row, the first field that differs), `held`: the stored rows by key)."""
        for row, field in refused:
            stored = held[(row.tenant, row.user_id, row.pref_id)]
            log.error("an acknowledged row was left out: `pref_id` %r of user %r (tenant %r), received at %.3f, is stored "
                      "with another `%s` (received at %.3f), by another replica: a pref_id names one preference, and two "
                      "requests giving it with other content were acknowledged through two replicas", row.pref_id, row.user_id,
                      row.tenant, row.received(), field, stored.received())
        self.left_out += len(refused)

    def _one_content_each(self, rows: list[StoredPreference], made_again: bool = False) -> None:
        """Right after the commit of `rows` on a store shared without claims (`gs://`, `az://`, `abfss://`): where
        the newest version holds one of their ids twice with other content (another replica's mover committed it in
        the same instant, both having looked before either commit: `_not_stored_elsewhere`), the row received later
        is deleted (`keeps`: the same choice on every replica, whichever of them finds it; the one committing second
        always does, its read coming after both commits), logged and counted (`left_out`) by the replica that
        deletes it, so both rows do not stay under the id for good. Two copies of the same content stay (a
        copy, not a loss). Costs one read of the batch's keys (`Store.held_twice`); failures are logged, never
        raised (the rows are committed: they must still leave the log). `made_again`: a commit of this process was made
        again meanwhile (`Store.appends_made_again`), which appends only the ids the table lacks: `_made_again` reads
        back what it left out. Runs under `_move`."""
        if made_again:
            self._made_again(rows)
        for _ in range(SETTLE_ATTEMPTS):  # a compaction meanwhile moves the row ids read: read again
            try:
                doubled = self.store.held_twice(rows)
                deleted = left = 0
                for copies in doubled.values():
                    kept = keeps([row for _, row in copies])
                    for row_id, row in copies:
                        if (field := differs_but_time(kept, row)) is None:
                            continue
                        left += 1
                        if self.store.delete_copy(row, row_id):
                            deleted += 1
                            log.error("an acknowledged row was left out: `pref_id` %r of user %r (tenant %r), received "
                                      "at %.3f, was stored by two replicas at once with another `%s` (received at %.3f, "
                                      "kept): a pref_id names one preference, the earliest-received is kept", row.pref_id,
                                      row.user_id, row.tenant, row.received(), field, kept.received())
                self.left_out += deleted
            except Exception as exc:  # noqa: BLE001 (the rows are committed; the next move of the id looks again: `_held_once`)
                log.warning("the read-back of %d committed row(s) for ids stored twice failed (%s)", len(rows), exc)
                return
            if deleted == left:
                return
        log.warning("rows stored twice under one pref_id were not all deleted after %d reads (compactions meanwhile)",
                    SETTLE_ATTEMPTS)

    def _made_again(self, rows: list[StoredPreference]) -> None:
        """Logs and counts (`_refused`) the rows of a commit made again (`Store._commit_rows`: it appends only the ids
        the table lacks then) that the table holds under their id with other content only: another replica stored
        them between this mover's look and its commit, and the commit left them out (not without a line,
        uncounted). One read of the rows' text (`Store.newest_rows`), only after a commit made again."""
        try:
            held: dict[Key, list[StoredPreference]] = {}
            for row in self.store.newest_rows(rows):
                held.setdefault((row.tenant, row.user_id, row.pref_id), []).append(row)
        except Exception as exc:  # noqa: BLE001 (the rows are committed: they must still leave the log)
            log.warning("the read-back of %d row(s) of a commit made again failed (%s)", len(rows), exc)
            return
        lost = [(r, field) for r in rows if (copies := held.get((r.tenant, r.user_id, r.pref_id)))
                and all(differs_but_time(h, r) is not None for h in copies) and (field := differs_but_time(copies[0], r))]
        self._refused(lost, {key: copies[0] for key, copies in held.items()})

    def _settle_later(self, rows: list[StoredPreference], made_again: bool = False) -> None:
        """`_one_content_each` of a reader's move, on the settling thread (under `_move`, as the worker's own)."""

        def settle() -> None:
            with self._move:
                self._one_content_each(rows, made_again)

        try:
            self._settling.submit(settle)
        except RuntimeError:  # closed meanwhile (`close`): the next move of these ids looks again
            log.warning("the read-back of %d committed row(s) for ids stored twice was not made: the service is stopping",
                        len(rows))

    def _embed(self, entries: list[Entry], known: Mapping[str, np.ndarray] | None = None,
               until: threading.Event | None = None) -> dict[str, np.ndarray]:
        """The vectors of the texts of `entries`, ENCODE_CHUNK texts at a time: the texts of entries no longer
        pending (a DELETE of their user dropped them) are not embedded past the chunk under way, so an
        import of a user deleted meanwhile does not keep the worker (and every tenant's feedback behind it)
        busy for minutes. `known`: vectors of texts embedded already, taken from it (only those of `entries`).
        `until` (the worker's stop): once set, no further chunk, and the vectors are not all there (the worker commits
        nothing once stopped; a stop does not wait for every chunk of the batch, at nice 19). A text the
        encoder refuses (`_refusal`, noted in `_refused_texts`) has no vector, and the other texts of its chunk and
        of the chunks after it do: the move raises TextRefused for its records only (`_check_embedded`). A refusal ending the pass with no
        vector at all would have the worker's move embed the whole batch again at normal priority (its halves again
        each), the record at fault once more to find its rows."""
        vectors: dict[str, np.ndarray] = {}
        if known:
            texts = {t for e in entries for r in e.rows for t in (r.prompt, r.chosen, r.rejected) if t}
            vectors = {t: v for t, v in known.items() if t in texts}
        refused: set[str] = set()  # refused during this call (`_refused_texts` may be emptied meanwhile: `_batch`)
        while True:
            rows = [r for e in entries if self.log.is_pending(e) for r in e.rows]
            texts = [t for t in dict.fromkeys(t for r in rows for t in (r.prompt, r.chosen, r.rejected) if t)
                     if t not in vectors and t not in refused]
            if self._refused_texts and (known_refused := {t for t in texts if _text_hash(t) in self._refused_texts}):
                refused |= known_refused  # refused already (a reader's move, after the worker's): not embedded again
                texts = [t for t in texts if t not in refused]
            if not texts or (until is not None and until.is_set()):
                return vectors
            chunk = texts[:ENCODE_CHUNK]
            try:
                vectors.update(zip(chunk, self.encoder.encode(chunk), strict=True))
            except (ValueError, TypeError) as exc:
                again, refusing = self._refusal(chunk, exc, until)
                vectors.update(again)
                refused.update(refusing)  # a text neither (its vector not finite) is embedded again at the next turn

    def _check_embedded(self, rows: list[StoredPreference], vectors: Mapping[str, np.ndarray]) -> None:
        """TextRefused where a text of `rows` has no vector in `vectors` (`_embed`'s: one the encoder refused)."""
        if missing := next((t for r in rows for t in (r.prompt, r.chosen, r.rejected) if t and t not in vectors), None):
            why = self._refused_texts.get(_text_hash(missing), "the encoder refused it")
            raise TextRefused(f"the encoder refused a text of these records, again when embedded alone: {why}")

    def _refusal(self, chunk: list[str], error: Exception,
                 until: threading.Event | None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """After the encoder failed on `chunk` with `error` (a ValueError or TypeError): (the vectors of the chunk's
        texts, embedded again meanwhile, {a text refused again when embedded alone: why}), the texts refused noted in
        `_refused_texts` (`_texts_at_fault`: their content, the same on every try); where none is, the failure passed,
        and the vectors are returned where they all were. Raises `error` where they were not (the encoder failing
        still: retried, never counted as the records'), or as `_texts_at_fault`; a text refused does not lose the
        vectors of the other texts. A refusal does not count as the texts' own merely because a probe (`PROBE_TEXT`)
        embedded after it passed: an encoder failing now and then (a proxy's 502 page failing a remote encoder's JSON
        decode) would set good records aside within three batches."""
        if not self._encoder_works():
            raise error  # the encoder's failure, not the texts' (no text embedded again: it may be down): retried
        again: dict[str, np.ndarray] = {}
        try:
            found = self._texts_at_fault(chunk, until, embedded=again)
        except _Closed:
            raise error from None  # stopped: nothing counted, the batch stays in the log
        refused = {t: why for t, why in found.items() if why.startswith("the encoder refused")}
        if refused:
            self._refused_texts.update({_text_hash(t): why for t, why in refused.items()})
            return again, refused
        if len(again) < len(chunk):
            raise error
        return again, {}

    def _encoder_works(self) -> bool:
        """Whether the encoder embeds `PROBE_TEXT`, to a finite vector (after it refused texts, or embedded them as NaN:
        were they at fault, or is it failing?), on one of two tries: one failure may be the encoder's passing one, as
        a text's refusal counts only when it is refused twice alone (`_texts_at_fault`). With one try, an encoder
        failing every other call made each try of a record holding a text it refuses two calls (the refusal, the
        probe's failure), and every try after that one met the probe's failure: the record was never set aside and
        its tenant's feedback behind it waited (a try embeds only the texts it must: `_batch`)."""
        for _ in range(2):
            try:
                if np.isfinite(np.asarray(self.encoder.encode([PROBE_TEXT]), np.float32)).all():
                    return True
            except Exception:  # noqa: BLE001, S112 (its failure, whatever it is: the texts it refused are not set aside for it)
                continue
        return False

    def _store_takes_a_row(self) -> bool:
        """Whether the store's columns hold a plain row (`PROBE_TEXT` in each text, times of now): after rows that
        Arrow could not hold, each on its own (`RowRefused` of field `row`), were they at fault, or does the table's
        schema fail every row? No read or write (`Store.refused_rows`)."""
        now = time.time()
        probe = StoredPreference(tenant="probe", user_id="probe", pref_id="probe", prompt=PROBE_TEXT, chosen=PROBE_TEXT,
                                 rejected=PROBE_TEXT, kind="comparison", created_at=now, received_at=now)
        try:
            return not self.store.refused_rows([probe])
        except Exception:  # noqa: BLE001 (the store's failure: the rows are not set aside for it)
            return False

    def _theirs(self, error: Exception) -> bool:
        """Whether `error`, met by every record of a batch each on its own (`_pass_over`), is each record's own fault
        rather than the store's or the encoder's, which would fail every row so: a row's own content (`_own_content`);
        a text the encoder refused while it embedded `PROBE_TEXT`, and refused again alone (`TextRefused`: told when
        raised); a vector not
        finite while `PROBE_TEXT`'s is (`_encoder_works`); a value Arrow cannot hold while it holds a plain row
        (`_store_takes_a_row`). With the first alone, records refused for vectors or Arrow values, alone in a quiet
        log at their tenant's backlog bound, would hold it refused (503 `feedback_backlog`) for good."""
        if _own_content(error) or isinstance(error, TextRefused):
            return True
        if isinstance(error, RowRefused):
            return self._encoder_works() if error.field.endswith("_vec") else self._store_takes_a_row()
        return False

    def _texts_at_fault(self, texts: list[str], until: threading.Event | None = None,
                        of: Entry | None = None, embedded: dict[str, np.ndarray] | None = None) -> dict[str, str]:
        """{text: why} for the texts of `texts` (distinct) the encoder refuses (a ValueError or TypeError, twice when
        embedded alone: once may be the encoder's passing failure) or embeds as a vector that is not finite: embedded
        ENCODE_CHUNK at a time, a chunk that fails halved, and so on down to single texts (one bad text of a chunk of n
        costs ~2n texts embedded). `embedded`, where given, gains the finite vectors embedded meanwhile. Raises ValueError when every text failed while
        `PROBE_TEXT` fails too (the encoder's failure, not theirs), `_Closed` once `until` is set (the worker's stop) or
        the record `of` (whose texts they are) is no longer pending (a DELETE of its user dropped it: as `_embed`, no
        chunk after the one under way: a deleted import's chunks are not embedded again), and what else the encoder raises."""
        found: dict[str, str] = {}

        def look(part: list[str]) -> None:
            if (until is not None and until.is_set()) or (of is not None and self.log.pending.get(of.seq) is None):
                raise _Closed
            try:
                vectors = np.asarray(self.encoder.encode(part), np.float32)
            except (ValueError, TypeError) as exc:
                if len(part) > 1:
                    half = len(part) // 2
                    look(part[:half])
                    look(part[half:])
                    return
                try:  # refused alone: once more, so that a passing failure of the encoder's is not taken for the text's
                    vectors = np.asarray(self.encoder.encode(part), np.float32)
                except (ValueError, TypeError) as again:
                    found[part[0]] = f"the encoder refused it, twice alone ({type(exc).__name__}: {exc}; {type(again).__name__}: {again})"
                    return
            for text, vector in zip(part, vectors, strict=True):
                if not np.isfinite(vector).all():
                    found[text] = "the encoder embedded it as a vector that is not finite (NaN or inf)"
                elif embedded is not None:
                    embedded[text] = vector

        for start in range(0, len(texts), ENCODE_CHUNK):
            look(texts[start : start + ENCODE_CHUNK])
        if len(found) == len(texts) and not self._encoder_works():
            raise ValueError("the encoder fails on every text, a probe's too: not the record's texts")
        return found

    def _read_off(self, texts: list[str], vectors: Mapping[str, np.ndarray] | None) -> dict[str, str]:
        """`_texts_at_fault`, read off what the move (which failed for them) found: `vectors`, its own, and the texts
        the encoder refused (`_refused_texts`, found by `_embed` of this batch), where those two hold every text of
        `texts`; no text embedded again ({} where they do not, or where none of them is at fault): embedding every text of
        the record again for a vector not finite or a text refused would take 24,000 for an 8,000-row import, minutes
        while the worker held `_worker`. Raises ValueError as
        `_texts_at_fault` (every text at fault, and the probe too)."""
        if vectors is None:
            return {}
        found: dict[str, str] = {}
        for t in texts:
            if (vector := vectors.get(t)) is None:
                if (why := self._refused_texts.get(_text_hash(t))) is None:
                    return {}
                found[t] = why
            elif not np.isfinite(vector).all():
                found[t] = "the encoder embedded it as a vector that is not finite (NaN or inf)"
        if found and len(found) == len(texts) and not self._encoder_works():
            raise ValueError("the encoder fails on every text, a probe's too: not the record's texts")
        return found

    def _rows_at_fault(self, entry: Entry, error: Exception,
                       vectors: Mapping[str, np.ndarray] | None = None) -> dict[int, Exception]:
        """{i: the error of row i} of `entry`'s rows at fault for `error` (a row's error it failed with `tries` times):
        those the store refuses on their own content (`Store.refused_rows`), and where `error` comes from its texts
        (`_by_texts`) those a text of which the encoder refuses or embeds as NaN (`_texts_at_fault`, in the caller's
        thread: the worker's own holds `_worker` then, which a flush waits for, so not at `nice` (a flush would wait on a
        nice-19 thread: a priority inversion), as the rest of a failed batch's embedding; for a vector not finite read off `vectors`, the move's own,
        where they hold the record's texts, and for a text refused read off `_refused_texts`: `_read_off`). Raises as
        `_texts_at_fault`."""
        refused = self.store.refused_rows(entry.rows) if len(entry.rows) > 1 else {}
        if not _by_texts(error) or len(entry.rows) == 1:
            return refused
        texts = list(dict.fromkeys(t for i, r in enumerate(entry.rows) if i not in refused
                                   for t in (r.prompt, r.chosen, r.rejected) if t))
        bad = self._read_off(texts, vectors)
        if not bad:
            bad = self._texts_at_fault(texts, self._stop, entry)
        for i, r in enumerate(entry.rows):
            name = next((name for name in ("prompt", "chosen", "rejected") if getattr(r, name) in bad), None)
            if i not in refused and name is not None:
                refused[i] = TextRefused(f"`{name}` of row {i} (pref_id {r.pref_id!r}): {bad[getattr(r, name)]}")
        return refused

    def _at_low_priority(self) -> None:
        """The calling thread (the worker's, the sweep's, as it begins) runs at `nice`; one the stop came to first runs
        at the stopper's priority (`stop`): a stop right after the start (a start undone, a SIGTERM during it) may
        raise the thread's priority before the thread lowers it, and lowered after, the sweep would list the table's
        users at nice 19 while the stop waited for it."""
        _run_at(self.nice)
        if self._stop.is_set() and self._stopper_nice is not None:  # else the stop's raise (after its `_stop`) comes after
            _run_at(self._stopper_nice)

    def _run(self) -> None:
        """The worker: takes a batch (`_next_batch`), has it embedded at `nice` (`_low`) holding nothing a request
        waits for, then commits it and runs the hooks under `_worker` at this thread's priority, the one of the thread
        that opened the Ingestor. Run at nice 19 holding `_worker` over the whole batch, it would make an
        audit's or an export's `flush` wait for a nice-19 encoder call (~1.5% of a busy core), and a DELETE
        (`forget_user`, `held`) for a nice-19 commit; raising a thread's priority needs CAP_SYS_NICE, which the
        shipped containers lack. A `flush` meanwhile moves the batch's rows itself; the commit then stores only what
        is still pending."""
        given_up: dict[str, np.ndarray] = {}  # the vectors of a batch given up for a flush or a pause (`_batch`)
        failing = 0  # batches failed in a row by the store or the encoder (`_pause`)
        last, said = None, 0.0  # the last storage failure logged (what, how: not its words, which name a new file each try), and when
        while not self._stop.is_set():
            if not self.log.wait(timeout=0.5, until=self._stop):
                # nothing pending (a reader moved the batch, a DELETE dropped it): no batch to try again, no record to
                # pass over; neither held, texts, rows and all
                given_up = {}
                if self._passed_over:
                    self._passed_over = {}
                continue
            failed = False
            try:
                with self._worker:  # a flush or a pause under way: the batch is taken after it (not embedded twice)
                    pass
                entries = [] if self._stop.is_set() else self._next_batch()
                given_up = self._batch(entries, given_up) if entries else {}
                if not entries:  # only rows of users held in the log (`held`) wait: look again shortly
                    self._stop.wait(0.05)
                failing = 0
            except StoreUnavailable as exc:  # no room, a damaged table: said once a minute, not with every retry
                if (exc.name, exc.action, exc.problem) != last or time.monotonic() - said > 60:
                    log.error("moving feedback from the log into the table failed: %s; the rows stay in the log "
                              "(acknowledged, replayed at a restart) and are moved once the table can be written", exc)
                    last, said = (exc.name, exc.action, exc.problem), time.monotonic()
                failed = True
            except Exception:  # the records stay pending (and durable), none set aside for it: tried again after a pause
                log.exception("moving feedback from the log failed (the store's or the encoder's failure, not a row's: "
                              "its rows stay in the log and are tried again in %.3g s)", self._pause_s(failing + 1))
                failed = True
            # not held while this thread waits for the next batch, nor during the pause after a failed one: its rows, a
            # DELETE's user's too (the pause comes once the error is handled: its traceback's frames held the batch)
            entries = []
            if failed:  # the failed try's vectors are gone with it; those it was given, of an earlier batch, go too
                given_up = {}
                failing = self._pause(failing)

    @staticmethod
    def _pause_s(failing: int) -> float:
        """The worker's pause after `failing` batches failed in a row: RETRY_S, doubled each time, at most MAX_RETRY_S."""
        return min(MAX_RETRY_S, RETRY_S * 2 ** min(failing - 1, 32))

    def _pause(self, failing: int) -> int:
        """The worker's pause after one more failed batch (`_pause_s`, ended by a stop); returns the failures in a row."""
        failing += 1
        self._stop.wait(self._pause_s(failing))
        return failing

    def _batch(self, entries: list[Entry], known: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The worker's batch `entries`: embedded at `nice` (`known`: vectors of its texts embedded already), then
        committed, unless a flush or a pause holds `_worker` by then: the batch is given up (a flush moved its rows, a
        pause wants none moved) and taken anew after it; returns its vectors, for that batch ({} once committed, or
        stopped meanwhile: the batch stays in the log), or once its commit left records that failed on their own, the
        finite vectors of the texts of their users' records still pending, for the next batch (whose try of them then
        embeds only the texts it must: one refused, tried again, not the whole record again, an import's thousands
        of texts, to refuse one, nor the move of its rows logged again once the rest was set aside)."""
        self._refused_texts = {}  # found again for this batch: a text refused before may be embedded now
        vectors = self._low.run(self._embed, entries, known, self._stop)  # but the texts refused (`_check_embedded`)
        if not self._worker.acquire(blocking=False):
            with self._worker:
                return vectors
        try:
            moved, failed = (0, []) if self._stop.is_set() else self._move_checked(entries, vectors)
            self._pass_over(entries, moved, failed, vectors)
        finally:
            self._worker.release()
        if not failed:
            return {}
        self._stop.wait(RETRY_S)  # tried again after a pause (the rest of the batch is moved)
        # of their users' records pending: those tried again, and the rows of one set aside in part logged again (not
        # embedded again either); a user deleted meanwhile has none
        pending = [e for key in {entry.key for entry, _ in failed} for e in self.log.pending_for(*key)]
        texts = {t for entry in pending for r in entry.rows for t in (r.prompt, r.chosen, r.rejected)}
        return {t: v for t, v in vectors.items() if t in texts and np.isfinite(v).all()}

    def _pass_over(self, entries: list[Entry], moved: int, failed: list[tuple[Entry, Exception]],
                   vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """After a worker's batch `entries`: where each of its records failed on its own (`_move_checked` counts none of
        them: maybe not theirs), the next batches pass them over (`_next_batch`), so that the records behind them move;
        once the store has stored rows of a later batch, their failures were theirs: counted (`_failed`), and they are
        tried again. Those whose error a probe shows to be theirs (`_theirs`: their own content, a vector not finite
        while the probe's is, a value Arrow cannot hold while it holds a plain row, a text refused) are counted at once
        instead, so the worker does not take the same batch for ever, and a tenant whose oldest `batch` records
        the store refused (a deployment with one tenant: every tenant) still has its feedback stored."""
        if len(failed) == len(entries) > 1:
            # theirs whatever the store's state: counted now, not only once other feedback was stored: a tenant's
            # refused records alone in the log, filling its backlog bound (`FeedbackLog.tenant_rows`) so that none of
            # its feedback could be, would hold it refused for good; so would those refused for a vector or an Arrow
            # value without a probe (`_theirs`, one probe a kind of error: `_kind`)
            theirs = {kind: self._theirs(error) for kind, error in {_kind(error): error for _, error in failed}.items()}
            own = [(entry, error) for entry, error in failed if theirs[_kind(error)]]
            if own:
                self._failed(own, vectors)
            self._passed_over = {**self._passed_over, **{entry.seq: (entry, error) for entry, error in failed
                                                          if not theirs[_kind(error)]}}
        elif moved and self._passed_over:
            passed, self._passed_over = list(self._passed_over.values()), {}
            self._failed(passed)

    def _move_checked(self, entries: list[Entry], vectors: dict[str, np.ndarray] | None = None,
                      reading: bool = False) -> tuple[int, list[tuple[Entry, Exception]]]:
        """`_move_entries`; where it raises a row's error (ROW_ERRORS), `entries` moved in halves, and so on down to
        single records (`_halves`): every record that can be stored is, and those that fail on their own are
        counted (`_failed`), set aside after `tries` failures each, so one record whose rows the store refuses (a blank
        owner, a non-finite time: a damaged or hand-edited log, an older release's) does not fail every batch for
        ever, every tenant's feedback waiting behind it. Returns (rows moved, [(a record that failed, its
        error)])."""
        vectors = self._embed(entries) if vectors is None else vectors  # once, outside the lock: not again by each half
        try:
            return self._move_entries(entries, reading, vectors), []
        except ROW_ERRORS as exc:
            moved, failed = self._halves(entries, vectors, reading, exc)
        if len(failed) == len(entries) > 1:  # every record fails, each on its own: not theirs (a schema, a bug)
            log.error("moving feedback failed for each of %d records on its own (%s: %s); they stay in the log and are "
                      "tried again", len(entries), type(failed[0][1]).__name__, failed[0][1])
        else:
            self._failed(failed, vectors)
        return moved, failed

    def _halves(self, entries: list[Entry], vectors: dict[str, np.ndarray] | None, reading: bool,
                error: Exception) -> tuple[int, list[tuple[Entry, Exception]]]:
        """`entries`, which failed together with `error`, moved in halves, each failing half halved again: (rows
        moved, [(a record that failed on its own, its error)])."""
        if len(entries) == 1:
            return 0, [(entries[0], error)]
        moved, failed = 0, []
        half = len(entries) // 2
        for part in (entries[:half], entries[half:]):
            try:
                moved += self._move_entries(part, reading, vectors)
            except ROW_ERRORS as exc:
                more, fails = self._halves(part, vectors, reading, exc)
                moved, failed = moved + more, failed + fails
        return moved, failed

    def _failed(self, failed: list[tuple[Entry, Exception]], vectors: Mapping[str, np.ndarray] | None = None) -> None:
        """Counts each record's failure on its own; one that failed `tries` times is set aside: written to the dead
        letters (`pluralign.store.dead_letter`, on disk) and then dropped from the log, logged (its tenant and the
        letter's name: no user id), counted (`set_aside`). A letter that cannot be written leaves the record in the
        log, tried again. The rows at fault of a record its failure sets aside are found first (`_rows_at_fault`: an
        encoder's look at its texts takes seconds for an import), before `_move`, which readers and DELETEs wait for.
        `vectors`: those of their texts the move that failed had (the worker's), read for a vector not finite."""
        faults = {entry.seq: self._faults(entry, error, vectors) for entry, error in failed
                  if self._failures.get(entry.seq, 0) + 1 >= self.tries}
        with self._move:
            aside: dict[int, tuple[Entry, int]] = {}  # seq -> (a record set aside, its rows logged again)
            try:
                for entry, error in failed:
                    if self.log.pending.get(entry.seq) is None:  # moved or forgotten meanwhile (a copy of it: the same seq)
                        continue
                    tries = self._failures[entry.seq] = self._failures.get(entry.seq, 0) + 1
                    if tries < self.tries:
                        log.warning("a feedback record of tenant %r failed on its own (try %d of %d): %s: %s", entry.key[0],
                                    tries, self.tries, type(error).__name__, error)
                        continue
                    found = faults.get(entry.seq)
                    if found is None:  # its count reached `tries` meanwhile (a reader's move): looked at under `_move`
                        found = self._faults(entry, error, vectors)
                    if found is not _UNKNOWN and (staying := self._set_aside(entry, error, tries, found)) is not None:
                        aside[entry.seq] = (entry, staying)
            finally:
                self._drop_set_aside(aside)
            if len(self._failures) > 4 * self.batch:  # of records moved or forgotten since
                self._failures = {seq: n for seq, n in self._failures.items() if self.log.pending.get(seq) is not None}

    def _faults(self, entry: Entry, error: Exception,
                vectors: Mapping[str, np.ndarray] | None = None) -> dict[int, Exception] | object:
        """`_rows_at_fault`, or _UNKNOWN where they could not be told (the encoder failing on every text, a stop, a
        failure of the store's): the record is then not set aside this time, tried again."""
        try:
            return self._rows_at_fault(entry, error, vectors)
        except _Closed:
            return _UNKNOWN
        except Exception as exc:  # noqa: BLE001 (not the record's: it stays in the log)
            log.warning("the rows at fault of a feedback record of tenant %r could not be told (%s: %s): it stays in the "
                        "log and is tried again", entry.key[0], type(exc).__name__, exc)
            return _UNKNOWN

    def _drop_set_aside(self, aside: Mapping[int, tuple[Entry, int]]) -> None:
        """The records set aside (`_set_aside`, their letters written) dropped from the log: from what is pending and
        from its files, each segment rewritten once (`FeedbackLog.set_aside`), so no later start replays them and sets
        them aside again. One that cannot be cut from its file (no room) is dropped from what is pending all the same:
        the next start sets it aside again, as after a kill. `aside`: seq -> (record, its rows logged again as a record
        of their own, which have not left the log: `FeedbackLog.set_aside`'s `staying`)."""
        if not aside:
            return
        try:
            self.log.set_aside([entry for entry, _ in aside.values()], {seq: n for seq, (_, n) in aside.items()})
        except OSError as exc:
            log.error("%d feedback record(s) set aside could not be cut from the feedback log's files (%s): the next start "
                      "sets them aside again", len(aside), exc)

    def _set_aside(self, entry: Entry, error: Exception, tries: int, refused: Mapping[int, Exception]) -> int | None:
        """`entry`, failed `tries` times on its own with `error`, set aside (`_failed`): only its rows at fault (`refused`:
        those the store refuses on their own content, or a text of which the encoder refuses or embeds as NaN) where
        they are some but not all, the others put back in the log as a
        record of their own (received when they were) and moved as any; else all of them. The letter is written (with
        the rows' positions in the record: an import's, its rows in the file's order) before the rest is logged and
        before the log forgets the record: a kill between finds the record pending again, set aside again as the same
        letter, and its rows moved twice are stored once. One bad row of an 8,000-row import, or one text the encoder
        refused or embedded as NaN, does not set the whole import aside. `refused`: the
        rows at fault (`_rows_at_fault`), by position. Returns how many of its rows were logged again as a record of their
        own (0: set aside whole), None where it was not set aside (the caller then drops it from the log:
        `FeedbackLog.set_aside`, once for all the records of a call). Under `_move`."""
        bad = sorted(refused) if 0 < len(refused) < len(entry.rows) else list(range(len(entry.rows)))
        words = f"{type(error).__name__}: {error}" if len(bad) == len(entry.rows) else "; ".join(
            f"{type(refused[i]).__name__}: {refused[i]}" for i in bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
        try:
            name = self.dead_letters.put([entry.rows[i] for i in bad], words, tries, time.time(),
                                         row_numbers=[i + 1 for i in bad] if len(bad) < len(entry.rows) else None)
            if len(bad) < len(entry.rows):
                kept = set(bad)
                received = entry.rows[0].received_at
                self.log.append([r for i, r in enumerate(entry.rows) if i not in kept],
                                received if received is not None and np.isfinite(received) else None, bounded=False)
        except (OSError, StoreUnavailable) as exc:  # the letter, or the rest's record, not written: tried again
            log.error("a feedback record that failed %d times could not be set aside (%s): it stays in the log", tries, exc)
            return None
        del self._failures[entry.seq]
        self.set_aside += len(bad)
        log.error("%d of the %d row(s) of a feedback record of tenant %r failed %d times on their own and were set aside as "
                  "dead letter %s (kept: an admin lists it, puts it back or discards it)%s: %s", len(bad), len(entry.rows),
                  entry.key[0], tries, name, "" if len(bad) == len(entry.rows) else "; the record's other rows are stored",
                  words)
        return len(entry.rows) - len(bad)

    def requeue(self, name: str) -> int:
        """Puts the dead letter `name` back in the log (as one record, received when it first was, where that time is
        finite), then removes it; returns its rows. KeyError: no such letter. A kill between the two leaves both (the
        rows moved twice are one: an id stored with the same content is not stored again). Under `_move`, as a
        DELETE's `forget_user`: else a DELETE of the letter's user between the read and the append would forget
        the letter and the log's rows, and the append then put the deleted user's rows back in the log."""
        with self._move:
            letter = self.dead_letters.read(name)
            received = letter.rows[0].received_at if letter.rows else None
            self.log.append(list(letter.rows), received if received is not None and np.isfinite(received) else None,
                            bounded=False)  # acknowledged already: not refused for its tenant's backlog
            self.dead_letters.discard(name)
        return len(letter.rows)

    def stop(self) -> None:
        """The worker takes no further batch (pending rows stay in the log); an idle one stops waiting. The batch
        under way and the start's sweep of claims go on at the caller's priority, not at `nice` (where the OS lets
        this process raise a thread's: `_raise_to`): the caller (`close`, the service's stop) waits for them, and a
        nice-19 thread on cores busy with other work got ~1.5% of one (a stop waited for a batch of an import past
        15 s, and once killed -9 the process took over 10 s more to exit). So do the threads they started,
        born at `nice` (every thread of the process at `nice`: the tokenizer's pool the worker's first encode makes,
        which would otherwise keep nice 19, and the batch's work on them with it)."""
        stopper = _own_nice()
        # set before `_stop`: a thread that sees the stop finds it (`_at_low_priority`). None: nothing to raise (a stopper
        # at `nice` or below it lowers no thread of the process)
        self._stopper_nice = stopper if stopper is not None and stopper < self.nice else None
        self._stop.set()
        self.log.wake()
        # the worker, the sweep and what they started (one not yet lowered raises itself: `_at_low_priority`)
        _raise_to(self._stopper_nice, _threads_at(self.nice))

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker, waiting at most `timeout` seconds for its batch, then close the log. A worker
        still in a store call then leaves the closed log alone (`FeedbackLog.done`): its batch stays in the
        log's files, acknowledged, and the next start drops what of it reached the table."""
        self.stop()
        if self._dropping is not None:  # drops not begun stay noted, for the next start
            self._dropping.shutdown(wait=False, cancel_futures=True)
        if self._settling is not None:
            self._settling.shutdown(wait=False, cancel_futures=True)
        began = time.monotonic()
        self._thread.join(timeout=timeout)
        self._low.close()  # after the worker's embedding under way, if any
        if self._sweeping is not None:  # stops before its next user: the next start sweeps again
            self._sweeping.join(timeout=max(0.0, timeout - (time.monotonic() - began)))
        if self._thread.is_alive():
            log.warning("the feedback worker is still moving a batch after %g s (a store call that has not returned); "
                        "closing the log without it: the batch stays in the log and is replayed at the next start", timeout)
        self.log.close()
