"""A user's preference history held in memory, and a bounded cache of them.

One LanceDB query costs ~7-15 ms on the 2-core machine whatever it returns (planning, index
lookups, takes), which alone breaks a 10 ms retrieval budget. A chat request reads the same user's
rows up to three times (nearest shots, comparison count, comparisons for a refit), so the store
loads a user's rows once into a `History` and answers those reads from memory until the user's
rows change. Cosine search over a user's ~100 rows in numpy takes microseconds.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pluralign.cache import TAKE_AGAIN_S, TAKES_IN_ALL, FairLRU, Takes  # noqa: F401 (TAKE_AGAIN_S: read here by its users)
from pluralign.data.record import seconds_meant, seconds_meant_of
from pluralign.data.text import answer_key

if TYPE_CHECKING:  # imported where used: the user package imports torch, and a store's reader (an audit job) must not
    from pluralign.user.active import Recent

UserKey = tuple[str, str]  # (tenant, user_id)
# what a history cached by `HistoryCache` holds beside its arrays' and Arrow buffers' bytes (`History.nbytes`): its
# Arrow table's and column objects and their buffers' rounding, its numpy arrays' headers, the cache's entries; ~14 KiB
# in RSS for a user with no rows or one (CPython 3.11, pyarrow 26), with room. Not counting it, a user without rows
# counted 0 bytes, and every one read was kept whatever the bound
HISTORY_ENTRY_BYTES = 16384


def stored_seconds(created_at: float) -> float:
    """A stored `created_at` as the store's reads give it: the seconds it meant (`seconds_meant`: an older release's
    time in milli-, micro- or nanoseconds), and NaN, which an older release could store and which no comparison orders,
    as inf (no JSON holds either: both are written null), so pages sort and resume past it (`with_stored_seconds`)."""
    seconds = seconds_meant(created_at)
    return math.inf if math.isnan(seconds) else seconds


def with_stored_seconds(table: pa.Table) -> pa.Table:
    """`table` with its `created_at` column as `stored_seconds` reads each (float64)."""
    at = table.column_names.index("created_at")
    seconds = seconds_meant_of(table.column(at).to_numpy())
    return table.set_column(at, "created_at", pa.array(np.where(np.isnan(seconds), np.inf, seconds), pa.float64()))


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """(N, dim) float32 of a vector column, in memory of its own (a view of the column's buffer kept the whole read
    the column came from alive: `History.from_arrow`)."""
    column = column.combine_chunks()
    if not len(column):
        return np.zeros((0, dim), np.float32)
    return np.array(column.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(column), dim)


@dataclass(frozen=True)
class History:
    """Every row of one user: the non-vector columns as an Arrow table (not one dict per row: tens
    of thousands of cached dicts made Python's garbage collector pause warm reads for ~10 ms), the
    vectors as (N, d) arrays."""

    meta: pa.Table  # non-vector columns; `created_at` as the Unix seconds it meant (`stored_seconds`)
    prompt_vec: np.ndarray  # (N, d)
    chosen_vec: np.ndarray  # (N, d)
    rejected_vec: np.ndarray  # (N, d)
    comparison: np.ndarray  # (N,) bool: a strict comparison (no tie, a rejected answer)

    @classmethod
    def from_arrow(cls, table: pa.Table, dim: int) -> History:
        """The history of `table`'s rows, copied into buffers of its own: the columns of a table LanceDB returned share
        the read's memory (Arrow's C data interface releases a batch whole), so its non-vector columns kept alive the
        vectors read with them, and a cached history held about twice the bytes the cache's bound counts (`nbytes`)."""
        vectors = ("prompt_vec", "chosen_vec", "rejected_vec")
        meta = table.drop_columns(list(vectors))
        meta = meta.take(pa.array(np.arange(meta.num_rows), pa.int64()))  # a copy (`take` gathers into new buffers)
        if "created_at" in meta.column_names:
            meta = with_stored_seconds(meta)
        tie = meta.column("tie").to_numpy(zero_copy_only=False).astype(bool)
        has_rejected = pc.not_equal(meta.column("rejected"), "").to_numpy(zero_copy_only=False).astype(bool)
        return cls(meta, *(_matrix(table.column(name), dim) for name in vectors), comparison=~tie & has_rejected)

    def extended(self, other: History) -> History:
        """This history with `other`'s rows after its own, in buffers of its own, one chunk a column (as the vectors:
        each write's rows a chunk of their own, a user's feedback sent one at a time held each row in buffers rounded
        up by Arrow's allocator, ~6x the bytes `nbytes` counts, and every read walked them all)."""
        return History(
            pa.concat_tables([self.meta, other.meta]).combine_chunks(),
            *(np.concatenate([a, b]) for a, b in ((self.prompt_vec, other.prompt_vec), (self.chosen_vec, other.chosen_vec), (self.rejected_vec, other.rejected_vec))),
            comparison=np.concatenate([self.comparison, other.comparison]),
        )

    def __len__(self) -> int:
        return self.meta.num_rows

    def comparison_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
        """The strict comparisons of this snapshot: prompt, chosen and rejected vectors (N, d) each,
        and the chosen and rejected texts (N each), all in one order."""
        return self._pairs(np.flatnonzero(self.comparison))

    def newest_answers(self, n: int) -> Recent:
        """The newest `n` answers with two answers compared, strict comparisons and ties together (by `created_at`, then
        `pref_id`), oldest first: each an index into `comparison_set`'s rows or, a tie, into `tie_set`'s. The answers
        `pluralign.user.model.UserState.surprise` checks, ties included (`newest_comparisons` leaves them out)."""
        from pluralign.user.active import Recent

        strict, tied = np.flatnonzero(self.comparison), self._tie_rows()
        rows = np.concatenate([strict, tied])
        if not len(rows) or n <= 0:
            return Recent.comparisons([])
        meta = self.meta.take(pa.array(rows, type=pa.int64()))
        order = pc.sort_indices(meta, sort_keys=[("created_at", "ascending"), ("pref_id", "ascending")]).to_numpy()[-n:]
        tie = order >= len(strict)
        return Recent(index=np.where(tie, order - len(strict), order).astype(np.int64), tie=tie)

    def _tie_rows(self) -> np.ndarray:
        """Row indices of the ties (two answers, neither preferred), in `tie_set`'s order."""
        paired = pc.not_equal(self.meta.column("rejected"), "").to_numpy(zero_copy_only=False).astype(bool)
        return np.flatnonzero(~self.comparison & paired)

    def tie_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
        """The ties of this snapshot (two answers, neither preferred) in `comparison_set`'s form, the
        answer stored as chosen first: prompt, chosen and rejected vectors (M, d), and the texts."""
        return self._pairs(self._tie_rows())

    def answers_sample(self, limit: int, seed: int = 0) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """Both answers of up to `limit` of this user's stored pairs (a comparison, or a tie of two answers), each pair
        of answers once whatever its prompt and spelling (`answer_key`), drawn at random (`seed`): `Store.answers_sample`
        with `per="pair"` over one user's rows, read from this snapshot rather than the table. Returns prompts and
        answers (2n each: a pair's chosen, then its rejected), prompt and answer vectors ((2n, d) each)."""
        paired = np.flatnonzero(pc.not_equal(self.meta.column("rejected"), "").to_numpy(zero_copy_only=False).astype(bool))
        drawn = np.random.default_rng(seed).permutation(paired)
        texts: dict[int, dict] = {}
        seen: set[frozenset[str]] = set()
        step = max(limit, 1)
        for start in range(0, len(drawn), step):  # a batch's texts at a time: not one dict per row of a large history
            batch = drawn[start : start + step]
            for i, row in zip(batch.tolist(), self.meta.select(["prompt", "chosen", "rejected"]).take(batch).to_pylist(), strict=True):
                pair = frozenset((answer_key(row["chosen"]), answer_key(row["rejected"])))
                if pair not in seen and len(texts) < limit:
                    seen.add(pair)
                    texts[i] = row
            if len(texts) >= limit:
                break
        picked = list(texts)
        rows = np.asarray(picked, np.int64)
        prompts = [texts[i]["prompt"] for i in picked for _ in range(2)]
        answers = [t for i in picked for t in (texts[i]["chosen"], texts[i]["rejected"])]
        answer_vec = np.stack([self.chosen_vec[rows], self.rejected_vec[rows]], axis=1).reshape(-1, self.prompt_vec.shape[1])
        return prompts, answers, np.repeat(self.prompt_vec[rows], 2, axis=0), answer_vec

    def _pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[str]]:
        meta = self.meta.take(pa.array(rows, type=pa.int64()))
        return (self.prompt_vec[rows], self.chosen_vec[rows], self.rejected_vec[rows],
                meta.column("chosen").to_pylist(), meta.column("rejected").to_pylist())

    @property
    def rows(self) -> list[dict]:
        """Every row's non-vector columns (pages, exports, refits; not the search path)."""
        return self.meta.to_pylist()

    def take(self, indices: list[int]) -> list[dict]:
        return self.meta.take(pa.array(indices, type=pa.int64())).to_pylist() if indices else []

    @property
    def nbytes(self) -> int:
        return self.prompt_vec.nbytes * 3 + self.meta.nbytes

    def nearest(self, vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(row index, cosine distance) of the `limit` rows whose prompt is nearest, nearest first."""
        if not len(self) or limit <= 0:
            return []
        q = np.asarray(vector, np.float32)
        norms = np.linalg.norm(self.prompt_vec, axis=1) * (np.linalg.norm(q) or 1.0)
        distance = 1.0 - (self.prompt_vec @ q) / np.where(norms > 0, norms, 1.0)  # (N,)
        order = np.argsort(distance, kind="stable")[:limit]
        return [(int(i), float(distance[i])) for i in order]


class HistoryCache:
    """Least recently used histories up to `budget_bytes` (each counting its `nbytes` and what its entry holds beside
    them, `HISTORY_ENTRY_BYTES`, so a user with no rows counts too), shared fairly between tenants: past the bound, the
    least recently used history of the tenant holding the most bytes goes (max-min fair shares of one budget, as
    `pluralign.embed.cache.ScopedVectors` shares its vectors), so one tenant reading many big users in turn pushes out
    its own histories once it holds more than any other, never a smaller tenant's (but for one history larger than its
    share, below); a tenant alone uses the whole budget (`pluralign.cache.FairLRU`). With one LRU over every tenant's
    users, one tenant's reads would push out every other tenant's histories, whose next chat or profile would read them
    from the table again.

    A history just loaded, or grown by a write's rows, is kept when it fits the whole bound, even when it is larger than
    its tenant's fair share: the histories pushed out for it are the least recently used of the tenants holding the
    most, its own tenant's first. Once its tenant has nothing else to give and still holds the most, the histories
    pushed out for it are room taken from smaller tenants (`FairLRU.evict`'s `taken`): a tenant may take such room once
    per `TAKE_AGAIN_S` (600 s), and all tenants together `TAKES_IN_ALL` (4) times in any `TAKE_AGAIN_S` (else many
    tenants, each with one big user, took once each: 30 such tenants pushed out 900 of the others' histories in three
    windows, 120 with the bound: `benchmarks/fair_caches.py --big-tenants 30`). A history that would take more meanwhile is served but not kept, and what went for it
    comes back in its place (the load pushes out nothing). One grown into more by a write's rows is dropped, unless it
    is the history that took the room, still cached since: that one grows into the room its new rows need (the same take
    goes on, as large as what its user writes; dropped at its user's first feedback, it would cost the others their room
    for a read or two, and its user's reads would go to the table until `TAKE_AGAIN_S` is past, even while the others
    hold still). Without that limit, a tenant reading one such user in a loop would cost the others their histories at
    every load: it then holds the most, so the others' next loads push it out, and its next load would take their room
    again (15 of 80 other histories each cycle of `benchmarks/fair_caches.py --big-cycles` without the limit, each then
    read from the table again). The limit is per tenant, not per history: a tenant can make new big users at will, so
    one take per user would still be unbounded; and it is time, not once for the life of the process, so that a tenant
    whose big user is read all day gets it cached again while the others hold still (every ten minutes at most one such
    take of theirs: about as many table reads of the others' histories as one load of it pushed out, and as its writes'
    rows grow it by while cached). A history larger than the whole bound is not kept and pushes out nothing. Two big
    users of one tenant read in turn push out each other, never the others' (own room, no take).
    A load that raced a write is not kept:
    each load in flight holds a ticket in `_loading`, `writing`, `extend` and `invalidate` take the
    user's tickets away, and a load only lands if its ticket is still there and no write of the
    user is between its commit and its `extend` (such a load may hold the new rows already). Nothing is kept about a user
    beyond their cached history and the loads in flight (a per-user generation counter, kept for
    every user who ever wrote, grew by one entry per user for the life of the process). A history may carry the table
    version it is known to match (`version`: given to `get` or `checked`, read before the load or check, the history
    being the table's at that version or a later one; kept by an `extend`, whose rows are an append), so that a check
    finding the table still at that version needs no look at the user's rows, and one finding that every commit since
    only added rows needs only their count (`Store._matches`)."""

    def __init__(self, budget_bytes: int, clock: Callable[[], float] = time.monotonic, takes_in_all: int = TAKES_IN_ALL):
        self.budget_bytes = budget_bytes
        self._takes = Takes(clock, takes_in_all)  # room taken from smaller tenants' histories, by whose users
        self._took = self._takes.took  # tenant -> (`clock()`, user: None once their history left the cache)
        self._lock = threading.Lock()
        self._cached: FairLRU[UserKey, History] = FairLRU(_cost)  # (tenant, (tenant, user_id)) -> their history
        self._loading: dict[UserKey, set[object]] = {}  # the tickets of the loads in flight, by user
        self._writes: dict[UserKey, int] = {}  # users with a write in `writing` now: how many
        self._checked: dict[UserKey, float] = {}  # monotonic time the history was last known to match the table
        self._versions: dict[UserKey, int] = {}  # the table version the history was last known to match
        self.hits = 0
        self.misses = 0

    def peek(self, key: UserKey) -> History | None:
        """The cached history, or None (counted as a hit or a miss)."""
        with self._lock:
            found = self._cached.get(key[0], key)
            if found is not None:
                self.hits += 1
            else:
                self.misses += 1
            return found

    def get(self, key: UserKey, load: Callable[[], History], version: Callable[[], int] | None = None) -> History:
        """The cached history, or `load()`'s, kept when no write came meanwhile. `version`: reads the table's
        version, called before `load` (the history is the table's at that version or a later one)."""
        with self._lock:
            found = self._cached.get(key[0], key)
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            ticket = object()
            self._loading.setdefault(key, set()).add(ticket)
        started = time.monotonic()
        try:
            loaded_at = version() if version is not None else None
            history = load()
        except BaseException:
            with self._lock:
                self._settle(key, ticket)
            raise
        with self._lock:
            if self._settle(key, ticket) and key not in self._writes and self._cached.peek(key[0], key) is None and _cost(history) <= self.budget_bytes:
                self._put(key, history)
                self._checked[key] = started
                if loaded_at is not None:
                    self._versions[key] = loaded_at
                self._shrink(key)
        return history

    def _put(self, key: UserKey, history: History) -> None:
        """`history` cached as the user's (in place of one cached), their tenant's most recently used; under the lock."""
        self._cached.put(key[0], key, history)

    def _drop(self, key: UserKey) -> History | None:
        """The user's cached history, dropped with what is known of it (None: none was); under the lock."""
        self._gone(key)
        return self._cached.pop(key[0], key)

    def _gone(self, key: UserKey) -> None:
        """What is known of the user's history, which left the cache, forgotten (its tenant's take stays counted, but
        goes on with no history of theirs: nothing is kept of a user not cached); under the lock."""
        self._checked.pop(key, None)
        self._versions.pop(key, None)
        self._takes.left(key[0], key)

    def _shrink(self, kept: UserKey | None = None, grown: bool = False) -> None:
        """Past `budget_bytes`: the least recently used history of the tenant holding the most dropped, one at a time,
        until the rest fit (`pluralign.cache.FairLRU`); under the lock. `kept`: the user whose history was just put, which
        stays when it fits the bound alone (the others of its tenant go first while it holds the most, then those of the
        tenants holding the most after it) and its tenant may take the room it needs of smaller tenants' (`Takes.may`;
        `grown`: by a write's rows), else goes alone (those pushed out for it put back, each tenant's least recently used
        as before)."""
        if kept is not None and self._cached.nbytes > self.budget_bytes and _cost(self._cached.peek(kept[0], kept)) > self.budget_bytes:
            self._drop(kept)  # grown past the whole bound by a write's rows: no eviction makes room for it
            kept = None
        if kept is None:
            evicted = self._cached.evict(self.budget_bytes)
        else:
            fresh = self._takes.may(kept[0])  # its tenant took no room within `TAKE_AGAIN_S`, nor `TAKES_IN_ALL` did
            going_on = grown and not fresh and self._takes.taker(kept[0]) == kept  # the history that took, grown by a write
            evicted = self._cached.evict(self.budget_bytes, pinned=(kept,), take=fresh or going_on)
            if self._cached.nbytes > self.budget_bytes:  # it needs room of smaller tenants', which it may not take now
                for tenant, key, history in reversed(evicted):  # those pushed out for it come back, in their places
                    self._cached.put(tenant, key, history, last=False)
                self._drop(kept)
                evicted = []
            elif self._cached.taken and fresh:
                self._takes.took_now(kept[0], kept)
        for _, key, _ in evicted:
            self._gone(key)

    def _settle(self, key: UserKey, ticket: object) -> bool:
        """A load finished (under the lock): drop its ticket; whether no write came meanwhile."""
        tickets = self._loading.get(key)
        if tickets is None or ticket not in tickets:
            return False
        tickets.discard(ticket)
        if not tickets:
            del self._loading[key]
        return True

    @contextlib.contextmanager
    def writing(self, keys) -> Iterator[None]:
        """Around a commit of rows of the users `keys` and its `extend`s: no load lands meanwhile (one
        that read the table after the commit holds its rows, which `extend` would then add again).
        A write that raised leaves the users uncached: its commit may have landed."""
        keys = set(keys)
        with self._lock:
            for key in keys:
                self._writes[key] = self._writes.get(key, 0) + 1
                self._loading.pop(key, None)
        try:
            yield
        except BaseException:
            self.invalidate(keys)
            raise
        finally:
            with self._lock:
                for key in keys:
                    if self._writes[key] == 1:
                        del self._writes[key]
                    else:
                        self._writes[key] -= 1

    def extend(self, key: UserKey, new_rows: Callable[[], History]) -> None:
        """The user's rows grew by `new_rows()`: a cached history takes them (write-through), so a
        user who keeps giving feedback stays warm; a load in flight is not kept (it may miss them)."""
        with self._lock:
            self._loading.pop(key, None)  # a load in flight may miss the new rows: not kept
            found = self._cached.peek(key[0], key)
            if found is None:
                return
            # the version it was known to match stays: the rows added are an append, which the next check's count
            # counts (`Store._matches`; dropped, that check would read the user's rows)
            self._put(key, found.extended(new_rows()))
            self._shrink(key, grown=True)

    def _holds(self, key: UserKey, history: History | None) -> bool:
        """Whether the user's history is cached (`history`: that one, not another loaded since), under the lock."""
        found = self._cached.peek(key[0], key)
        return found is not None and (history is None or found is history)

    def age(self, key: UserKey, history: History | None = None) -> float:
        """Seconds since the cached history (`history`: that one) was loaded or last found to match the table (inf
        if none)."""
        with self._lock:
            checked = self._checked.get(key) if self._holds(key, history) else None
        return float("inf") if checked is None else time.monotonic() - checked

    def checked(self, key: UserKey, since: float, version: int | None = None, history: History | None = None) -> None:
        """The cached history matched the table as of `since` (a `time.monotonic()` taken before the check) and its
        `version` (read before the check). `history`: the one checked, when the cache may hold another by now."""
        with self._lock:
            if self._holds(key, history):
                self._checked[key] = max(self._checked.get(key, since), since)
                if version is not None:
                    self._versions[key] = version

    def version(self, key: UserKey, history: History | None = None) -> int | None:
        """The table version the cached history (`history`: that one, not another loaded since) is known to match,
        or None. A reader that took a history from the cache asks of that one: the cache may hold another by then,
        loaded by a read that found the first stale, whose version says nothing of the first (asking the cache's,
        a read would serve the stale one unchecked)."""
        with self._lock:
            return self._versions.get(key) if self._holds(key, history) else None

    def invalidate(self, keys) -> None:
        with self._lock:
            for key in keys:
                self._loading.pop(key, None)
                self._drop(key)
            self._shrink()

    def invalidate_where(self, drop: Callable[[UserKey], bool]) -> None:
        """Invalidate every cached user for whom `drop((tenant, user_id))` is true."""
        with self._lock:
            keys = [key for _, key, _ in self._cached.items() if drop(key)]
        self.invalidate(keys)

    def tracked(self) -> int:
        """Users the cache keeps anything about (their history, its check time, a load's ticket, the take of room theirs
        goes on with)."""
        with self._lock:
            took = {key for _, key in self._took.values() if key is not None}
            return len({key for _, key, _ in self._cached.items()} | set(self._checked) | set(self._versions) | set(self._loading) | set(self._writes) | took)

    @property
    def nbytes(self) -> int:
        """The bytes the cached histories count against `budget_bytes` (each its `nbytes` and `HISTORY_ENTRY_BYTES`)."""
        return self._cached.nbytes

    def tenant_nbytes(self, tenant: str) -> int:
        """The bytes `tenant`'s cached histories count against `budget_bytes`."""
        return self._cached.tenant_nbytes(tenant)

    def __len__(self) -> int:
        return len(self._cached)


def _cost(history: History) -> int:
    """What a cached history counts against `HistoryCache.budget_bytes`: its arrays' and Arrow buffers' bytes and what
    its entry holds beside them."""
    return history.nbytes + HISTORY_ENTRY_BYTES
