"""How far replicas' clocks disagree, seen through the store they share.

Why: a DELETE answered by one replica removes what another replica holds of the user by time: rows
that replica received (`received_at`, its clock) before the DELETE began (`began_at`, the answering
replica's clock), with `store_sync_ms` of slack (`pluralign.store.deletions.Forget`). Acknowledgements come
from each replica's own log, with no coordination on the write path (deploy/README.md), so there is no
ordering to use but the clocks: when the receiving replica's clock runs behind the answering one's by
more than the DELETE took to answer, less the slack, feedback sent after the DELETE answered is deleted
with it; when it runs ahead by more than the slack, feedback acknowledged before the DELETE stays.
Neither can be mended after the fact, so the service refuses DELETEs while it sees such a skew.

How: each replica writes one row (its index, its clock's time, and the largest lead of another
replica's clock it saw) to the table `TABLE` at each pass, and reads the others'. A row stamped later
than the reader's clock was written by a clock ahead of it by at least the difference (the row cannot
have been written after it was read): a lower bound of the lead, short of the true one by the row's age
when read (up to a pass, plus `store_sync_ms`), never a false alarm. Only the replica behind sees it, so
it publishes what it saw (`ahead_s`), and every replica reads the largest. A replica whose row stopped
changing (stopped, or its store writes failing) counts no more after `stale_after_s` of this process's
monotonic clock; no clock comparison is needed for that. A row this process has not seen before counts
from the start, unless, by this clock, it is older than a live one can be (`stale_after_s`) plus the
clock skew deletion records allow (`pluralign.store.deletions.SLACK_S`, 10 minutes): a replica scaled away
long ago (its row is never removed) would otherwise refuse DELETEs for `stale_after_s` at each start, if
it had seen a skew; a live replica whose clock runs even further behind counts once its row changes.

Two processes started with the same replica index would write one row over the other's and each skip it as
its own, so their skew would go unmeasured without a word: each row also carries its writer's `instance`
(drawn once per process), and a replica that finds its row written by another instance after it wrote it
itself says so (`index_shared`) until `stale_after_s` passes without seeing it again.

Replicas must also agree on how many they are (`service.replicas.owner` divides the users by it): each row says
with how many its writer was set up (`replicas`), and a replica reading a live row of another count, or of an index
its count does not have, says so (`counts_disagree`): live meaning written again since this process first read it
(rows already there at its start were judged by `service.runtime.open_store`, by their age). An instance also names its writer's data folder
(`instance_id`), so that a starting process tells its own index's row left by its last run on that folder (a
restart) from one written by a process on another folder (a second replica set up with that index:
`service.runtime.open_store` refuses to start). An earlier release's row has neither (`replicas` null, an instance
without a folder): it is not compared; and since such a writer updates only the columns it knows, a `replicas`
value counts only under an instance that names a folder (its writer wrote both).

A row also says which population model its writer serves from the folder the replicas share: its version (`pal`,
`service.rewards.checkpoint_version`, which hashes the meta.json fields the writer's release knows), its weights'
digest (`pal_weights`, `service.rewards.weights_digest`, the same whatever the release), and its model's digest (`pal_model`, `service.rewards.model_digest`: the weights and what else
changes what is served, PAL's population prior included), which a starting replica compares with its own
(`service.runtime.refuse_another_model`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa

from pluralign.store.deletions import SLACK_S
from pluralign.store.versions import remove_old_versions

log = logging.getLogger("pluralign.store")
TABLE = "replica_clocks"
TIDY_EVERY = 60  # passes between removals of the table's old versions (one version a pass and replica)
KEEP_VERSIONS = timedelta(minutes=10)  # what a removal leaves: no reader needs an older version of this table


def clock_schema() -> pa.Schema:
    """One row per replica: `replica` (its index), `at` (unix seconds, its clock, when written),
    `ahead_s` (seconds: the largest lead over its own clock it saw in another replica's row), `instance`
    (the writing process's id, `instance_id`; null in a table written before it was kept), `replicas` (how many
    replicas its writer was set up with; null when written before it was kept, or by a writer that did not say), `pal`
    (the population model its writer serves, `served_pal`; null likewise), `pal_weights` (that model's weights,
    `served_pal_weights`; null likewise, and in a row of an earlier release without it), `pal_model` (that model's
    digest, `served_pal_model`; null likewise, and in a row of an earlier release without it)."""
    return pa.schema([pa.field("replica", pa.int32(), nullable=False), pa.field("at", pa.float64(), nullable=False),
                      pa.field("ahead_s", pa.float64(), nullable=False), *ADDED])


INSTANCE = pa.field("instance", pa.string(), nullable=True)  # added after the table's first release: a table gains it on open
REPLICAS = pa.field("replicas", pa.int32(), nullable=True)  # added later, the same way
# added later, the same way: "<instance> <population version>", the model its writer serves (`served_pal`)
PAL = pa.field("pal", pa.string(), nullable=True)
# added later, the same way: "<instance> <weights digest>" (`served_pal_weights`)
PAL_WEIGHTS = pa.field("pal_weights", pa.string(), nullable=True)
# added later, the same way: "<instance> <model digest>" (`served_pal_model`)
PAL_MODEL = pa.field("pal_model", pa.string(), nullable=True)
ADDED = (INSTANCE, REPLICAS, PAL, PAL_WEIGHTS, PAL_MODEL)
FOLDER_MARK = "d:"  # an instance naming its data folder: "d:<folder id>:<process id>" (an earlier release's: hex only)


def instance_id(folder_id: str | None) -> str:
    """A process's `instance`: a random id, after its data folder's (`folder_id`, kept in the folder) when given."""
    process = uuid.uuid4().hex
    return process if folder_id is None else f"{FOLDER_MARK}{folder_id}:{process}"


def folder_of(instance: str | None) -> str | None:
    """The data folder's id an `instance` names, or None (an earlier release's row, or a process given none)."""
    if instance is None or not instance.startswith(FOLDER_MARK):
        return None
    return instance[len(FOLDER_MARK):].rpartition(":")[0] or None


def served_pal(row: dict) -> str | None:
    """The population version (`service.rewards.checkpoint_version`) the writer of clock `row` serves, or None: an
    earlier release's row, a writer that did not say, or a `pal` value another instance of its index left (a writer
    of an earlier release updates only the columns it knows, so it counts only under the row's own `instance`)."""
    return _of_its_instance(row, "pal")


