"""A durable, group-committed log of feedback rows that wait for their embeddings.

Feedback must be acknowledged only once it is on disk, but embedding its texts (MiniLM) costs tens
of milliseconds of CPU per text, and one LanceDB commit per request costs milliseconds more. So a
feedback's rows are first appended here as one record. One writer thread writes everything queued
since its last round with one write + fdatasync (group commit: an fsync costs ~4 ms here however
much it carries), then wakes every writer of the round: threads blocked in `append`, and asyncio
callers of `append_async` with one `call_soon_threadsafe` per event loop and round, so a request
on the event loop costs no thread hand-off. An `Ingestor` then embeds pending records in batches
and moves them into the preferences table.

Each row's `received_at` is stamped by the writer, just before the round's write: when the row
reached the log (its durability one write and fdatasync later), not when its request built it. A
request waiting on the log (a round behind a large import, a rewrite of another user's segments) is
thus received after a DELETE that began meanwhile, whose cut-off is "received before it began".
Each append's rows are encoded by its caller (a worker thread for `append_async`'s large ones), outside
the log's lock, with a placeholder stamp whose 8 bytes the writer overwrites: under the lock it only
stamps, writes and syncs, so a round behind a large import waits for its write, not its encoding.

Records live in numbered segment files; a segment is deleted once none of its records is pending.
At open, the segments left are replayed (a torn record at a segment's end, from a crash mid-write,
was never acknowledged and is skipped; a whole one this version cannot read, a later version's, stops
the open and its file stays: `LaterVersionRecord`). Forgetting a user rewrites every segment that ever held one
of their records, so a deleted user's text does not stay on disk here either. What it forgets is first noted,
durably, in FORGOTTEN (the user by hash, the cut-off, the last segment it covers), and the note goes once the
rewrite is done: a rewrite that failed (no room) or a kill before it leaves the note, and the replay at the next
open honours it (the records it names are not pending again, and their segments are rewritten then): rows that left the pending
queue only in memory would be moved into the table by the next start.

Frame: payload length and CRC-32 (little-endian uint32 each), then the msgpack list of rows.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from pluralign.files import DECODE_ERRORS, fsync_dir, write_atomic
from pluralign.store.failures import REWRITTEN, Problems, StoreUnavailable, TenantBacklog, unavailable
from pluralign.store.tables import StoredPreference

FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_STAMP = struct.Struct(">d")  # a msgpack float 64's bytes
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[StoredPreference]).decode

UserKey = tuple[str, str]  # (tenant, user_id)
FORGOTTEN = "forgotten.json"  # in the log's folder: the forgets whose segments may not be rewritten yet (`Forgotten`)
ENCODE_INLINE_ROWS = 64  # `append_async` encodes a record of more rows in a worker thread (~0.5 us a row)
# bytes (their msgpack encoding, ~ what they hold in memory) a tenant's waiting rows may take per row of its bound
# (`tenant_rows`): rows of long texts (3 texts of 20,000 characters: up to 240 KB a row) count by their size, so
# the bound of 50,000 rows holds ~200 MB of a tenant's rows, not 12 GB of huge ones
ROW_BYTES = 4096


@dataclass(eq=False)
class Entry:
    """One acknowledged feedback: its rows (one user's) and the segment holding them."""

    seq: int
    segment: int
    rows: list[StoredPreference]
    nbytes: int = 0  # the rows' msgpack encoding, as the log holds them: what the tenant's bound counts of their size

    @property
    def key(self) -> UserKey:
        return self.rows[0].tenant, self.rows[0].user_id


def _add(counts: dict[str, int], tenant: str, n: int) -> None:
    """`counts[tenant]` changed by `n`, the tenant dropped once at 0 (a tenant with nothing waiting holds no entry)."""
    left = counts.get(tenant, 0) + n
    if left > 0:
        counts[tenant] = left
    else:
        counts.pop(tenant, None)


# the end of each row's msgpack encoding: `received_at` (StoredPreference's last field) and a float 64, whose 8
# bytes (big-endian) the writer overwrites with the round's stamp (`_Ticket.stamped`)
_RECEIVED_AT_TAIL = msgspec.msgpack.encode("received_at") + b"\xcb"


def _check_tail() -> None:
    row = StoredPreference(tenant="t", user_id="u", pref_id="p", prompt="", chosen="", rejected="", kind="comparison",
                           created_at=0.0, received_at=1.5)
    if _encode(row)[-8 - len(_RECEIVED_AT_TAIL) :] != _RECEIVED_AT_TAIL + _STAMP.pack(1.5):  # a field added after it
        raise ImportError("pluralign.store.feedback_log: StoredPreference's msgpack encoding no longer ends with received_at")


_check_tail()
_PLACEHOLDER = np.frombuffer(_RECEIVED_AT_TAIL + _STAMP.pack(0.0), np.uint8)


def _placeholder_ends(payload: bytes) -> np.ndarray:
    """Where each `received_at` 0.0 (its key and 8 bytes, `_PLACEHOLDER`) ends in a msgpack `payload` (no two can
    overlap: its first byte occurs in it once)."""
    data = np.frombuffer(payload, np.uint8)
    at = np.flatnonzero(data[: len(data) - len(_PLACEHOLDER) + 1] == _PLACEHOLDER[0])
    for k in range(1, len(_PLACEHOLDER)):
        at = at[data[at + k] == _PLACEHOLDER[k]]
    return at + len(_PLACEHOLDER)


@dataclass(eq=False)
class _Ticket:
    """One append's rows, encoded by its caller (outside the log's lock) with a placeholder `received_at`: the
    writer only writes the round's stamp into the copies and the payload (`stamped`) before the write."""

    rows: list[StoredPreference]  # the caller's rows copied; stamped with `received_at` by the writer
    payload: bytes  # their msgpack list, as `frame` encodes it, each `received_at` 0.0
    stamps: np.ndarray  # (rows * 8,) the offsets in `payload` of each row's received_at's 8 bytes
    future: asyncio.Future | None = None  # set for asyncio callers
    received: float | None = None  # the caller's arrival time, kept (`FeedbackLog.append`); None: the round's stamp
    frame: bytes = b""  # the record as written (the writer's)
    entry: Entry | None = None
    done: bool = False
    error: BaseException | None = None

    @classmethod
    def of(cls, rows: list[StoredPreference], future: asyncio.Future | None = None, received: float | None = None) -> _Ticket:
        """Copy and encode `rows` (~0.5 us a row): the caller's thread's work, not the writer's."""
        copies = [msgspec.structs.replace(r, received_at=0.0) for r in rows]
        payload = _encode(copies)
        ends = _placeholder_ends(payload)
        if len(ends) != len(copies):  # the placeholder's bytes elsewhere too (none seen: UTF-8 forbids them in a text)
            parts = [_encode(r) for r in copies]
            payload = _encode([msgspec.Raw(p) for p in parts])
            ends = np.cumsum([len(p) for p in parts]) + (len(payload) - sum(len(p) for p in parts))
        return cls(copies, payload, (ends[:, None] - 8 + np.arange(8)).ravel(), future, received)

    def stamped(self, received: float) -> bytes:
        """The record's frame, its rows' `received_at` now `received` (in the copies too): what `frame`
        encodes of them, without encoding them again."""
        for r in self.rows:
            r.received_at = received
        payload = bytearray(self.payload)
        np.frombuffer(payload, np.uint8)[self.stamps] = np.tile(np.frombuffer(_STAMP.pack(received), np.uint8), len(self.rows))
        return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _settle(tickets: list[_Ticket]) -> None:
    """On the tickets' event loop: hand each asyncio caller its entry (or the write's error)."""
    for t in tickets:
        if t.future is not None and not t.future.done():
            if t.error is not None:
                t.future.set_exception(t.error)
            else:
                t.future.set_result(t.entry)


def _settle_in_their_loops(batch: list[_Ticket]) -> None:
    """Wake the coroutines awaiting `batch`'s tickets (`append_async`): `_settle` runs once in each
    of their event loops; a loop that has closed has nobody waiting any more."""
    loops: dict[asyncio.AbstractEventLoop, list[_Ticket]] = {}
    for t in batch:
        if t.future is not None:
            loops.setdefault(t.future.get_loop(), []).append(t)
    for loop, tickets in loops.items():
        try:
            loop.call_soon_threadsafe(_settle, tickets)
        except RuntimeError:  # that loop has closed
            pass


@dataclass
class _Segment:
    live: int = 0  # pending entries in it
    users: set[UserKey] = field(default_factory=set)  # everyone with a record in its file


def frame(rows: list[StoredPreference]) -> bytes:
    payload = _encode(rows)
    return FRAME.pack(len(payload), zlib.crc32(payload)) + payload


class LaterVersionRecord(ValueError):
    """A record whose checksum is whole but whose rows this version cannot read (a field or kind it
    does not know): a later version wrote it, and the service was rolled back while it was pending.
    It is acknowledged feedback: never taken for a torn record (whose segment would then be removed)."""


def read_frames(path: Path) -> list[list[StoredPreference]]:
    """The whole records of a segment file, stopping at the first torn one (a crash mid-write: never
    acknowledged). Raises LaterVersionRecord, naming the file, for a whole record it cannot read."""
    data = path.read_bytes()
    out, at = [], 0
    while at + FRAME.size <= len(data):
        size, crc = FRAME.unpack_from(data, at)
        payload = data[at + FRAME.size : at + FRAME.size + size]
        # torn: cut short, or a zero-filled tail a crash left (size 0, and crc32 of nothing is 0): no record is empty
        if not size or len(payload) < size or zlib.crc32(payload) != crc:
            break
        try:
            out.append(_decode(payload))
        except (msgspec.DecodeError, ValueError) as exc:
            raise LaterVersionRecord(
                f"{path}: record {len(out) + 1} is acknowledged feedback this version of pluralign cannot read ({exc}): "
                "a later version wrote it. Start that version again and let it move the log's records into the table "
                "(`pluralign_feedback_pending_rows` 0) before starting this one; the file is left as it is") from None
        at += FRAME.size + size
    return out


class Forgotten(msgspec.Struct, forbid_unknown_fields=True):
    """FORGOTTEN's content: {user hash (sha256 hex of `tenant/user_id`, no id in the clear): [[before, upto], ...]}, one
    pair per `forget_user` not yet rewritten away. Its records in segments numbered `upto` or lower whose rows were all
    received before `before` (unix seconds; None: whenever) are forgotten; records of theirs written later go to later
    segments (the one being written is left first) or were received after `before`."""

    users: dict[str, list[tuple[float | None, int]]] = {}

    def covers(self, entry: Entry, user: str) -> bool:
        """Whether `entry` (of the user whose hash is `user`) is a record this note forgets."""
        return any(entry.segment <= upto and (before is None or all(r.received() < before for r in entry.rows))
                   for before, upto in self.users.get(user, ()))


def _user_hash(key: UserKey) -> str:
    return hashlib.sha256(f"{key[0]}/{key[1]}".encode()).hexdigest()


_decode_forgotten = msgspec.json.Decoder(Forgotten).decode


DRAIN_WINDOW_S = 60.0  # the recent past a tenant's drain rate is measured over (`DrainRates`)


class DrainRates:
    """How fast each tenant's rows have left the feedback log lately through the feedback worker (moved into the table,
    or set aside: its work; not dropped by a DELETE, which says nothing of how fast the rest is stored): what a record
    refused for its tenant's backlog is told to wait (`TenantBacklog.drain_rate`, the service's `Retry-After`). A DELETE's rows do not
    count: one DELETE of an import waiting would make the rate hundreds of rows a second for a minute, and so the wait
    told 1 s where the worker stores a row a second. Each departure is noted with its time (`clock`: monotonic seconds) and kept for `window` seconds;
    the rate is the rows that left after the window's first departure over the time since it, in rows per second: a
    worker that stalled meanwhile lowers it as the time passes. None with fewer than two departures in the window
    (nothing to measure between), whatever the backlog. O(departures in the window) a read; under the log's lock."""

    def __init__(self, window: float = DRAIN_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._left: dict[str, collections.deque[list]] = {}  # tenant -> [[when, rows], ...], oldest first

    def left(self, tenant: str, rows: int) -> None:
        """`rows` of `tenant` left the log now (those of one call, a few ms apart, noted as one departure)."""
        now = self.clock()
        mine = self._left.setdefault(tenant, collections.deque())
        if mine and now - mine[-1][0] < 0.01:
            mine[-1][1] += rows
        else:
            mine.append([now, rows])
        self._forget_before(tenant, now)

    def rate(self, tenant: str | None) -> float | None:
        """Rows of `tenant` (None: of every tenant, their departures together) per second that left the log lately (the
        class's docstring); None: not measured."""
        now = self.clock()
        for each in [tenant] if tenant is not None else list(self._left):
            self._forget_before(each, now)
        if tenant is not None:
            mine = self._left.get(tenant)
        else:  # every tenant's departures in one line, oldest first (those of one tenant are already in order)
            mine = sorted((departure for departures in self._left.values() for departure in departures), key=lambda d: d[0])
        if not mine or len(mine) < 2 or now <= mine[0][0]:
            return None
        return sum(rows for _, rows in itertools.islice(mine, 1, None)) / (now - mine[0][0])

    def _forget_before(self, tenant: str, now: float) -> None:
        mine = self._left.get(tenant)
        while mine and mine[0][0] < now - self.window:
            mine.popleft()
        if mine is not None and not mine:
            del self._left[tenant]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class FeedbackLog:
    """`append(rows)` (or `await append_async(rows)`) returns once the rows are durable; they stay
    `pending` until `done(entries)`."""

    def __init__(self, folder: str | Path, segment_bytes: int = 8 << 20, problems: Problems | None = None,
                 clock: Callable[[], float] = time.time, tenant_rows: int | None = None, drain: DrainRates | None = None):
        """`problems`: where a write that failed for want of room (or a read-only folder) is noted,
        and cleared by the next that succeeds (`pluralign.store.failures`). `clock`: what stamps
        `received_at` (unix seconds; a test skews one replica's clock with it). `tenant_rows`: the bound on one
        tenant's rows pending or queued (None: none): an append (`bounded`) of a tenant that has some and would pass
        it raises TenantBacklog, nothing written (a tenant with none pending may append one record of any size: an
        import larger than the bound is taken alone), its `drain_rate` how fast that tenant's rows left lately (`drain`:
        the log's own `DrainRates` when None)."""
        self.folder = Path(folder)
        self.tenant_rows = tenant_rows
        self.tenant_bytes = None if tenant_rows is None else tenant_rows * ROW_BYTES  # the size of the same rows
        self.drain = DrainRates() if drain is None else drain
        self.clock = clock
        self.problems = problems
        self._unrewritten: set[UserKey] = set()  # users whose `forget_user` could not rewrite the segments holding their records
        self.folder.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._io = threading.Lock()  # the open segment: writes, rotation, rewrites
        lock = threading.Lock()  # the write queue and the pending index
        self._cv = threading.Condition(lock)  # writers wait here for their round, readers for pending rows
        self._work = threading.Condition(lock)  # the writer thread waits here for a queued record
        self._queue: list[_Ticket] = []
        self._closed = False
        self._seq = 0
        self.pending: dict[int, Entry] = {}  # by seq, oldest first
        self._by_user: dict[UserKey, dict[int, Entry]] = {}
        self._by_tenant: dict[str, dict[int, Entry]] = {}  # each oldest first: the ingest worker's turns (`oldest_per_tenant`)
        # rows per tenant: pending (`_register`, `_unlist`) and queued for the writer (`_enqueue`, `_write`): `tenant_rows`
        self._tenant_pending: dict[str, int] = {}
        # every tenant's pending rows together (kept with `_tenant_pending`): what `backlog` answers without a pass over
        # every record (/health asks on the event loop: a pass at a backlog of 100,000 records stalled every request)
        self._pending_rows = 0
        # rows pending per user, by tenant (kept with `_tenant_pending`): a users page reads its tenant's (`tenant_pending`)
        self._user_pending: dict[str, dict[str, int]] = {}
        self._tenant_queued: dict[str, int] = {}
        # bytes per tenant, pending and queued (kept with `_tenant_pending`, `_tenant_queued`): `tenant_bytes`
        self._tenant_pending_bytes: dict[str, int] = {}
        self._tenant_queued_bytes: dict[str, int] = {}
        self._segments: dict[int, _Segment] = {}
        self.refused = 0  # appends refused past a tenant's bound (`tenant_rows`), for metrics
        self.fsyncs = 0  # for tests and benchmarks: how many fsyncs served how many appends
        self.appends = 0
        for path in [*self.folder.glob("*.tmp"), *self.folder.glob(f".{FORGOTTEN}.*")]:  # a rewrite cut short: the original is still in place
            path.unlink()
        self._forgotten = self._read_forgotten()
        forgotten_in = self._replay()
        self._current = max(self._segments, default=0) + 1
        self._open(self._current)
        for segment in [s for s, info in self._segments.items() if not info.live and s != self._current]:
            self._remove(segment)
        self._rewrite_forgotten(forgotten_in)
        self._thread = threading.Thread(target=self._writer, daemon=True, name="feedback-log")
        self._thread.start()

    def _replay(self) -> set[int]:
        """Register the records of the segment files as pending, but for those FORGOTTEN names (their user still listed
        in the segment, whose text is there); returns the segments that hold any of those."""
        hashes: dict[UserKey, str] = {}
        forgotten_in: set[int] = set()
        for path in sorted(self.folder.glob("*.log")):
            segment = int(path.stem)
            info = self._segments[segment] = _Segment()
            for rows in read_frames(path):
                entry = Entry(self._next_seq(), segment, rows, len(_encode(rows)))
                if self._forgotten.users:
                    user = hashes.get(entry.key) or hashes.setdefault(entry.key, _user_hash(entry.key))
                    if self._forgotten.covers(entry, user):
                        info.users.add(entry.key)
                        forgotten_in.add(segment)
                        continue
                self._register(entry)
        return forgotten_in

    def _read_forgotten(self) -> Forgotten:
        """FORGOTTEN; raises ValueError naming it when it is damaged (a whole file is written or none, so not by a
        crash): opening without it would bring back a deleted user's rows."""
        path = self.folder / FORGOTTEN
        try:
            return _decode_forgotten(path.read_bytes())
        except FileNotFoundError:
            return Forgotten()
        except DECODE_ERRORS as exc:
            raise ValueError(f"{path}: unreadable ({exc}); it names deleted users' records the log must not replay. "
                             "Restore it, or remove it once every segment file (*.log) beside it holds none of theirs") from None

    def _rewrite_forgotten(self, segments: set[int]) -> None:
        """At open: rewrite the `segments` that still hold forgotten records, then drop FORGOTTEN. When one cannot be
        rewritten (no room) the note stays, honoured at each open, and the failure is noted as `forget_user`'s is."""
        if not self._forgotten.users:
            return
        try:
            with self._io, self._cv:
                for segment in sorted(s for s in segments if s in self._segments):
                    self._rewrite(segment)
                if segments:
                    fsync_dir(self.folder)
                self._forgotten = Forgotten()
                (self.folder / FORGOTTEN).unlink(missing_ok=True)
        except OSError as exc:
            failure = unavailable(exc, "the feedback log", str(self.folder), "written")
            if failure is None:
                raise
            # the forgotten users alone: the others listed in those segments were never deleted, and no `forget_user`
            # of theirs would ever clear the problem (else it would stay shown for good)
            self._unrewritten.update(k for s in segments if s in self._segments for k in self._segments[s].users
                                     if _user_hash(k) in self._forgotten.users)
            if self.problems is not None:
                self.problems.failed(StoreUnavailable(failure.name, failure.where, REWRITTEN, failure.problem, failure.detail,
                                                      failure.errno))

    def _note_forgotten(self, keys: list[UserKey], before: float | None, upto: int) -> None:
        """FORGOTTEN names the users' records that `forget_users` drops, before it drops them (one write for all of
        them). Raises OSError (no room) with the note as it was. Under `_io`."""
        users = {**self._forgotten.users}
        for key in keys:
            user = _user_hash(key)
            users[user] = [*users.get(user, ()), (before, upto)]
        noted = Forgotten(users)
        write_atomic(self.folder / FORGOTTEN, msgspec.json.encode(noted))
        self._forgotten = noted

    def _unnote_forgotten(self, keys: list[UserKey]) -> None:
        """The users' records FORGOTTEN names are in no file any more: their entries go (the file, when they were the
        last). A note that stays (no room to write it again, a power loss before the removal reached the disk)
        names no record that is left. Under `_io`."""
        users = {_user_hash(key) for key in keys} & self._forgotten.users.keys()
        if not users:
            return
        left = Forgotten({u: cuts for u, cuts in self._forgotten.users.items() if u not in users})
        try:
            if left.users:
                write_atomic(self.folder / FORGOTTEN, msgspec.json.encode(left))
            else:
                (self.folder / FORGOTTEN).unlink(missing_ok=True)
        except OSError:
            return
        self._forgotten = left

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:012d}.log"

    def _open(self, segment: int) -> None:
        """Make `segment` the file written to (the caller closes the one before). Raises OSError (no
        room for the file, a read-only folder) with nothing changed."""
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            fsync_dir(self.folder)  # the new file's name is durable before a record in it is acknowledged
        except BaseException:
            os.close(fd)
            raise
        self._segments.setdefault(segment, _Segment())
        self._fd: int | None = fd
        self._size = size

    def _unqueue(self, ticket: _Ticket) -> None:
        """`ticket`'s rows are no longer queued for the writer (pending now, or not written). Under `_cv`."""
        tenant = ticket.rows[0].tenant
        left = self._tenant_queued[tenant] - len(ticket.rows)
        if left:
            self._tenant_queued[tenant] = left
        else:
            del self._tenant_queued[tenant]
        _add(self._tenant_queued_bytes, tenant, -len(ticket.payload))

    def _register(self, entry: Entry) -> None:
        self.pending[entry.seq] = entry
        self._by_user.setdefault(entry.key, {})[entry.seq] = entry
        self._by_tenant.setdefault(entry.key[0], {})[entry.seq] = entry
        self._tenant_pending[entry.key[0]] = self._tenant_pending.get(entry.key[0], 0) + len(entry.rows)
        _add(self._tenant_pending_bytes, entry.key[0], entry.nbytes)
        self._pending_rows += len(entry.rows)
        self._count_user(entry.key, len(entry.rows))
        info = self._segments[entry.segment]
        info.live += 1
        info.users.add(entry.key)

    def _remove(self, segment: int) -> None:
        self._segments.pop(segment, None)
        self._path(segment).unlink(missing_ok=True)

    # ---- writes -----------------------------------------------------------------------------

    def _ticket(self, rows: list[StoredPreference], future: asyncio.Future | None = None, received: float | None = None) -> _Ticket:
        if not rows or len({(r.tenant, r.user_id) for r in rows}) != 1:
            raise ValueError("a log record holds the rows of one feedback: at least one row, all of one user")
        return _Ticket.of(rows, future, received)

    def _enqueue(self, ticket: _Ticket, bounded: bool = True) -> None:
        tenant, adding = ticket.rows[0].tenant, len(ticket.rows)
        with self._cv:
            if self._closed:
                raise RuntimeError("the feedback log is closed")
            if bounded:
                self._check_room(tenant, adding, len(ticket.payload))
            self._tenant_queued[tenant] = self._tenant_queued.get(tenant, 0) + adding
            _add(self._tenant_queued_bytes, tenant, len(ticket.payload))
            self._queue.append(ticket)
            self.appends += 1
            self._work.notify()

    def append(self, rows: list[StoredPreference], received_at: float | None = None, bounded: bool = True) -> Entry:
        """Append one feedback's rows (all of one user) and return once they are on disk. `received_at` (unix
        seconds): their arrival time as the caller took it, kept instead of the writer's stamp: an import's whose
        pref_id claims carry that time (`pluralign.store.claims`), taken under the user's lock that a DELETE of the
        user on this replica takes too (`service.users.controllers._claim_and_log`). Not the stamp, later than the claims'
        time: a DELETE on another replica begun between the two would remove the claims and keep the rows.
        `bounded`: refused (TenantBacklog, nothing written) past the tenant's bound (`tenant_rows`); False for rows
        acknowledged already (a dead letter put back)."""
        ticket = self._ticket(rows, received=received_at)
        self._enqueue(ticket, bounded)
        with self._cv:
            self._cv.wait_for(lambda: ticket.done)
        if ticket.error is not None:
            raise ticket.error
        assert ticket.entry is not None
        return ticket.entry

    async def append_async(self, rows: list[StoredPreference]) -> Entry:
        """`append` for a coroutine: awaits the round that makes the rows durable, blocking no thread. TenantBacklog
        past the tenant's bound (`tenant_rows`), nothing written."""
        future = asyncio.get_running_loop().create_future()
        if len(rows) > ENCODE_INLINE_ROWS:  # an import's thousands of rows are encoded off the event loop
            ticket = await asyncio.to_thread(self._ticket, rows, future)
        else:
            ticket = self._ticket(rows, future)
        self._enqueue(ticket)
        return await ticket.future

    def _writer(self) -> None:
        while True:
            with self._cv:
                self._work.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left to write
                batch, self._queue = self._queue, []
            self._write(batch)
            del batch  # not held while this thread waits for the next round: its rows, a DELETE's user's too

    def _write(self, batch: list[_Ticket]) -> None:
        error = None
        try:
            with self._io:
                try:
                    self._rehome_if_removed()
                    received = self.clock()  # the round's rows reach the log now (module docstring)
                    for t in batch:
                        t.frame = t.stamped(received if t.received is None else t.received)  # encoded by their callers: only the stamp is written in here
                    _write_all(self._fd, b"".join(t.frame for t in batch))
                    os.fdatasync(self._fd)
                except BaseException:
                    self._drop_unacknowledged()
                    raise
                self._size += sum(len(t.frame) for t in batch)
                # registered before `_io` is let go: a rewrite of the segment (`forget_user`, another user's
                # DELETE) keeps only what is pending, so a round written but not yet pending would be cut
                # from the file (acknowledged, lost at the next start) or its segment removed under it
                with self._cv:
                    for t in batch:
                        t.entry = Entry(self._next_seq(), self._current, t.rows, len(t.payload))
                        self._unqueue(t)
                        self._register(t.entry)
        except BaseException as exc:  # every writer of the round sees the failure
            error = self._round_failure(exc)
        if error is None and self.problems is not None:
            self.problems.succeeded("the feedback log", "written")
        with self._cv:
            for t in batch:
                if t.entry is None:  # not written: no longer queued either
                    self._unqueue(t)
                t.done, t.error = True, error
            self.fsyncs += 1
            self._cv.notify_all()
        _settle_in_their_loops(batch)
        if error is None and self._size >= self.segment_bytes:
            self._rotate()

    def _round_failure(self, exc: BaseException) -> BaseException:
        """What the writers of a failed round are told: a StoreUnavailable naming the feedback log when
        the disk is full, read-only or damaged, or its folder was removed (noted in `problems`); else
        `exc` itself."""
        error = unavailable(exc, "the feedback log", str(self.folder), "written") or exc
        if isinstance(exc, FileNotFoundError):  # its folder removed (`_rehome_if_removed` could not make a file)
            error = StoreUnavailable("the feedback log", str(self.folder), "written", "missing", str(exc), exc.errno)
        if self.problems is not None and error is not exc:
            self.problems.failed(error)
        return error

    def _rehome_if_removed(self) -> None:
        """When segment files still holding pending records were removed from the folder (a cleanup of
        `*.log` files, an operator): the one being written, whose next records would be acknowledged and
        lost at the next start, and older ones a backlog still waits in (the table cannot be written, a
        slow encoder), whose records would be lost too. Their pending records are first written again
        into a new segment file, fsynced, which then takes the round. Raises OSError when that cannot be
        done (the folder gone, no room): the round fails, nothing acknowledged, and the next round tries
        again. Called under `_io`; one stat per segment with pending records."""
        old, new = self._current, self._current + 1
        with self._cv:
            older = [s for s, info in self._segments.items() if s != old and info.live]
        gone = {s for s in older if not self._path(s).exists()}
        if not os.fstat(self._fd).st_nlink:
            gone.add(old)
        if not gone:
            return
        with self._cv:
            keep = [e for e in self.pending.values() if e.segment in gone]
        data = b"".join(frame(e.rows) for e in keep)
        fd = os.open(self._path(new), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
            fsync_dir(self.folder)
        except BaseException:
            os.close(fd)
            self._path(new).unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd, self._size, self._current = fd, len(data), new
        with self._cv:
            for entry in keep:
                entry.segment = new
            for segment in gone:
                self._segments.pop(segment, None)
            self._segments[new] = _Segment(live=len(keep), users={e.key for e in keep})
            if old in self._segments and not self._segments[old].live:  # the one written till now, still there, done with
                self._remove(old)

    def _drop_unacknowledged(self) -> None:
        """After a failed round (disk full, I/O error): cut the segment back to its acknowledged
        records. A write can fail part way and leave a torn record; replay stops at the first torn
        record, so one left in the middle would hide every acknowledged record appended after it.
        When the file cannot be cut, later records go to a fresh segment instead. Called under `_io`."""
        try:
            os.ftruncate(self._fd, self._size)
            return
        except OSError:
            pass
        old = self._fd
        try:
            self._open(self._current + 1)
        except OSError:  # neither (the disk is failing): nothing more to try here
            return
        self._current += 1
        os.close(old)

    def _rotate(self) -> None:
        """Start the next segment once this one is full. When its file cannot be made (no room, a
        read-only folder), records go on into this one and the next round tries again: the writer
        thread must outlive it (every later append would wait for it for good)."""
        with self._io, self._cv:
            if self._size < self.segment_bytes:
                return
            old, old_fd = self._current, self._fd
            try:
                self._open(old + 1)
            except OSError:
                return
            os.close(old_fd)
            self._current = old + 1
            if not self._segments[old].live:
                self._remove(old)

    # ---- the pending index ------------------------------------------------------------------

    def oldest(self, limit: int, tenant: str | None = None, upto: int | None = None, skip: Collection[UserKey] = ()) -> list[Entry]:
        """Up to `limit` pending entries, oldest first: of `tenant` only (None: any), with `seq` at most
        `upto` (None: any), and of no user in `skip`."""
        with self._cv:
            out = []
            for entry in self.pending.values():
                if upto is not None and entry.seq > upto:
                    break  # pending is in seq order
                if (tenant is not None and entry.key[0] != tenant) or entry.key in skip:
                    continue
                out.append(entry)
                if len(out) == limit:
                    break
            return out

    def last_seq(self) -> int | None:
        """The newest pending entry's `seq` (None: nothing pending)."""
        with self._cv:
            return next(reversed(self.pending), None)

    def oldest_per_tenant(self, limit: int, skip: Collection[UserKey] = ()) -> dict[str, list[Entry]]:
        """Up to `limit` pending entries of each tenant that has any, oldest first, of no user in `skip`.
        Read from the per-tenant index: its cost does not grow with the backlog (it walks past only the
        skipped users' entries), where a pass over everything pending, under the lock every append waits
        on, cost ~30 ms a batch at 100,000 records."""
        out: dict[str, list[Entry]] = {}
        with self._cv:
            for tenant, pending in self._by_tenant.items():
                mine = list(itertools.islice((e for e in pending.values() if e.key not in skip), limit))
                if mine:
                    out[tenant] = mine
        return out

    def pending_for(self, tenant: str, user_id: str) -> list[Entry]:
        with self._cv:
            return list(self._by_user.get((tenant, user_id), {}).values())

    def tenant_pending(self, tenant: str) -> dict[str, int]:
        """`tenant`'s users with rows pending: user -> those rows. A copy of the counts kept as records come and go
        (`_count_user`), so a listing of one tenant's users reads none of its records under the lock every tenant's
        feedback waits on (a pass over them held it 18.8 ms a page at 20,000 records), nor other tenants' users."""
        with self._cv:
            return dict(self._user_pending.get(tenant, {}))

    def _count_user(self, key: UserKey, rows: int) -> None:
        """The user's pending rows changed by `rows` (caller holds `_cv`)."""
        users = self._user_pending.setdefault(key[0], {})
        left = users.get(key[1], 0) + rows
        if left > 0:
            users[key[1]] = left
        else:
            users.pop(key[1], None)
            if not users:
                del self._user_pending[key[0]]

    def is_pending(self, entry: Entry) -> bool:
        with self._cv:
            return self.pending.get(entry.seq) is entry

    def has_pending(self) -> bool:
        """Whether any feedback record is pending: `backlog` without its count of rows, a pass over every record
        (8-17 ms at 100,000 records, under the lock every append waits on), for a caller that asks at each move."""
        with self._cv:
            return bool(self.pending)

    def check_room(self, tenant: str, adding: int, rows: Collection[StoredPreference] = ()) -> None:
        """TenantBacklog (counted in `refused`) when `adding` rows of `tenant` would be refused now (`tenant_rows`), or
        `rows` (those of them to be appended: their size, `tenant_bytes`): what a caller asks before the steps that come
        before its append (an import's claims and rows received again), so a refusal leaves nothing half done. The
        append checks again (another request may have come meanwhile)."""
        size = len(_encode(list(rows))) if rows else 0  # outside the lock: ~0.5 us a row
        with self._cv:
            self._check_room(tenant, adding, size)

    def _check_room(self, tenant: str, adding: int, adding_bytes: int = 0) -> None:
        """`check_room`, under `_cv`; `adding_bytes`: the size of the rows (their encoding), bounded by `tenant_bytes`
        as their count is by `tenant_rows` (a caller that does not know it yet: 0, its append checks it)."""
        rows = self._tenant_pending.get(tenant, 0) + self._tenant_queued.get(tenant, 0)
        if self.tenant_rows is None or self.tenant_bytes is None or not rows:
            return
        size = self._tenant_pending_bytes.get(tenant, 0) + self._tenant_queued_bytes.get(tenant, 0)
        if rows + adding > self.tenant_rows or size + adding_bytes > self.tenant_bytes:
            self.refused += 1
            raise TenantBacklog(tenant, rows, adding, self.tenant_rows, self.drain.rate(tenant),
                                sizes=(size, adding_bytes, self.tenant_bytes))

    def drain_rate(self, tenant: str | None) -> float | None:
        """`DrainRates.rate` of `tenant` (None: every tenant), rows per second, under the log's lock."""
        with self._cv:
            return self.drain.rate(tenant)

    def tenant_backlog(self, tenant: str) -> int:
        """`tenant`'s rows pending or queued for the writer: what its bound (`tenant_rows`) counts. O(1)."""
        with self._cv:
            return self._tenant_pending.get(tenant, 0) + self._tenant_queued.get(tenant, 0)

    def backlog(self) -> tuple[int, int]:
        """(pending feedback records, pending rows). O(1): counted as records come and go (`_pending_rows`), no record read."""
        with self._cv:
            return len(self.pending), self._pending_rows

    def tenant_pending_rows(self, tenant: str) -> int:
        """`tenant`'s rows pending (what `backlog` counts of every tenant's), for a caller that may see one tenant's. O(1)."""
        with self._cv:
            return self._tenant_pending.get(tenant, 0)

    def wait(self, timeout: float, until: threading.Event | None = None) -> bool:
        """Block until something is pending (True), or `timeout` passes or `until` is set (`wake` then
        ends the wait at once; False unless something is pending)."""
        with self._cv:
            self._cv.wait_for(lambda: bool(self.pending) or (until is not None and until.is_set()), timeout)
            return bool(self.pending)

    def wake(self) -> None:
        """Waiters look again now (at their `until` event): a worker told to stop ends its wait."""
        with self._cv:
            self._cv.notify_all()

    def done(self, entries: list[Entry]) -> None:
        """These entries were moved into the table: drop them, and every segment left with none pending.
        After `close` it does nothing: a worker whose store call outlived `Ingestor.close`'s wait leaves the
        closed log's files as they are, and the next open's replay drops what reached the table."""
        with self._io, self._cv:
            if self._closed:
                return
            for done in entries:
                if (entry := self._unpend(done)) is None:
                    continue
                info = self._segments.get(entry.segment)
                if info is not None and not info.live and entry.segment != self._current:
                    self._remove(entry.segment)

    def _unpend(self, done: Entry, staying: int = 0) -> Entry | None:
        """The pending entry of `done`'s seq (`done` may be a copy of it left with fewer rows: `split_held`) dropped from
        what is pending, its segment's live count less one; None when none is pending. `staying`: its rows logged again as
        another record (`set_aside`), not drained (`_unlist`). Under `_io` and `_cv`."""
        if (entry := self.pending.pop(done.seq, None)) is None:
            return None
        mine = self._by_user.get(entry.key)
        if mine is not None:
            mine.pop(entry.seq, None)
            if not mine:
                del self._by_user[entry.key]
        self._unlist(entry, len(entry.rows) - staying)
        if (info := self._segments.get(entry.segment)) is not None:
            info.live -= 1
        return entry

    def set_aside(self, entries: list[Entry], staying: Mapping[int, int] | None = None) -> None:
        """`done` for records that leave the log without being moved (set aside as dead letters, their letters written
        first: `pluralign.store.ingest.Ingestor`): dropped from what is pending and cut from their segments' files too
        (each rewritten once with only what is pending; the segment being written is closed first and a fresh one
        begun), so no later start replays them. Marked `done` only, a record would stay in its file while that segment held
        other feedback waiting (or was the one being written), and each start would set it aside again, a letter an
        admin had discarded coming back and the stored rows of a partial one logged again. Raises
        OSError when a file cannot be rewritten (no room): the records are no longer pending all the same, and a later
        start replays them and sets them aside again, as after a kill between their letters and this. `staying`: seq ->
        how many rows of that record were logged again as a record of their own (those of a record set aside in part:
        `Ingestor._set_aside`), which have not left the log (`drain`)."""
        with self._io, self._cv:
            if self._closed:
                return
            staying = staying or {}
            touched = sorted({entry.segment for done in entries if (entry := self._unpend(done, staying.get(done.seq, 0))) is not None
                              and entry.segment in self._segments})
            if not touched:
                return
            self._leave_current(touched)
            for segment in touched:
                self._rewrite(segment)
            fsync_dir(self.folder)

    def _unlist(self, entry: Entry, drained: int) -> None:
        """Drop a no longer pending `entry` (as it was registered) from the per-tenant index and count (caller holds
        `_cv`); `drained` of its rows left the log through the worker (`drain`): all of them when moved, none when a
        DELETE dropped them, all but those logged again as another record when set aside (`set_aside`), so those are not counted twice (once
        as gone, once more as they are moved: a drain rate nearly twice the real one, a `Retry-After` too short)."""
        if drained > 0:
            self.drain.left(entry.key[0], drained)
        left = self._tenant_pending.get(entry.key[0], 0) - len(entry.rows)
        _add(self._tenant_pending_bytes, entry.key[0], -entry.nbytes)
        self._pending_rows -= len(entry.rows)
        if left > 0:
            self._tenant_pending[entry.key[0]] = left
        else:
            self._tenant_pending.pop(entry.key[0], None)
        self._count_user(entry.key, -len(entry.rows))
        mine = self._by_tenant.get(entry.key[0])
        if mine is not None:
            mine.pop(entry.seq, None)
            if not mine:
                del self._by_tenant[entry.key[0]]

    def users(self) -> set[UserKey]:
        """Everyone with a record in the log's files, pending or already moved."""
        with self._io:
            return {key for info in self._segments.values() for key in info.users}

    def forget_user(self, tenant: str, user_id: str, before: float | None = None) -> int:
        """Drop the user's pending records and rewrite every segment that held any record of theirs
        (pending or already moved), so none of their text stays in this folder. With `before` (unix
        seconds), only pending records whose rows were all received before it are dropped (those of a
        user deleted by another replica at `before`; `StoredPreference.received`); later ones stay pending. Returns how many
        pending rows were dropped (an import, a `choice` is one record of several rows). What it drops is noted in FORGOTTEN
        first (module docstring). A segment that cannot be rewritten (no room) raises StoreUnavailable
        naming the log; the records it holds were dropped from what is pending all the same, and the note makes the next
        open drop them too and rewrite their segments (where not even the note could be written, they are dropped
        here only: a restart before `forget_user` of the user succeeds replays them). The failure
        is noted in `problems` as the log not `REWRITTEN` (not as a failed write, which the next record
        written would clear): shown until no user's rewrite is left undone (`forget_user` of each again)."""
        return self.forget_users(tenant, [user_id], before)

    def forget_users(self, tenant: str, user_ids: Iterable[str], before: float | None = None) -> int:
        """`forget_user` of each of `user_ids` (of `tenant`) at once: one note in FORGOTTEN for all of them, and each
        segment that held a record of any of them rewritten once (a tenant's removal forgets its users a batch at a
        time: one by one, a segment holding a hundred of them was rewritten a hundred times). Returns the pending rows
        dropped, all of them together; raises as `forget_user`."""
        keys = sorted({(tenant, u) for u in user_ids})
        try:
            dropped = self._forget_users(keys, before)
        except OSError as exc:
            failure = unavailable(exc, "the feedback log", str(self.folder), "written")
            if failure is None:
                raise
            with self._io:
                self._unrewritten.update(keys)
            if self.problems is not None:
                self.problems.failed(StoreUnavailable(failure.name, failure.where, REWRITTEN, failure.problem, failure.detail,
                                                      failure.errno))
            raise failure from exc
        with self._io:
            self._unrewritten.difference_update(keys)
            done = not self._unrewritten
        if done and self.problems is not None:
            self.problems.succeeded("the feedback log", REWRITTEN)
        return dropped

    def _forget_users(self, keys: list[UserKey], before: float | None) -> int:
        wanted = set(keys)
        with self._io, self._cv:
            touched = sorted(s for s, info in self._segments.items() if not wanted.isdisjoint(info.users))
            held = [key for key in keys if any(key in self._segments[s].users for s in touched)]
            unnoted = None
            if touched:
                try:
                    # start a fresh segment: the old one is rewritten below (a closed log's is rewritten as the others),
                    # and the note covers it whole (their records written from now on go to later ones)
                    self._leave_current(touched)
                    self._note_forgotten(held, before, touched[-1])
                except OSError as exc:  # no room even for the note: dropped from what is pending all the same (below)
                    unnoted = exc
            rows = 0
            for key in keys:
                mine = self._by_user.pop(key, {})
                dropped = {seq for seq, entry in mine.items() if before is None or all(r.received() < before for r in entry.rows)}
                kept = {seq: entry for seq, entry in mine.items() if seq not in dropped}
                if kept:
                    self._by_user[key] = kept
                for seq in dropped:
                    entry = self.pending.pop(seq)
                    self._unlist(entry, 0)  # not the worker's: not in the tenant's drain rate
                    self._segments[entry.segment].live -= 1
                rows += sum(len(mine[seq].rows) for seq in dropped)  # rows, not records: an import is one record of many
            if unnoted is not None:
                raise unnoted
            for segment in touched:
                self._rewrite(segment)
            if touched:  # a user none of whose records a segment holds changed no name here: nothing to fsync
                fsync_dir(self.folder)
                self._unnote_forgotten(held)
            return rows

    def drop_moved(self, tenant: str, user_id: str) -> int:
        """Rewrite every segment that holds a record of the user with only its pending records (every user's), so that
        none of the user's records already moved into the table stays in this folder; their pending ones stay, as
        everyone's do. For a retraction of one stored row (`service.users.services.retract`), before the row leaves the
        table: a moved record left in its segment is replayed at the next open, and a record the table no longer holds
        whole is moved again (`Ingestor._drop_already_moved`): the retracted row would come back. Returns how many
        segments were rewritten. Raises StoreUnavailable naming the log when one cannot be (no room), the files as
        they were (each is replaced whole)."""
        key = (tenant, user_id)
        try:
            with self._io, self._cv:
                touched = sorted(s for s, info in self._segments.items() if key in info.users)
                if not touched:
                    return 0
                self._leave_current(touched)  # a fresh segment for what is written from now on
                for segment in touched:
                    self._rewrite(segment)
                fsync_dir(self.folder)
                return len(touched)
        except OSError as exc:
            failure = unavailable(exc, "the feedback log", str(self.folder), "written")
            if failure is None:
                raise
            raise failure from exc

    def drop_rows(self, before: Mapping[tuple[str, str, str], float]) -> int:
        """Drop the pending rows under the keys (tenant, user_id, pref_id) of `before` received (`received()`) before
        that key's time (unix seconds): taken back (`Store.retracted_before`); a row of the key received later (the same
        id sent again) stays pending. A record left with none is no longer pending; every segment that held a record of a
        user who lost a row is rewritten with only what is pending (`drop_moved`'s rewrite). Returns how many rows were dropped.
        Raises StoreUnavailable naming the log when a segment cannot be rewritten (no room), the rows dropped from what
        is pending all the same (the next open drops them again)."""
        def taken(r: StoredPreference) -> bool:
            at = before.get((r.tenant, r.user_id, r.pref_id))
            return at is not None and r.received() < at

        users = {(t, u) for t, u, _ in before}
        touched: set[UserKey] = set()  # whose records lost a row: only their segments are rewritten
        dropped = 0
        with self._io, self._cv:
            for entry in [e for key in users for e in self._by_user.get(key, {}).values()]:
                kept = [r for r in entry.rows if not taken(r)]
                if len(kept) == len(entry.rows):
                    continue
                dropped += len(entry.rows) - len(kept)
                touched.add(entry.key)
                if kept:  # the record's other rows stay pending: the tenant's count less the dropped ones
                    self._tenant_pending[entry.key[0]] -= len(entry.rows) - len(kept)
                    smaller = len(_encode(kept))
                    _add(self._tenant_pending_bytes, entry.key[0], smaller - entry.nbytes)
                    entry.nbytes = smaller
                    self._pending_rows -= len(entry.rows) - len(kept)
                    self._count_user(entry.key, len(kept) - len(entry.rows))
                    entry.rows = kept
                else:  # not drained by the worker (`_unlist`), as a DELETE's
                    self._unpend(entry, staying=len(entry.rows))
        for tenant, user_id in sorted(touched):
            self.drop_moved(tenant, user_id)
        return dropped

    def _leave_current(self, touched: list[int]) -> None:
        """Start a fresh segment when the one being written is among `touched` (segments about to be rewritten), so
        records written from now on go to the next one. Raises OSError (no room) with the current one still open.
        Under `_io` and `_cv`."""
        if self._current in touched and self._fd is not None:
            old_fd = self._fd
            self._open(self._current + 1)
            os.close(old_fd)
            self._current += 1

    def _rewrite(self, segment: int) -> None:
        """`segment`'s file written again with only its pending records (removed when none is). Raises OSError (no room)
        with the file as it was. Under `_io` and `_cv`."""
        keep = [e for e in self.pending.values() if e.segment == segment]
        if not keep:
            self._remove(segment)
            return
        tmp = self._path(segment).with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(frame(e.rows) for e in keep))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path(segment))
        self._segments[segment] = _Segment(live=len(keep), users={e.key for e in keep})

    @property
    def closed(self) -> bool:
        """`close` was called: nothing more is appended, and `done` does nothing."""
        return self._closed

    def close(self) -> None:
        """Writes what is queued, then stops the writer and closes the file."""
        with self._cv:
            self._closed = True
            self._work.notify()
        self._thread.join()
        with self._io:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None  # `forget_user` after close rewrites the files and opens no segment
