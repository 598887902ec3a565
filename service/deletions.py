"""Other replicas' DELETEs applied to this replica's own files.

Each replica keeps its own data folder: its feedback log, its jobs (population snapshots, PAL and
EM artifacts, adapter jobs' snapshots) and the population model it promoted. A DELETE cleans the
answering replica's folder and the shared store; with several replicas it also appends a record to
the store's `deletions` table (`pluralign.store.deletions`: the user by hash, when the DELETE began
and when it was recorded), and every replica's `DeletionSweep` applies new records to its own folder
within `deletion_sweep_s`: the
users' jobs and job files, their rows and fitted weights in population files (the promoted model's
too, on disk and in memory), what its feedback log and its records set aside still hold of rows received before the
DELETE began (and such rows it moved into the store after the DELETE), their entries in its owed retractions' file
(`service.owed_retractions.forget_owed`), its cached histories and its cached pooled priors of that tenant. A tenant's removal adds a record of the tenant (`new_tenant_deletion`): every row of it
set aside here goes, and every row of it this replica's feedback log holds (and such rows it moved into the store) received
before the removal began, whoever's.

The loop is a plain thread with an Event (the compaction thread's pattern): one small query of the
table every interval needs no job engine.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pluralign.files import atomic_writer
from pluralign.store.clocks import ReplicaClocks, counts_words
from pluralign.store.deletions import SLACK_S, Applied, Deletion, Forget, new_deletion, new_tenant_deletion, user_hash
from service.calibration.pools import forget_old_removals, own_pools_unwritten, remove_pool, remove_pool_before
from service.owed_retractions import forget_owed
from service.periodic import Periodic
from service.promoted import PROMOTED_PAL
from service.waiting_refits import forget_refits, owed_refits

if TYPE_CHECKING:
    from pluralign.store import StoredPreference
    from service.runtime import Runtime

log = logging.getLogger("pluralign.deletions")

APPLIED_FILE = "deletions-applied.json"  # in the replica's data folder: which records it has applied
FOLDER_ID_FILE = "replica-folder-id"  # in the replica's data folder: its id, in its clock row (`folder_id`)


def folder_id(data_path: Path) -> str:
    """The id of a replica's data folder (32 hex digits), drawn at its first start and kept in FOLDER_ID_FILE: a
    restart on the folder is the same replica, a process on another folder with the same index is not
    (`pluralign.store.clocks.instance_id`). A file that is not such an id is drawn again. Raises OSError when the
    folder cannot be written."""
    path = data_path / FOLDER_ID_FILE
    try:
        kept = path.read_text(errors="replace").strip()  # a damaged byte: no hex digit, drawn again
        if len(kept) == 32 and all(c in "0123456789abcdef" for c in kept):
            return kept
    except FileNotFoundError:
        pass
    data_path.mkdir(parents=True, exist_ok=True)
    drawn = uuid.uuid4().hex
    with atomic_writer(path) as f:
        f.write(drawn.encode())
    return drawn


def apply_deletions(rt: Runtime, records: list[Deletion]) -> int:
    """Remove the users `records` name from this replica's files and caches (the module docstring).
    Returns the files removed or rewritten. Raises ForgetIncomplete (service.runtime) when a
    population file could not be rewritten, after every other file was."""
    forget = _forget_of(rt, records)
    files = sum(hook(forget) for hook in list(rt.delete_hooks))
    sweep = rt.deletion_sweep
    moved = sweep.moved_lately() if sweep is not None else set()
    logged = rt.ingest.log.users()
    # of a tenant removed: its users in this replica's log, and those whose rows it moved since the removal began (rows
    # moved before were in the store when the removal looked: gone with it), not every user it moved lately (a purge turn each)
    stale = rt.settings.sync_seconds or 0.0
    removed = {(tenant, user_id) for tenant, began in forget.tenants.items()
               for t, user_id in logged | (sweep.moved_lately(began - stale) if sweep is not None else set())
               if t == tenant}
    # and the users of the records set aside here (else a deleted user's letter would stay on every replica but
    # the one the DELETE was sent to): `forget_user` forgets their rows in the letters too
    for tenant, user_id in sorted(logged | moved | rt.ingest.dead_letters.owners()):
        # only rows received before the DELETE began (`Deletion.began`, plus the staleness): later ones are
        # the user's again, though a DELETE finished long after it began (its replica restarting) is recorded late
        before = forget.until_of(f"{tenant}/{user_id}")
        # a tenant's removal: every user of the tenant this replica's log holds, or whose rows it moved since, whether
        # or not the removal found them (else rows only this replica had acknowledged, of a user the
        # answering replica never saw, would stay in its log and be moved into the store after the removal was done)
        if (tenant, user_id) in removed:
            began = forget.tenants[tenant]
            before = began if before is None else max(before, began)
        if before is not None:
            _forget_rows_before(rt, tenant, user_id, before)
    # a tenant's removal: every row of the tenant set aside here, whoever's (a user the removal never found, whose only
    # rows are in this replica's letters, and a blank `user_id`: none stays here, texts and all)
    for tenant, before in sorted(forget.tenants.items()):
        rt.ingest.dead_letters.forget_tenant(tenant, before=before)
        # and its calibration pool in this replica's own data folder, stored while it served alone (the replica the
        # removal was sent to cannot reach it; left, it would be asked by the tenant made again).
        # No PUT writes there while replicas run (a 409, or PLURALIGN_CALIBRATION_POOLS_DIR names the shared folder,
        # which the removal's replica cleaned), so nothing stored since the removal began goes with it
        if rt.settings.replicas > 1 and own_pools_unwritten(rt.settings):
            files += remove_pool(rt.settings.own_calibration_pools_path, tenant)
        # and in the replicas' shared folder one a PUT of this replica stored after the removal's replica cleaned it,
        # authenticated before the keys went (that replica waits for its own requests only): one that arrived before the
        # removal began, not `before`, which adds how late reads of the store may be (a pool is a file, read directly:
        # with `before`, the tenant made again would lose a pool stored that soon after the removal began)
        if rt.settings.calibration_pools_dir:
            files += remove_pool_before(rt.settings.calibration_pools_path, tenant, before - stale)
    # the notes of stored rows' claims name users by the records' hash: those of users no longer in the log go too
    rt.ingest.forget_noted({h: forget.until.get(h) for h in forget.hashes})
    # their ids leave the waiting refits' file (`service.waiting_refits`); one who came back keeps theirs
    if owed := [key for key in owed_refits(rt) if forget.user(*key)]:
        held = rt.store.users_with_preferences(owed)
        forget_refits(rt, [key for key in owed if key not in held])
    # and the owed retractions' file once their rows are gone (`service.owed_retractions`)
    forget_owed(rt, forget.user, lambda tenant: tenant in forget.tenants)
    rt.store.histories.invalidate_where(lambda key: forget.user(*key))
    rt.chat_keys.forget_where(forget.user)  # the answers kept for their chats' Idempotency-Keys
    for tenant in sorted({r.tenant for r in records}):
        rt.forget_pooled(tenant)
    return files + rt.forget_population_users(forget)


def tenant_removed_since(rt: Runtime, tenant: str, arrived: float) -> float | None:
    """When another replica's removal of `tenant`, begun after a request that arrived at `arrived` (unix seconds), was
    applied here while that request ran (`DeletionSweep.applied_since`): the removal's start; None when none was.
    A request that stored what the pass had already looked for (a calibration pool's PUT) removes it again."""
    if rt.deletion_sweep is None:
        return None
    stale = rt.settings.sync_seconds or 0.0  # `Forget.tenants` adds it to the removal's start (`_forget_of`)
    return max((f.tenants[tenant] - stale for f in rt.deletion_sweep.applied_since(arrived)
                if f.tenants.get(tenant, -math.inf) - stale > arrived), default=None)


def chat_of_deleted(forget: Forget, tenant: str, user_id: str, began: float) -> bool:
    """Whether a chat of user `user_id` of `tenant` that began at `began` (unix seconds) may read what `forget`'s
    records delete (their adapter, the shots retrieved from their history): it began before their record was written
    (`Forget.made_until_of`), or before their tenant's removal began."""
    made = forget.made_until_of(f"{tenant}/{user_id}")
    removal = forget.tenants.get(tenant)
    return (made is not None and began < made) or (removal is not None and began < removal)


def _forget_of(rt: Runtime, records: list[Deletion]) -> Forget:
    # a replica's reads of the store may lag its commits: data it made this late may still hold the user
    return Forget.of(records, stale_s=rt.settings.sync_seconds or 0.0)


def _forget_rows_before(rt: Runtime, tenant: str, user_id: str, before: float) -> None:
    """The user's rows received before `before` (unix seconds) go from this replica's log, and those this replica
    moved into the store after the DELETE, before this pass."""
    rt.ingest.forget_user(tenant, user_id, before=before)
    rt.store.delete_feedback_before(tenant, user_id, before)


def forget_if_deleted_since(rt: Runtime, tenant: str, user_id: str, arrived: float) -> bool:
    """After an import's rows reached the log (`service.users.controllers._claim_and_log`, once it let the user's lock
    go: the store's step takes the maintenance turn, which comes before a user's lock; under it, an
    import meeting such a record and a local DELETE of its user would wait for that DELETE, which waits for the import):
    when another replica's DELETE of the user, begun after the import arrived (`arrived`, unix seconds: the time its
    claims and log rows carry), was applied here while the import ran, its rows go as that DELETE's record took
    them, and so do their claims. The pass (`apply_deletions`) may have looked at this replica's log before the
    import's rows reached it (its users then, and the rows then pending): left, they would stay, received before the DELETE began, and
    without their claims (removed by the DELETE): another replica would then acknowledge their ids with other content,
    dropped once these were moved. Returns whether a DELETE took them. Each step (the log's rows, the rows this
    replica moved into the store, the claims) is tried whatever the one before did, and a failure is logged (the
    rows are in the log: the import is answered as stored), so a failure of the log's step (its
    segment not rewritten: no room) does not skip the claims' removal and leave the deleted user's ids claimed."""
    if rt.deletion_sweep is None:
        return False
    took = False
    for forget in rt.deletion_sweep.applied_since(arrived):
        before = forget.until_of(f"{tenant}/{user_id}")
        if before is not None and before > arrived:
            steps = [("its feedback log's rows", lambda b=before: rt.ingest.forget_user(tenant, user_id, before=b)),
                     ("the rows it moved into the store", lambda b=before: rt.store.delete_feedback_before(tenant, user_id, b))]
            if rt.store.claims is not None:
                steps.append(("their pref_id claims", lambda b=before: rt.store.claims.forget_user(tenant, user_id, b)))
            for what, step in steps:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 (the rows are in the log: the import is answered as such)
                    log.error("an import's rows that a DELETE through another replica took could not all be forgotten "
                              "(%s): %s", what, exc)
            took = True
    return took


def served_from_pal_dir(rt: Runtime) -> str | None:
    """The population version this replica serves from PLURALIGN_PAL_DIR, which its clock row says (replicas starting
    on another folder holding another model are refused: `service.runtime.refuse_another_model`); None while it serves
    a promoted model of its own data folder instead (a leftover its start warned of), which says nothing of the folder."""
    if (rt.settings.data_path / PROMOTED_PAL / "meta.json").exists():
        return None
    return rt.rewards.version


def weights_served_from_pal_dir(rt: Runtime) -> str | None:
    """The weights' digest (`service.rewards.weights_digest`) of the model `served_from_pal_dir` names, or None where
    it names none (or the model was built here, untrained)."""
    if (rt.settings.data_path / PROMOTED_PAL / "meta.json").exists():
        return None
    return rt.rewards.weights


def model_served_from_pal_dir(rt: Runtime) -> str | None:
    """The digest (`service.rewards.model_digest`) of the model `served_from_pal_dir` names, or None where it names
    none (or the model was built here, untrained)."""
    if (rt.settings.data_path / PROMOTED_PAL / "meta.json").exists():
        return None
    return rt.rewards.digest


class DeletionSweep(Periodic):
    """Applies the store's deletion records to this replica's files every `interval_s` seconds (and
    at start), each record once (`Applied`, kept in `APPLIED_FILE`); records this replica wrote
    itself are applied already (`record`). Each pass also compares this replica's clock with the
    others' (`clocks`, `pluralign.store.clocks`): DELETEs are refused while they disagree (`clocks_disagree`)."""

    def __init__(self, rt: Runtime, interval_s: float):
        super().__init__(interval_s, "deletion-sweep", "applying deletion records")
        self.rt = rt
        # a replica whose row has not changed in 3 passes (at least a minute) has stopped
        self.clocks = ReplicaClocks(rt.store.db, rt.settings.replica_index, stale_after_s=max(3 * interval_s, 60.0),
                                    replicas=rt.settings.replicas, folder_id=folder_id(rt.settings.data_path),
                                    served=lambda: served_from_pal_dir(rt), served_weights=lambda: weights_served_from_pal_dir(rt),
                                    served_model=lambda: model_served_from_pal_dir(rt))
        self.path = rt.settings.data_path / APPLIED_FILE
        self._lock = threading.Lock()  # orders reads and writes of APPLIED_FILE
        # users whose feedback this replica moved into the store lately -> when (unix seconds): a record
        # of their DELETE may arrive after the move (`apply_deletions`); kept SLACK_S
        self._moved: dict[tuple[str, str], float] = {}
        self._moved_lock = threading.Lock()
        rt.moved_hooks.append(self.on_moved)
        # the records applied lately: (what they forget, when their pass ended, unix seconds; None while it runs),
        # kept SLACK_S: an import in flight meanwhile looks at them once its rows are in the log (`applied_since`)
        self._applied: list[list] = []  # [Forget, float | None] each
        self._applied_lock = threading.Lock()
        # the retraction records (`drop_retracted`) seen in the last SLACK_S seconds, by id; when its last read of them
        # began (unix seconds; None: none yet, the start's replay dropped what came before)
        self._retractions_seen: set[str] = set()
        self._retractions_read: float | None = None
        rt.chats.deleted_lately = self.deletes_chat  # a chat registering after a pass's `cut_deleted` asks its records

    def on_moved(self, rows: list[StoredPreference]) -> None:
        """A `Runtime.moved_hooks` entry: remember whose feedback was moved."""
        now = time.time()
        with self._moved_lock:
            for r in rows:
                self._moved[(r.tenant, r.user_id)] = now

    def moved_lately(self, since: float | None = None) -> set[tuple[str, str]]:
        """The users whose feedback this replica moved in the last SLACK_S seconds (and at or after `since`, unix
        seconds, when given)."""
        forgotten = time.time() - SLACK_S
        with self._moved_lock:
            self._moved = {key: at for key, at in self._moved.items() if at >= forgotten}
            return {key for key, at in self._moved.items() if since is None or at >= since}

    def deletes_chat(self, tenant: str, user_id: str, began: float) -> bool:
        """Whether records applied here lately (`applied_since` `began`, unix seconds) delete user `user_id` of `tenant`
        for a chat that began at `began` (`chat_of_deleted`): a chat registering as generating once the pass that stopped
        the others (`GeneratingChats.cut_deleted`) had looked (`GeneratingChats.deleted_lately`)."""
        return any(chat_of_deleted(forget, tenant, user_id, began) for forget in self.applied_since(began))

    def applied_since(self, since: float) -> list[Forget]:
        """What the records applied here forget whose pass was running at or after `since` (unix seconds), or runs
        now: an import that arrived at `since` may have reached the log after the pass looked at it
        (`forget_if_deleted_since`). Records whose pass ended more than SLACK_S ago are forgotten here."""
        now = time.time()
        with self._applied_lock:
            self._applied = [e for e in self._applied if e[1] is None or e[1] >= now - SLACK_S]
            return [forget for forget, ended in self._applied if ended is None or ended >= since]

    def record(self, tenant: str, user_id: str, began_at: float, made_until: float | None = None) -> Deletion:
        """A DELETE answered here (its own steps clean this replica's files), begun at `began_at` (unix
        seconds: what the user sent before it is deleted), its rows just gone from the store: recorded
        now for the other replicas, and noted as applied here. `made_until` (unix seconds): what was made before it
        may hold the user's rows from before the DELETE (`Deletion.made`); None: now, when it is recorded."""
        return self.record_many(tenant, [user_id], began_at, made_until)[0]

    def record_many(self, tenant: str, user_ids: list[str], began_at: float, made_until: float | None = None) -> list[Deletion]:
        """`record` for each of `user_ids` (a batch of a tenant's removal), in one commit."""
        now = time.time()
        records = [new_deletion(tenant, u, now, self.rt.settings.replica_index, began_at=began_at, made_until=made_until)
                   for u in user_ids]
        self.rt.store.record_deletion(*records)
        self._note_applied(records)
        return records

    def record_tenant(self, tenant: str, began_at: float) -> Deletion:
        """A removal of `tenant` answered here, begun at `began_at` (unix seconds), its users deleted: recorded for the
        other replicas (`new_tenant_deletion`: their letters' rows of the tenant go), and noted as applied here."""
        record = new_tenant_deletion(tenant, time.time(), self.rt.settings.replica_index, began_at=began_at)
        self.rt.store.record_deletion(record)
        self._note_applied([record])
        return record

    def run_once(self) -> int:
        """Apply the records not applied yet; returns how many. A record whose files could not all be
        rewritten (ForgetIncomplete) stays unapplied and is tried again next time."""
        self.check_clocks()
        self.drop_retracted()
        # the vectors of calibration pools another replica replaced or removed since they were read here: none kept past
        # this pass (not until this replica's next request of the tenant, or for good)
        try:
            self.rt.calibration_vectors.drop_replaced(self.rt.settings.calibration_pools_path)
            forget_old_removals(self.rt.settings.calibration_pools_path)  # none noted past its hour
        except OSError as exc:  # the shared volume away a moment: this pass's records are applied all the same
            log.warning("the calibration pools' folder could not be looked at for replaced pools (nor its ledger pruned): %s", exc)
        with self._lock:
            applied = self._load()
        pending = applied.pending(self.rt.store.deletions_since(applied.since()))
        if not pending:
            return 0
        entry: list = [_forget_of(self.rt, pending), None]
        self.applied_since(math.inf)  # those older than SLACK_S go
        with self._applied_lock:
            self._applied.append(entry)  # before the pass looks at the log: an import appending after that sees it
        # first, before the files (seconds of rewrites): chats of those users still generating here stop now (a stream of
        # a deleted user's adapter does not go on after their DELETE answered on another replica)
        if cut := self.rt.chats.cut_deleted(partial(chat_of_deleted, entry[0])):
            log.info("stopped %d chats of users other replicas deleted", cut)
        try:
            files = apply_deletions(self.rt, pending)
        finally:
            entry[1] = time.time()
        self._note_applied(pending)
        log.info("applied %d deletion records of other replicas (%d files)", len(pending), files)
        self.rt.metrics.inc("pluralign_deletions_applied_total", len(pending),
                            help="other replicas' user deletions applied to this replica's files")
        return len(pending)

    def drop_retracted(self) -> int:
        """Rows other replicas took back lately (`pluralign.store.retractions`, begun since this method's last read of
        them, less SLACK_S; each once): every segment of this replica's feedback log holding a record of their user is
        rewritten with only what is pending (`FeedbackLog.drop_moved`, once per user a pass), so the moved record of a
        row taken back leaves this folder now, not at the next start's replay (`Ingestor._drop_retracted`). A failure is
        logged and tried again at the next pass. Returns how many users' segments were rewritten."""
        now = time.time()
        # since the last read began, less SLACK_S (the clocks' skew, a record written late): with the
        # last SLACK_S seconds only, a pass more than that after the one before (`deletion_sweep_s` past 600 s, passes
        # that failed) would never see what came in between, left in this replica's files until its restart
        since = now if self._retractions_read is None else min(now, self._retractions_read)
        try:
            # its own retractions rewrote its log themselves (`service.users.retractions.retract`)
            found = self.rt.store.retractions_since(since - SLACK_S, other_than=self.rt.settings.replica_index)
        except Exception as exc:  # noqa: BLE001 (Lance's errors are of many kinds; the next pass looks again)
            log.warning("could not read the retraction records through the store: %s", exc)
            return 0
        self._retractions_read = now
        self._retractions_seen &= found.keys()  # older than SLACK_S: not read again
        unseen: dict[tuple[str, str], list[str]] = {}  # (tenant, user_hash) -> its records not seen yet
        for rid, found_key in found.items():
            if rid not in self._retractions_seen:
                unseen.setdefault(found_key, []).append(rid)
        if not unseen:  # most passes: no user of the log hashed, no file looked at
            return 0
        logged = {(t, user_hash(t, u)): (t, u) for t, u in self.rt.ingest.log.users()}
        rewritten = 0
        for found_key, rids in unseen.items():  # each user's segments rewritten once, however many rows they took back
            if (key := logged.get(found_key)) is not None:
                try:
                    self.rt.ingest.log.drop_moved(*key)
                except Exception as exc:  # noqa: BLE001 (no room: tried again at the next pass; the start drops it too)
                    log.error("a row another replica took back stays in this replica's feedback log for now: %s", exc)
                    continue
                rewritten += 1
            self._retractions_seen.update(rids)
        return rewritten

    def check_clocks(self) -> None:
        """Compare the replicas' clocks (`clocks.beat`); a failure (the store unreachable) is logged and
        leaves the last finding, and the records are applied all the same."""
        refusing, counted = self.clocks_disagree(), self.replicas_problem()
        try:
            self.clocks.beat()
        except Exception as exc:  # Lance's errors are of many kinds; the next pass looks again
            log.warning("could not compare the replicas' clocks through the store: %s", exc)
            return
        counts = self.replicas_problem()
        if counts is not None and counts != counted:  # when it begins, or which replicas say what changes
            log.error("replicas disagree on PLURALIGN_REPLICAS (%s); give every replica the same PLURALIGN_REPLICAS "
                      "and its own PLURALIGN_REPLICA_INDEX (deploy/README.md)", counts)
        elif counts is None and counted is not None:
            log.warning("replicas agree on PLURALIGN_REPLICAS again (%d)", self.rt.settings.replicas)
        problem = self.clocks_problem()
        if problem is not None and not refusing:  # once when it begins, not at every pass (the skew read differs each time)
            log.error("replica clocks disagree or cannot be compared (%s; at most PLURALIGN_STORE_SYNC_MS is allowed): "
                      "DELETEs are refused until they agree again (fix NTP on the replicas' machines)", problem)
        elif problem is None and refusing:
            log.warning("replica clocks agree again: DELETEs are answered again")

    def clocks_disagree(self) -> bool:
        """Whether the last pass saw clocks further apart than a deletion record's slack (`store_sync_ms`), or
        another process writing as this replica (the same index: its clock is never compared)."""
        return self.clocks_problem() is not None

    def clocks_problem(self) -> str | None:
        """Why DELETEs are refused, in words for the DELETE's 503 and /health; None when they are not."""
        if self.clocks.index_shared():
            i = self.rt.settings.replica_index
            return (f"another process also runs as replica {i} (PLURALIGN_REPLICA_INDEX={i} on two machines?), so their "
                    f"clocks are never compared; give each replica its own index in 0..{self.rt.settings.replicas - 1}")
        if self.clocks.skew.seconds > (self.rt.settings.sync_seconds or 0.0):
            return self.clocks.skew.words()
        return None

    def replicas_problem(self) -> str | None:
        """Live replicas set up with another PLURALIGN_REPLICAS than this one's, in words naming both values (for the
        log, /health's `replicas` and /metrics' `pluralign_replica_counts_disagree`); None when none was seen."""
        found = self.clocks.counts
        return counts_words(found, self.rt.settings.replicas) if found else None

    def _load(self) -> Applied:
        """What was applied here; a damaged file counts as nothing applied (every record is applied
        again, which takes only data from before each DELETE) and is written whole at the next note."""
        try:
            return Applied.load(self.path)
        except ValueError:
            log.warning("%s is damaged: applying every deletion record again", self.path)
            return Applied()

    def _note_applied(self, records: list[Deletion]) -> None:
        with self._lock:
            self._load().add(records, now=time.time()).save(self.path)