def served_pal_weights(row: dict) -> str | None:
    """The weights' digest (`service.rewards.weights_digest`) of the population model the writer of clock `row`
    serves, or None: a row of an earlier release without it (it says only `served_pal`, whose version depends
    on the release), a writer that did not say, or a value another instance of its index left (as `served_pal`)."""
    return _of_its_instance(row, "pal_weights")


def served_pal_model(row: dict) -> str | None:
    """The digest (`service.rewards.model_digest`: weights, how they are read, PAL's population prior) of the population
    model the writer of clock `row` serves, or None: a row of an earlier release without it (it says only
    `served_pal_weights`, which leaves the prior out, or less), a writer that did not say, or a value another instance
    of its index left (as `served_pal`)."""
    return _of_its_instance(row, "pal_model")


def _of_its_instance(row: dict, column: str) -> str | None:
    """The value of `column` ("<instance> <value>") when the row's own `instance` wrote it, else None."""
    instance, _, value = (row.get(column) or "").partition(" ")
    return (value or None) if instance and instance == row.get("instance") else None


def counts_disagree(rows: list[dict], replicas: int) -> dict[int, int | None]:
    """Of other replicas' clock `rows`: those whose writer was set up with another replica count than `replicas`,
    or whose index a count of `replicas` does not have, each index with its writer's count (None: not said, an
    earlier release's row). Such replicas divide the users among them otherwise (`service.replicas.owner`)."""
    found: dict[int, int | None] = {}
    for r in rows:
        theirs = r.get("replicas") if folder_of(r.get("instance")) is not None else None
        if r["replica"] >= replicas or (theirs is not None and theirs != replicas):
            found[r["replica"]] = theirs
    return dict(sorted(found.items()))


def counts_words(found: dict[int, int | None], replicas: int) -> str:
    """`counts_disagree`'s finding in words naming PLURALIGN_REPLICAS and both values."""
    said = "; ".join(f"replica {i} runs with PLURALIGN_REPLICAS={theirs}" if theirs is not None
                     else f"replica {i} runs, which PLURALIGN_REPLICAS={replicas} has no place for (its indexes are 0.."
                          f"{replicas - 1})" for i, theirs in found.items())
    return (f"this replica is set up with PLURALIGN_REPLICAS={replicas}, but {said}: replicas set up with different counts "
            "divide the users differently, so some users' adapter jobs are queued by two replicas and others' by none")


@dataclass(frozen=True)
class Skew:
    """The largest clock lead seen among replicas: `seconds` (0.0: none seen), which replica's clock
    ran behind (`behind`) and which ran ahead of it (`ahead`: None when another replica saw it, whose
    row does not say which; both None when none was seen)."""

    seconds: float = 0.0
    ahead: int | None = None
    behind: int | None = None

    def words(self) -> str:
        if self.behind is None:
            return "no clock skew seen"
        ahead = f"replica {self.ahead}'s" if self.ahead is not None else "another replica's"
        return f"{ahead} clock runs at least {self.seconds:.1f} s ahead of replica {self.behind}'s"


class ReplicaClocks:
    """`beat()` writes this replica's row and returns the skew seen (`Skew`); `skew` is the last one.
    `db`: the store's LanceDB connection; `replica`: this replica's index; `clock`: its wall clock (a
    test skews one replica with it); `stale_after_s`: a row unchanged this long (this process's
    monotonic clock) is a replica that stopped, and counts no more; `index_shared` says whether another
    process was seen writing as the same replica within that long."""

    def __init__(self, db, replica: int, stale_after_s: float, clock: Callable[[], float] = time.time, *,
                 replicas: int | None = None, folder_id: str | None = None,
                 served: Callable[[], str | None] | None = None, served_weights: Callable[[], str | None] | None = None,
                 served_model: Callable[[], str | None] | None = None):
        self.db = db
        self.replica = replica
        self.replicas = replicas  # this replica's count (the `replicas` setting): written in its row, compared with theirs
        self.served = served  # the population version this replica serves now, written in its row (`served_pal`)
        self.served_weights = served_weights  # and its weights' digest (`served_pal_weights`)
        self.served_model = served_model  # and its model's digest (`served_pal_model`)
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.skew = Skew()  # the last pass's finding, or a larger one still held (`beat`)
        self._measured = Skew()  # the last pass's own
        self._held_until = 0.0  # monotonic: `skew` stays at least what was measured before a clock was set right until then
        self._table = None
        self._seen: dict[int, tuple[float, float]] = {}  # replica -> (its row's `at`, monotonic time it was first seen)
        self._first_at: dict[int, float] = {}  # replica -> its row's `at` when this process first read it
        self._beats = 0
        self.instance = instance_id(folder_id)  # this process's, in its row: another writing as `replica` shows by its own
        self.counts: dict[int, int | None] = {}  # the last pass's `counts_disagree` of the live rows (`replicas` given)
        self._wrote = False
        self._twin_seen: float | None = None  # monotonic: when this replica's row was last found written by another process
        self._lock = threading.Lock()  # one pass at a time

    def _open(self):
        if self._table is None:
            try:
                table = self.db.open_table(TABLE)
            except (ValueError, FileNotFoundError, OSError, RuntimeError):
                try:
                    table = self.db.create_table(TABLE, schema=clock_schema())
                except (OSError, RuntimeError, ValueError):  # made by another replica meanwhile
                    table = self.db.open_table(TABLE)
            self._table = with_columns(table)
        return self._table

    def index_shared(self) -> bool:
        """Whether another process wrote this replica's row (the same replica index) between two of this
        one's passes within the last `stale_after_s`: the two clocks are then never compared."""
        return self._twin_seen is not None and time.monotonic() - self._twin_seen <= self.stale_after_s

    def beat(self) -> Skew:
        """Read the other replicas' rows, then write this one's; returns `skew`: what this pass saw, or,
        for as many seconds as a larger skew seen before lasted once it shrank, that one (rows stamped by a
        clock ahead keep their times after it is set right). Lance's errors (the store unreachable) pass
        through, with `skew` as it was."""
        with self._lock:
            table = self._open()
            every = table.search().limit(None).to_arrow().to_pylist()
            now, mono = self.clock(), time.monotonic()
            self._look_for_a_twin(every, mono)
            fresh = self._fresh([r for r in every if r["replica"] != self.replica], now, mono)
            skew = Skew()
            for r in fresh:  # a row stamped after this clock's now: that replica's clock runs ahead of this one's
                if r["at"] - now > skew.seconds:
                    skew = Skew(r["at"] - now, r["replica"], self.replica)
            mine = skew.seconds
            # only rows written again since first read: a row left by a replica stopped for a count change (deploy/
            # README: start the new count 3 passes on) is not yet stale by `_fresh` for this process's first minute
            written = [r for r in fresh if r["at"] != self._first_at[r["replica"]]]
            self.counts = counts_disagree(written, self.replicas) if self.replicas is not None else {}
            for r in fresh:  # what the others saw (the replica behind is the one that sees a skew)
                if r["ahead_s"] > skew.seconds:
                    skew = Skew(r["ahead_s"], None, r["replica"])
            self._write(table, mine)
            return self._held(skew, mono)

    def _look_for_a_twin(self, every: list[dict], mono: float) -> None:
        """Another process writing this replica's row (`instance` not this one's): said once, and noted."""
        if self._wrote and any(r["instance"] not in (None, self.instance) for r in every if r["replica"] == self.replica):
            if not self.index_shared():
                log.error("another process writes as replica %d too (PLURALIGN_REPLICA_INDEX=%d on two machines?): each "
                          "replica needs its own index; DELETEs are refused while both run", self.replica, self.replica)
            self._twin_seen = mono

    def _fresh(self, rows: list[dict], now: float, mono: float) -> list[dict]:
        """The other replicas' `rows` that changed within `stale_after_s` (this process's monotonic clock)."""
        fresh = []
        for r in rows:
            at, since = self._seen.get(r["replica"], (None, mono))
            self._first_at.setdefault(r["replica"], r["at"])
            if at is None and now - r["at"] > self.stale_after_s + SLACK_S:
                since = mono - self.stale_after_s - 1.0  # first seen, long stopped: counts once it changes
            elif at != r["at"]:
                since = mono
            self._seen[r["replica"]] = (r["at"], since)
            if mono - since <= self.stale_after_s:
                fresh.append(r)
        return fresh

    def _write(self, table, ahead_s: float) -> None:
        """This replica's row, stamped now; every TIDY_EVERY passes the table's old versions go."""
        version = self.served() if self.served is not None else None
        weights = self.served_weights() if self.served_weights is not None else None
        model = self.served_model() if self.served_model is not None else None
        row = pa.table({"replica": [self.replica], "at": [self.clock()], "ahead_s": [ahead_s], "instance": [self.instance],
                        "replicas": [self.replicas], "pal": [f"{self.instance} {version}" if version else None],
                        "pal_weights": [f"{self.instance} {weights}" if weights else None],
                        "pal_model": [f"{self.instance} {model}" if model else None]},
                       schema=clock_schema())
        table.merge_insert("replica").when_matched_update_all().when_not_matched_insert_all().execute(row)
        self._wrote = True
        self._beats += 1
        if self._beats % TIDY_EVERY == 0:
            try:  # another replica's removal at the same moment may conflict: the next tidy does it
                remove_old_versions(table, KEEP_VERSIONS)  # not `optimize`: a compaction would rewrite others' rows
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("could not remove old versions of the %s table: %s", TABLE, exc)

    def _held(self, skew: Skew, mono: float) -> Skew:
        """`skew` this pass measured, or a larger one still held: a clock set right (NTP fixed) leaves rows it
        stamped before carrying times up to the old lead ahead, which a DELETE would still misjudge until that
        much time has passed. Sets and returns `self.skew`."""
        if skew.seconds < self._measured.seconds:
            if mono >= self._held_until or self._measured.seconds > self.skew.seconds:
                self.skew = self._measured
            self._held_until = max(self._held_until, mono + self._measured.seconds)
        self._measured = skew
        if mono >= self._held_until or skew.seconds >= self.skew.seconds:
            self.skew = skew
        return self.skew


def with_columns(table, tries: int = 3):
    """`table` with the columns added since its first release (`ADDED`), adding those it lacks. Lance refuses the
    change when another commit lands between its read and its write (a "retryable commit conflict": an earlier
    release's replica writing its row, which it does every pass, knowing nothing of the change): looked at again on
    the newest version, up to `tries` times. Raises the last refusal when a column is still missing then (the next
    pass tries again: a table kept without it would fail every pass's write for good)."""
    refused: Exception | None = None
    for _ in range(tries):
        missing = [f for f in ADDED if f.name not in table.schema.names]
        if not missing:
            return table
        try:
            table.add_columns(missing)
        except (OSError, RuntimeError, ValueError) as exc:  # added by another replica meanwhile, or preempted
            refused = exc
            table.checkout_latest()
    if any(f.name not in table.schema.names for f in ADDED):
        raise refused or RuntimeError(f"the {TABLE} table's columns could not be added")
    return table


def recent_rows(db, within_s: float, now: float | None = None) -> list[dict]:
    """The rows of `TABLE` written within the last `within_s` seconds (unix time by this clock, `now`; a row stamped
    after it counts too: a clock running ahead), as dicts of `clock_schema`'s columns (a column the table lacks, an
    earlier release's, is None): replicas sharing the store now, or stopped within `within_s`. [] when the store has
    no such table (no replica ever ran on it). Lance's errors reading it pass through."""
    try:
        table = db.open_table(TABLE)
    except (ValueError, FileNotFoundError):  # no table of that name: never shared by replicas
        return []
    now = time.time() if now is None else now
    names = [name for name in clock_schema().names if name in table.schema.names]
    rows = table.search().limit(None).select(names).to_arrow().to_pylist()
    return [{name: r.get(name) for name in clock_schema().names} for r in rows if r["at"] >= now - within_s]


def recent_replicas(db, within_s: float, now: float | None = None) -> dict[int, float]:
    """`recent_rows`' replicas, each index with its newest row's `at` (unix seconds, by the writer's clock)."""
    return replicas_of(recent_rows(db, within_s, now))


def replicas_of(rows: list[dict]) -> dict[int, float]:
    """The replicas of clock `rows`, each index with its newest row's `at`, by index."""
    found: dict[int, float] = {}
    for r in rows:
        found[r["replica"]] = max(r["at"], found.get(r["replica"], r["at"]))
    return dict(sorted(found.items()))
