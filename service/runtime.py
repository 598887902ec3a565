"""What the app holds while it runs: settings, tables, models, keys and metrics, built once at start."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from cachetools import TTLCache

from pluralign.embed.base import Encoder
from pluralign.embed.cache import ScopedVectors
from pluralign.files import copy_into_place, folder_lock, keep_private
from pluralign.policy.adapters import AdapterPool, AdapterRegistry
from pluralign.policy.generator import Generator
from pluralign.store import Store, StoredPreference, clocks
from pluralign.store.deletions import Forget, user_hash
from pluralign.store.feedback_log import FeedbackLog
from pluralign.store.ingest import Ingestor
from pluralign.store.tables import SharedStore
from pluralign.urls import redacted
from service.auth import KeyRing
from service.calibration.pools import adopt_own_pools
from service.calibration.vectors import CalibrationVectors
from service.chat.keys import ChatKeys
from service.deletions import FOLDER_ID_FILE, DeletionSweep, folder_id
from service.dropped_refits import DROPPED_REFITS_FILE, DroppedRefits
from service.encoders import is_model_folder, make_encoder, served_setting
from service.metrics import DECLARED_COUNTERS, Metrics
from service.owed_retractions import OWED_RETRACTIONS_FILE, OwedRetractions
from service.pal_dir import PalDirWatch
from service.promoted import PROMOTED_PAL, remove_crash_leftovers, restore_promoted
from service.requestid import per_request
from service.rewards import UserRewards, checkpoint_version, holds_a_model
from service.scheduler import DaemonWorker, FairScheduler
from service.settings import (
    GENERATOR_SETTING,
    ReplicasDisagree,
    Settings,
    StartedAlone,
    check_server_url,
    unknown_generator,
)
from service.startup_files import check_pal_dir_rewritable
from service.stopping import GeneratingChats
from service.users.exports import ExportSlots
from service.users.journal import JOURNAL_FOLDER, DeleteJournal
from service.users.vectors import OWED_FOLDER, OwedVectors
from service.waiting_refits import WAITING_REFITS_FILE, WaitingRefits

log = logging.getLogger("pluralign.service")

# tenants whose DELETEs run at once (`Runtime.deletes`): with replicas each waits ~`store_sync_ms` + 2 s on its thread
DELETE_WORKERS = 8
# the vectors of next-comparison pools kept in memory (`Runtime.pool_vectors`), their keys and bookkeeping counted
# (`VECTOR_ENTRY_BYTES`): ~29,000 texts at 384-d, a questionnaire of 64 answers for some 200 tenants at once
POOL_VECTOR_BYTES = 64 << 20
# the vectors of `POST /v1/rewards/score`'s texts kept in memory (`Runtime.score_vectors`): apart from the pools', which
# one tenant's scoring of fresh candidates would push out for every tenant; ~14,000 texts at 384-d.
# Both are shared fairly between tenants: past the bound the tenant holding the most gives up its least recently used
# (`ScopedVectors`; in one LRU, one tenant's fresh texts would push out every other tenant's)
SCORE_VECTOR_BYTES = 32 << 20
# the vectors of tenants' stored calibration pools held in memory (`Runtime.calibration_vectors`), one version per tenant:
# ~200 of the largest pools (32 prompts, 64 answers at 384-d); one pushed out is read again from beside its pool, not embedded
CALIBRATION_VECTOR_BYTES = 32 << 20
DELETE_MEMORY_S = 3600.0  # how long a user's DELETE is remembered for requests that began before it (longer than any chat)


class ForgetIncomplete(RuntimeError):
    """Population files that could not be read or rewritten without a deleted user (damaged, of
    another schema, unwritable): they may still hold them. Raised once every other file was
    rewritten; the message names the files (for the log, never a response)."""

    def __init__(self, rewritten: int, failures: list[str]):
        super().__init__(f"{len(failures)} population file(s) may still hold the deleted user: " + "; ".join(failures))
        self.rewritten, self.failures = rewritten, failures


def _before_done(waiting: WaitingRefits, owed: OwedRetractions, store: Store | None, rows: list[StoredPreference]) -> None:
    """The ingest worker's `before_done`: the users of rows just stored owed their refits (`WaitingRefits.owe`) and,
    with replicas (`store` given), the rows a retraction through another replica took back meanwhile owed their
    retraction (`OwedRetractions.check`), both on disk before the feedback log lets go of the rows."""
    waiting.owe((r.tenant, r.user_id) for r in rows)
    if store is not None:
        owed.check(store, rows)


def make_generator(
    name: str, model_id: str | None = None, api_key: str | None = None, timeout_s: float = 120.0, retries: int = 2,
    own_process: bool = False, stall_s: float = 60.0, replica: str | None = None, stream_idle_s: float = 60.0,
    stream_timeout_s: float = 600.0,
) -> Generator:
    """`smollm2`, a model folder, or `openai:URL` for an OpenAI-compatible server (e.g. vLLM).
    `own_process`: a local model runs in a child process (`pluralign.policy.process`), so
    generation never holds this process's GIL while light requests are served; `stall_s`: its
    `stall_timeout_s` (a child making no progress that long is killed and replaced). `replica`: a remote
    generator's part of its adapters' names on the server (`RemoteGenerator`; `served_replica`); `timeout_s`, `retries`,
    `stream_idle_s` and `stream_timeout_s` its `RemotePolicy`."""
    if name.startswith("openai:"):
        from pluralign.embed.models import SMOLLM2_ID
        from pluralign.policy.remote import RemoteGenerator, RemotePolicy

        check_server_url(name, GENERATOR_SETTING)  # (Settings.check_models: the same, before anything loads)

        policy = RemotePolicy(timeout_s=timeout_s, max_retries=retries, stream_idle_s=stream_idle_s, stream_timeout_s=stream_timeout_s)
        from service.requestid import outgoing_headers

        return RemoteGenerator(name.removeprefix("openai:"), model_id or SMOLLM2_ID, api_key=api_key, policy=policy,  # type: ignore[return-value]
                               request_headers=outgoing_headers, replica=replica)
    if name == "smollm2":
        if own_process:
            from pluralign.embed.models import SMOLLM2_ID, smollm2_dir
            from pluralign.policy.process import ProcessGenerator

            return ProcessGenerator(smollm2_dir(), SMOLLM2_ID, stall_timeout_s=stall_s)  # type: ignore[return-value]
        return Generator.smollm2()
    if is_model_folder(name):  # never "": pathlib's working folder
        if own_process:
            from pluralign.policy.process import ProcessGenerator

            return ProcessGenerator(name, stall_timeout_s=stall_s)  # type: ignore[return-value]
        return Generator.from_folder(name)
    raise ValueError(unknown_generator(name))  # (Settings.check_models: the same, before anything loads)


def check_context(settings: Settings, generator: Generator) -> None:
    """`max_tokens`, each chat's default, leaves room for a prompt in the generator's context (its
    `context_tokens`: a local model's `max_position_embeddings`; a remote one says none) where `max_context_tokens`
    is unset: else every chat that sent no `max_tokens` is a 400 naming `messages` ("cannot fit the prompt budget of
    0 tokens"). A set `max_context_tokens` is checked with the settings (`service.settings.RULES`); this is the same
    rule for the model's own context, known only once it is loaded (the service does not start on it).
    Raises ValueError naming the setting."""
    context = None if settings.max_context_tokens is not None else getattr(generator, "context_tokens", None)
    if context is not None and settings.max_tokens >= context:
        raise ValueError(f"PLURALIGN_MAX_TOKENS (setting max_tokens): {settings.max_tokens} leaves no room for a prompt in the "
                         f"generator's context of {context} tokens ({generator.model_id}): every chat that sent no "
                         f"`max_tokens` would be refused; set it below {context}")


def served_replica(settings: Settings) -> str:
    """This service's part of the names its adapters have on a remote generation server (`RemoteGenerator.replica`):
    8 hex digits of the sha256 of its store, `replica_index` and data folder (its id, `folder_id`: drawn at the folder's
    first start and kept in it), the same at each start of it (a restart's loads are the copies its earlier start
    loaded: vLLM's "already loaded"), different for each replica on one store and for services on other stores sharing
    the server, and for two processes on one store with one index: two started at once as one replica (the start's
    check, `set_up_unlike`, sees no row of the other yet), or two services each alone (`replicas` 1, which write no
    clock rows) given one `store_uri`, where shared names would let each one's eviction or
    drop unload the adapter the other was serving (a 404, a load again); two processes on one data folder are refused
    by its lock (`pluralign serve`). Not random at each start: every restart would load new copies, and
    the earlier ones would stay on the server until it restarted."""
    place = f"{settings.lancedb_uri}#{settings.replica_index}#{folder_id(settings.data_path)}"
    return hashlib.sha256(place.encode()).hexdigest()[:8]


# under the data folder, while a row a refit withdrew waits for its purge (`Store.withdrawn_note`): the next start purges
WITHDRAWN_NOTE = "withdrawn-purge-owed"
REFIT_STOP_S = 10.0  # how long the service's stop waits for the refit running then (a fit and one row written: well under)
# how long it then waits for the purges of the rows refits withdrew (`Store.withdraw_user`): with replicas each waits for
# the store's lease (the DELETE that made the row be withdrawn holds it `store_sync_ms` + 2 s) and holds it as long
WITHDRAWN_STOP_S = 10.0  # with REFIT_STOP_S and the 5 s graceful wait, inside Kubernetes' default 30 s grace
NOT_TRIED_LOG_S = 60.0  # a chat answered "not tried" is logged once in this time (a flood of chats: one line)


class OncePer:
    """Whether a log line about `what` is due: the first time, when `what` changed, or once `every_s` passed."""

    def __init__(self, every_s: float):
        self.every_s, self._what, self._said = every_s, None, 0.0
        self._lock = threading.Lock()

    def due(self, what) -> bool:
        now = time.monotonic()
        with self._lock:
            if what == self._what and now - self._said < self.every_s:
                return False
            self._what, self._said = what, now
            return True


class KeyedLocks:
    """A lock per (tenant, key), made when asked for and kept only while someone holds or waits on it (a
    `weakref.WeakValueDictionary`): one tenant's requests for one key (a user, an Idempotency-Key), whichever
    of the tenant's API keys sent them, share a lock; two keys, or two tenants, never do, so one tenant holding
    a lock long (a user's DELETE holds that user's for all of its steps) never holds up another's requests.
    The table holds only the locks in use, however many tenants and keys the service has seen. `make`
    builds one lock (`threading.RLock`, `asyncio.Lock`); a caller keeps what it gets while it uses it."""

    def __init__(self, make: Callable[[], object]):
        self.make = make
        self._locks: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def __call__(self, tenant: str, key: object):
        with self._lock:
            lock = self._locks.get((tenant, key))
            if lock is None:
                lock = self._locks[(tenant, key)] = self.make()
            return lock


def open_store(settings: Settings, encoder: Encoder) -> Store:
    """The tables at `settings.lancedb_uri`. A process set up as the store's only one (`replicas` 1) on a store that
    replicas wrote their clocks to within the time their comparison counts a stopped one out (3 passes of
    `deletion_sweep_s`, at least a minute) is StartedAlone (a ValueError) naming PLURALIGN_REPLICAS, the recent rows' ages
    and the seconds left to wait: alone, it kept serving what it read
    at its start (feedback through them never showed, a user DELETEd through them stayed), read their DELETEs' removed
    files as damage (503 "a file of it is damaged"), and purged beside their appends without their lease."""
    within_s = max(3 * settings.deletion_sweep_s, 60.0)
    try:
        store = Store(
            settings.lancedb_uri, encoder.encoder_id, encoder.dim, history_bytes=settings.history_cache_mb << 20, cache_bytes=settings.store_cache_mb << 20,
            storage_options=settings.storage_options, sync_seconds=settings.sync_seconds, shared_within_s=within_s,
            withdrawn_note=settings.data_path / WITHDRAWN_NOTE,
        )
        # PLURALIGN_STORE_SYNC_MS set without PLURALIGN_REPLICAS: it syncs and takes the lease (Store checks only a store
        # opened without), but applies no other replica's DELETE to its folder and queues every user's adapter jobs
        if settings.replicas == 1 and settings.sync_seconds is not None and (found := store.recent_replicas(within_s)):
            raise SharedStore(settings.lancedb_uri, found, within_s)
        if settings.replicas > 1 and (refused := set_up_unlike(settings, store.recent_clock_rows(within_s), within_s)):
            raise ReplicasDisagree(refused)
        store.finish_withdrawn()  # not before: a refused start must take no turn (killed holding the lease, others wait)
        return store
    except SharedStore as exc:
        raise StartedAlone(
            f"PLURALIGN_REPLICAS (setting replicas) is {settings.replicas}: {exc}. Give every replica the same "
            "PLURALIGN_REPLICAS and its own PLURALIGN_REPLICA_INDEX (deploy/README.md), or, if they have all stopped for "
            f"good, start this one again in {exc.wait_s:.0f} s, when no row is that recent by this machine's clock"
        ) from None


def claim_index(store: Store, settings: Settings) -> None:
    """Write this replica's clock row as soon as its start has its population model (`Runtime.build`; the sweep's passes
    write it again once the service runs): from then on a process starting as the same PLURALIGN_REPLICA_INDEX on
    another data folder is refused by its check (`set_up_unlike`). Were the row to come with the sweep's
    first pass, once the whole runtime was built and the app started, two processes started within those seconds would
    both serve as the one replica, sharing its users and its adapters' names on a remote generation server (each one's
    eviction unloading the other's), until their sweeps saw each other (/health `degraded`, DELETEs refused). Processes
    whose checks both ran before either wrote are still not told apart here (their sweeps' passes see each other). Not
    written before the model is there: a replica started beside this one on an empty PLURALIGN_PAL_DIR would be refused
    (`refuse_a_model_of_its_own`) while this one bootstraps it. A row that cannot be written is logged: the sweep's first
    pass writes it."""
    within_s = max(3 * settings.deletion_sweep_s, 60.0)
    try:
        clocks.ReplicaClocks(store.db, settings.replica_index, stale_after_s=within_s, replicas=settings.replicas,
                             folder_id=folder_id(settings.data_path)).beat()
    except Exception as exc:  # Lance's errors are of many kinds (the sweep's own pass logs them the same way)
        log.warning("could not write this replica's clock row at its start (its deletion sweep writes it): %s", exc)


def set_up_unlike(settings: Settings, rows: list[dict], within_s: float, now: float | None = None) -> str | None:
    """Why a replica of `settings` must not start beside the replicas whose clock `rows` were written within `within_s`
    seconds (`clocks.recent_rows`), in words naming the setting and both values, or None. Refused: a replica set up with
    another PLURALIGN_REPLICAS (or an index this count has no place for: `clocks.counts_disagree`), and a process on
    another data folder writing as this one's PLURALIGN_REPLICA_INDEX (its own row from its last run on this folder is a
    restart). Either divides the users unlike the others (`service.replicas.owner`: a user's adapter jobs queued twice,
    or by none), and two processes on one index never compare their clocks."""
    now = time.time() if now is None else now
    index, count = settings.replica_index, settings.replicas
    others = [r for r in rows if r["replica"] != index]
    counts = clocks.counts_disagree(others, count)
    mine = folder_id(settings.data_path)
    twins = [r for r in rows if r["replica"] == index and clocks.folder_of(r["instance"]) not in (None, mine)]
    if not counts and not twins:
        return None
    latest = max(r["at"] for r in rows if r["replica"] in counts or r in twins)
    wait = f"{max(0.0, latest + within_s - now):.0f} s"
    said = [f"PLURALIGN_REPLICAS (setting replicas): {clocks.counts_words(counts, count)}"] if counts else []
    if twins:
        said.append(f"PLURALIGN_REPLICA_INDEX (setting replica_index) is {index} here, and replica {index}'s clock row was "
                    f"written {now - max(r['at'] for r in twins):.0f} s ago by a process on another data folder, set up with "
                    f"PLURALIGN_REPLICA_INDEX={index} too: two replicas with one index own the same users (another index's "
                    f"own none) and never compare their clocks. If that process was this replica's last run on a data folder "
                    f"since replaced (a new volume, or its {FOLDER_ID_FILE} removed), nothing is wrong: start it again in {wait}")
    change = (" To change how many replicas run, stop them all, then start them with the new count once the old ones' rows "
              f"are {within_s:.0f} s old: this start is taken {wait} from now if those replicas stop now") if counts else ""
    return (f"{'; '.join(said)}. Give every replica the same PLURALIGN_REPLICAS and its own PLURALIGN_REPLICA_INDEX in "
            f"0..{count - 1} (deploy/README.md).{change}")


def refuse_a_model_of_its_own(settings: Settings, store: Store) -> None:
    """With several replicas, a start whose PLURALIGN_PAL_DIR holds no population model while another replica wrote its
    clock row within the time a stopped one counts out (3 passes of `deletion_sweep_s`, at least a minute) raises
    ReplicasDisagree (a ValueError) naming PLURALIGN_PAL_DIR, the folder and those replicas: they serve the model in the
    folder they share, and a bootstrap here (a mistyped path, the shared volume not mounted) would serve another, fitting
    users against two population models (seen in a trial deployment: /health k=4 on one replica, k=3 on the other).
    Replicas first started together on an empty folder have written no row yet: one bootstraps it, the others load it
    (one whose look straddles the end of that bootstrap, the other's row written meanwhile, finds the model there)."""
    if settings.replicas == 1 or holds_a_model(settings.pal_path):
        return
    within_s = max(3 * settings.deletion_sweep_s, 60.0)
    others = sorted({r["replica"] for r in store.recent_clock_rows(within_s) if r["replica"] != settings.replica_index})
    # looked at again once a row is seen: a replica started together may have finished bootstrapping the folder and
    # written its row (`claim_index`, at once) between the two looks; looked at once only, this start would be
    # refused though the folder held the model both serve
    if others and not holds_a_model(settings.pal_path):
        named = ", ".join(f"replica {i}" for i in others)
        raise ReplicasDisagree(
            f"PLURALIGN_PAL_DIR (setting pal_dir) {settings.pal_path} holds no population model, while {named} ran on this "
            f"store within the last {within_s:.0f} s, serving the one in the PLURALIGN_PAL_DIR they share: this replica "
            "would bootstrap a model of its own there and fit users against another population model. Give it the "
            "replicas' PLURALIGN_PAL_DIR (is the shared volume mounted?), or, when this is the folder they share, put the "
            "model they serve into it first (`pluralign promote`, deploy/README.md)")


def refuse_another_model(settings: Settings, store: Store, version: str, weights: str | None = None,
                         digest: str | None = None) -> None:
    """With several replicas, a start that loaded population version `version` (weights' digest `weights`,
    `service.rewards.weights_digest`; model digest `digest`, `service.rewards.model_digest`) from PLURALIGN_PAL_DIR while the live replicas serve another (their clock rows
    say which: `pluralign.store.clocks.served_pal_weights`) raises ReplicasDisagree (a ValueError) naming
    PLURALIGN_PAL_DIR, the folder and both models: a folder holding a different model (another deployment's, a copy
    restored from a backup, a mistyped path) would have it fit users against another population model (an empty
    folder is told too: `refuse_a_model_of_its_own`). Models are compared by the model's digest, the same whatever the
    release, which adds to the weights' digest what else changes what is served (PAL's population prior: by weights
    alone two folders of the same weights and other priors would read as one model), not by version, which hashes the
    meta.json fields the release knows (a later release reading a field this one skips would see another version of
    the same folder, and be refused beside this one); a
    row without it (a release before versions53) by the weights' digest, one without that (before versions52) by
    version (`served_pal`), all each says.
    A model promoted just before this start is not yet served by the others (they take it up within two passes of
    `deletion_sweep_s`): the start waits up to 3 passes for one of them to serve it (or for a replica starting
    meanwhile on it). Live means their row was written again meanwhile: the rows of replicas stopped (all of them,
    for a rolling restart after a promotion) count for nothing, nor do those of releases before upgrade51, which say
    nothing of their model."""
    if settings.replicas == 1:
        return
    within_s = max(3 * settings.deletion_sweep_s, 60.0)

    def theirs() -> dict[int, tuple[float, bool | None, str]]:  # replica -> (its row's time, same model?, what it serves)
        return {r["replica"]: (r["at"], _serves_the_same(r, version, weights, digest), _served_words(r))
                for r in store.recent_clock_rows(within_s) if r["replica"] != settings.replica_index}

    first = theirs()
    if not any(same is not None for _, same, _ in first.values()) or any(same for _, same, _ in first.values()):
        return
    # (`sync_seconds`, not `store_sync_ms`: None unless set, 1 s with several replicas; `store_sync_ms`'s
    # default would make every such start a TypeError)
    deadline = time.monotonic() + 3 * settings.deletion_sweep_s + (settings.sync_seconds or 0.0)
    mine = f"{version}" + (f" (weights {weights}, digest {digest})" if weights else "")
    log.info("PLURALIGN_PAL_DIR %s holds population model %s, which no other replica serves yet: waiting up to %.0f s "
             "for them to take it up (a promotion just before this start)", settings.pal_path, mine,
             deadline - time.monotonic())
    while True:
        time.sleep(min(settings.deletion_sweep_s, 1.0))
        now = theirs()
        live = {i: said for i, (at, same, said) in now.items() if same is not None and i in first and at != first[i][0]}
        if any(same for _, same, _ in now.values()):  # another replica serves it (one starting beside this one too)
            return
        if time.monotonic() >= deadline:
            break
    if not live:
        return
    named = ", ".join(f"replica {i} serves {said}" for i, said in sorted(live.items()))
    raise ReplicasDisagree(
        f"PLURALIGN_PAL_DIR (setting pal_dir) {settings.pal_path} holds population model {mine}, while {named}, "
        f"from the PLURALIGN_PAL_DIR they share, and did not take this one up in {3 * settings.deletion_sweep_s:.0f} s: "
        "this folder holds another model than theirs (another deployment's folder, a restored copy, a mistyped path), "
        "and this replica would fit users against another population model. Give it the replicas' PLURALIGN_PAL_DIR, or, "
        "to serve this model, promote it into theirs (`pluralign promote`, deploy/README.md)")


def _serves_the_same(row: dict, version: str, weights: str | None, digest: str | None = None) -> bool | None:
    """Whether the writer of clock `row` serves the model a start loaded (`version`, `weights`, `digest`): by the model's
    digest where both say one, else by the weights' digest, else by version; None where the row says none of them (a
    release before upgrade51)."""
    model = clocks.served_pal_model(row)
    if model is not None and digest is not None:
        return model == digest
    theirs = clocks.served_pal_weights(row)
    if theirs is not None and weights is not None:
        return theirs == weights
    served = clocks.served_pal(row)
    return None if served is None else served == version


def _served_words(row: dict) -> str:
    """What the writer of clock `row` serves, for a message: its version, and its weights' and model's digests where it
    says them."""
    weights, model = clocks.served_pal_weights(row), clocks.served_pal_model(row)
    said = ", ".join(f"{what} {value}" for what, value in (("weights", weights), ("digest", model)) if value)
    return f"{clocks.served_pal(row)}" + (f" ({said})" if said else "")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    encoder: Encoder
    generator: Generator
    rewards: UserRewards
    keys: KeyRing
    adapters: AdapterPool  # per-user LoRA adapters loaded into the generator, by (tenant, user)
    ingest: Ingestor  # acknowledged feedback: durable in the log, embedded and moved into the table behind
    # called with the rows of each batch the ingestor moved into the table (admin's adapter trigger, refits)
    moved_hooks: list[Callable[[list[StoredPreference]], None]] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics)
    _compacting: threading.Lock = field(default_factory=threading.Lock)
    # refits of users' reward weights run here, one at a time, after the feedback was acknowledged
    # (a daemon thread: one stuck in a store call past the stop's REFIT_STOP_S does not hold the process's exit)
    background: DaemonWorker = field(default_factory=lambda: DaemonWorker("refit"))
    pending_refits: set = field(default_factory=set)  # the users (tenant, user_id) whose background refit is queued
    # tenant -> deque of its queued refits (user_id, the context of the request that caused it), oldest first: the
    # refit thread takes the tenants in turn (`service.users.services.queue_refits`, `_next_refit`)
    refit_turns: dict = field(default_factory=dict)
    refit_lock: threading.Lock = field(default_factory=threading.Lock)
    refits_stopped: threading.Event = field(default_factory=threading.Event)  # the service stops: none runs or is queued
    # the users (tenant, user_id) whose background refits wait: their rows were moved while the feedback log had a
    # backlog, or replayed from it at the start (`Ingestor.replayed`); queued once the log is empty
    # (`service.feedback.services.refit_waiting`), or the stop dropped or refused them; what a stop finds here is kept
    # for the next start (`service.users.services.keep_dropped_refits`, `refit_dropped`)
    dropped_refits: set = field(default_factory=set)
    # the users of `dropped_refits`, of the queued refits and of the one running, on disk until the queue drains (a
    # crash loses none of them: `service.waiting_refits`); built in __post_init__
    waiting_refits: WaitingRefits | None = None
    # the user (tenant, user_id) whose background refit is running, None between refits: owed until it ended (a stop
    # that stops waiting for it, the waiting file written whole again meanwhile, keep it: `service.waiting_refits`)
    running_refit: tuple[str, str] | None = None
    # with replicas: rows stored here that a retraction through another replica took back meanwhile, on disk until
    # taken back (`service.owed_retractions`, `service.users.retractions.retract_arrived`); built in __post_init__
    owed_retractions: OwedRetractions | None = None
    # the users whose refits the last stop dropped, on disk for the next start (`service.dropped_refits`,
    # `service.users.services.refit_dropped`); built in __post_init__
    dropped_file: DroppedRefits | None = None
    # (tenant, population version) -> the tenant's pooled prior or None (too few fitted users), kept
    # `pooled_prior_ttl_s` (`service.users.services.pooled_prior_of`); built in __post_init__
    pooled_priors: TTLCache | None = None
    pooled_lock: threading.Lock = field(default_factory=threading.Lock)
    # (tenant, population version) -> how each prototype is described by the tenant's stored answers (a
    # profile's summary; `service.users.services.described_prototypes`), kept as the pooled priors are
    described: TTLCache | None = None
    # (tenant, encoder, text) -> the vector of a text of a next-comparison `pool` (`service.users.services`), so a
    # questionnaire's pool sent once per question is embedded once; a tenant's dropped with its pooled priors
    # (`forget_pooled`); built in __post_init__
    pool_vectors: ScopedVectors | None = None
    # the same for the texts of a `POST /v1/rewards/score`, so texts scored again are embedded
    # once; a cache of its own (in the pools' one, a tenant scoring fresh candidates would push
    # every tenant's pools out), dropped with the pool vectors (`forget_pooled`)
    score_vectors: ScopedVectors = field(default_factory=lambda: ScopedVectors(SCORE_VECTOR_BYTES))
    # the vectors of tenants' stored calibration pools, per tenant those of the version read last (vectors
    # stored beside the pool, read by every replica; `service.calibration.vectors`), dropped with the pool vectors
    calibration_vectors: CalibrationVectors = field(default_factory=lambda: CalibrationVectors(CALIBRATION_VECTOR_BYTES))
    # tenant -> how many times its cached priors were dropped (`forget_pooled`): an estimate read before
    # a drop is not cached after it
    pooled_generation: dict = field(default_factory=dict)
    # called with the deleted users (a `Forget`: one user inside their DELETE, under their lock, or other
    # replicas' deletion records); each returns how many files it removed (the admin area: their jobs,
    # snapshots and records)
    delete_hooks: list[Callable[[Forget], int]] = field(default_factory=list)
    # called with the deleted users once their rows are gone, under population_lock; each returns how
    # many files it rewrote without them (the admin area: population snapshots, PAL and EM artifacts of
    # its jobs; `forget_population_users`)
    population_hooks: list[Callable[[Forget], int]] = field(default_factory=list)
    # called with a deleted user's texts just before their vectors leave the embedding cache (the admin
    # area: the jobs running then may have read them and embed them after it, so they go again once each ends)
    vector_hooks: list[Callable[[list[str]], None]] = field(default_factory=list)
    # called with (tenant, user_id, since) by a retraction of one row of the user received at `since` (unix seconds),
    # under their lock, before the row leaves the store; each stops and removes what was made from their rows since
    # then and returns how many files went (the admin area: their adapter jobs and snapshots, `service.users.retractions`)
    retract_hooks: list[Callable[[str, str, float], int]] = field(default_factory=list)
    # with several replicas: other replicas' DELETEs applied to this one's files (built in __post_init__)
    deletion_sweep: DeletionSweep | None = None
    # with several replicas: a new population model put into the shared `pal_path` served once it settles (`service.pal_dir`)
    pal_dir_watch: PalDirWatch | None = None
    # whether a removal of the tenant runs in this process (the admin area's `TenantRemovals.removing`, None without
    # one): its batches finish the tenant's unfinished DELETEs, which `UnfinishedDeletes` then leaves to it
    removal_runs: Callable[[str], bool] | None = None
    # DELETEs begun and not finished, on disk, finished at the next start (built in __post_init__)
    delete_journal: DeleteJournal | None = None
    # purges of deleted users' vectors a busy embedding cache put off (`service.users.vectors`)
    owed_vectors: OwedVectors | None = None
    # held while population data is written from the store (a snapshot), copied into service or
    # rewritten without a deleted user: a snapshot is taken before a DELETE's rewrite (and rewritten)
    # or after the user's rows left the store, and a promotion copies an artifact before its rewrite
    # (the served copy is rewritten too) or after
    population_lock: threading.RLock = field(default_factory=threading.RLock)
    scheduler: FairScheduler | None = None  # generation's own threads, tenants in turn (built from settings)
    deletes: FairScheduler | None = None  # DELETEs' own threads, tenants in turn, one each at a time (built from settings)
    exports: ExportSlots | None = None  # exports being sent, per tenant and in all (built from settings)
    # when a chat answered "not tried" (the store known down) was last logged: once a minute, not every chat
    not_tried_said: OncePer = field(default_factory=lambda: OncePer(NOT_TRIED_LOG_S))
    chats: GeneratingChats = field(default_factory=GeneratingChats)  # the chats generating now (stopped by `cut` as the service stops)
    chat_keys: ChatKeys = field(default_factory=ChatKeys)  # chats sent with Idempotency-Key, answered or running (service.chat.keys)
    _user_locks: KeyedLocks = field(default_factory=lambda: KeyedLocks(threading.RLock))
    # (tenant, user_id) -> time.monotonic() of their latest DELETE, kept DELETE_MEMORY_S: a chat planned
    # before it (their history read, generating meanwhile) then stores nothing of them
    _deleted_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _deleted_lock: threading.Lock = field(default_factory=threading.Lock)

    _idempotency_locks: KeyedLocks = field(default_factory=lambda: KeyedLocks(asyncio.Lock))

    def idempotency_lock(self, tenant: str, key: str) -> asyncio.Lock:
        """Orders the requests carrying one Idempotency-Key (on the event loop): check, then store. Held
        across an import's wait for its user's unfinished DELETE: the key's own (`KeyedLocks`)."""
        return self._idempotency_locks(tenant, key)

    _import_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def import_lock(self, tenant: str) -> asyncio.Lock:
        """Held (on the event loop) while one of the tenant's imports is read in a thread: a tenant's imports
        are read one at a time, so however many it sends at once it holds one thread running Python (and
        the interpreter lock other tenants' requests need) at a time; other tenants' imports do not wait. Held
        again from the check of an import's pref_ids to their append to the feedback log (`new_rows`), so of
        two imports of one id with other content the second sees the first's rows: a 409, not a dropped 201."""
        lock = self._import_locks.get(tenant)
        if lock is None:
            lock = self._import_locks[tenant] = asyncio.Lock()
        return lock

    def user_lock(self, tenant: str, user_id: str) -> threading.RLock:
        """The lock that orders a user's DELETE against writes of their row (refits, adapter
        promotion): held across read-then-write, so nothing fitted before a DELETE lands after it.
        The user's own (`KeyedLocks`): another user's DELETE, of any tenant, never holds it. Taken after the store's
        maintenance turn, before the job runner's lock (a DELETE purges the user's jobs under it; an adapter's promotion
        takes this lock without that one), the ingest worker's, the population lock and the store's commit lock
        (docs/operations.md, "Locks, and the order they are taken in")."""
        return self._user_locks(tenant, user_id)

    def note_deleted(self, tenant: str, user_id: str) -> None:
        """Record a DELETE of the user (called under their lock); forgets DELETEs older than DELETE_MEMORY_S."""
        now = time.monotonic()
        with self._deleted_lock:
            for key in [k for k, at in self._deleted_at.items() if now - at > DELETE_MEMORY_S]:
                del self._deleted_at[key]
            self._deleted_at[(tenant, user_id)] = now
        self.chat_keys.forget_user(tenant, user_id)  # their chats' answers are not given again

    def forget_pooled(self, tenant: str) -> None:
        """Drop the tenant's cached pooled priors, prototype descriptions, pool and score vectors (a user of theirs was
        deleted: nothing estimated from them, and none of their answers, is served again; a pool may have quoted
        their texts; the tenant is removed); an estimate being read meanwhile is answered but not cached."""
        self.pool_vectors.forget_scope(tenant)
        self.score_vectors.forget_scope(tenant)
        self.calibration_vectors.forget(tenant)
        with self.pooled_lock:
            self.pooled_generation[tenant] = self.pooled_generation.get(tenant, 0) + 1
            for cache in (self.pooled_priors, self.described):
                if cache is not None:
                    for key in [k for k in list(cache.keys()) if k[0] == tenant]:
                        cache.pop(key, None)

    def deleted_since(self, tenant: str, user_id: str, since: float) -> bool:
        """Whether the user was deleted at or after `since` (time.monotonic(), within DELETE_MEMORY_S
        when through this process; with several replicas, through any of them)."""
        with self._deleted_lock:
            if self._deleted_at.get((tenant, user_id), float("-inf")) >= since:
                return True
        return self.recorded_deleted_since(tenant, user_id, time.time() - (time.monotonic() - since))

    def recorded_deleted_since(self, tenant: str, user_id: str, since: float) -> bool:
        """With several replicas: whether a DELETE of the user through any of them was recorded at or
        after `since` (unix seconds; the store's deletion records, as stale as `store_sync_ms`)."""
        return self.deletion_sweep is not None and self.store.deleted_after(user_hash(tenant, user_id), since)

    def recorded_deletion_reaches(self, tenant: str, user_id: str, made_at: float) -> bool:
        """With several replicas: whether a DELETE of the user recorded through any of them reaches what was made at
        `made_at` (unix seconds; a job queued then): it may hold their rows from before that DELETE (`Deletion.made`).
        A DELETE finished from the journal for a user who came back once those rows had gone reaches only what was made
        before those rows left the store (not anything made before its record was written, nor before it
        began, which would leave what was made while it ran up to its store's step). As the
        sweep's `Forget` asks it (`service.deletions._forget_of`): what this replica made up to `store_sync_ms` after that
        may have read the store as it was before (asked without it, a job the sweep purges
        would have its adapter promoted first)."""
        stale = self.settings.sync_seconds or 0.0
        return self.deletion_sweep is not None and self.store.deletion_reaches(user_hash(tenant, user_id), made_at - stale)

    def __post_init__(self) -> None:
        if self.scheduler is None:
            s = self.settings
            # one chat of a tenant at a time while another tenant's waits; alone, a tenant leaves half the workers free
            # (4: 2), so a second and a third tenant's chats start at once and take the model in turns with the chats
            # running. (It costs a tenant alone no throughput: its chats take the one model in turns either way.) An
            # `openai:URL` server batches the calls it is sent at once: there a tenant alone leaves one free
            # (half kept free would halve a lone tenant's throughput)
            remote = sys.modules.get("pluralign.policy.remote")  # (loaded where a RemoteGenerator was made: no openai import)
            kept_free = 1 if remote is not None and isinstance(self.generator, remote.RemoteGenerator) else s.generation_workers // 2
            self.scheduler = FairScheduler(s.generation_workers, s.tenant_generations, s.generation_queue, running_per_tenant=1,
                                           kept_free=kept_free)
        if self.deletes is None:
            # one DELETE (or removal batch) of a tenant at a time, and up to
            # DELETE_WORKERS tenants' at once: their store steps take the store's turn in turn, and their waits for the
            # replicas (`seen_by_every_replica`, the store's removal of old versions) hold a thread of theirs only
            self.deletes = FairScheduler(DELETE_WORKERS, self.settings.tenant_deletes, self.settings.delete_queue, what="deletes",
                                         running_per_tenant=1, kept_free=DELETE_WORKERS - 1)
        if self.exports is None:
            self.exports = ExportSlots(self.settings.max_exports_per_tenant, self.settings.max_exports)
        if self.pooled_priors is None:
            self.pooled_priors = TTLCache(maxsize=1024, ttl=self.settings.pooled_prior_ttl_s)
        if self.described is None:
            self.described = TTLCache(maxsize=1024, ttl=self.settings.pooled_prior_ttl_s)
        if self.pool_vectors is None:
            self.pool_vectors = ScopedVectors(POOL_VECTOR_BYTES)
        self._open_data_files()
        if self.deletion_sweep is None and self.settings.replicas > 1:
            self.deletion_sweep = DeletionSweep(self, self.settings.deletion_sweep_s)
        if self.pal_dir_watch is None and self.settings.replicas > 1:
            self.pal_dir_watch = PalDirWatch(self, self.settings.deletion_sweep_s)
        # a DELETE's journal entry notes when its user's rows left the store as soon as they did, before the purge
        journal = self.delete_journal
        self.store.rows_gone = lambda tenant, users, before: journal.rows_gone(tenant, users, before, time.time())
        # a user's adapter found damaged (or for another base model): they get the fallback, counted once
        self.adapters.on_unusable = lambda tenant, user, error: self.metrics.inc(
            "pluralign_adapters_unusable_total", help=DECLARED_COUNTERS["pluralign_adapters_unusable_total"][0])

    def _open_data_files(self) -> None:
        """What the data folder keeps of work owed across a crash, each not given: the waiting refits, the owed
        retractions, the refits a stop dropped, the unfinished DELETEs and the owed vector purges."""
        data = self.settings.data_path
        if self.waiting_refits is None:
            self.waiting_refits = WaitingRefits(data / WAITING_REFITS_FILE)
        if self.owed_retractions is None:
            self.owed_retractions = OwedRetractions(data / OWED_RETRACTIONS_FILE, self.store.problems)
        if self.dropped_file is None:
            self.dropped_file = DroppedRefits(data / DROPPED_REFITS_FILE, self.store.problems)
        if self.delete_journal is None:
            self.delete_journal = DeleteJournal(data / JOURNAL_FOLDER)
        if self.owed_vectors is None:
            self.owed_vectors = OwedVectors(data / OWED_FOLDER)

    def wait_for_background(self) -> None:
        """Block until every acknowledged feedback is in the table and every refit queued so far has run (as many refits
        as were queued: one queued meanwhile by another thread, of a tenant whose turn comes first, may run in place
        of one queued before it)."""
        self.ingest.flush()
        self.background.submit(lambda: None).result()

    def stop_refits(self, timeout: float = REFIT_STOP_S) -> int:
        """The service stops: the refits queued and not begun never run here (`dropped_refits` names their users,
        kept for the next start to refit: `service.users.services.keep_dropped_refits`), none is queued from now
        on (those asked for join `dropped_refits`), and the one running is waited for, at most `timeout` seconds
        (a warning after that, and its user joins `dropped_refits`, else named nowhere, its line of
        the waiting file removed with the file by `keep_dropped_refits`). Left alone, the queue would run on
        after the app's shutdown, writing the tables of a service that had stopped (and a test's data folder
        removed under it would read as damaged). Then the purges of the rows refits withdrew (`Store.wait_withdrawn`) are
        waited for, at most WITHDRAWN_STOP_S (a warning after that): one stopped before its turn is not marked, and
        its row stays in the users table's files until the next start (WITHDRAWN_NOTE). Returns how many queued refits were dropped."""
        with self.refit_lock:
            self.refits_stopped.set()
            dropped = len(self.pending_refits)
            self.dropped_refits.update(self.pending_refits)
        try:
            self.background.submit(lambda: None).result(timeout)  # behind the running one: the dropped ones return at once
        except TimeoutError:
            log.warning("a background refit is still running %g s after the service began to stop (a store call that has "
                        "not returned); stopping without it (its user is refitted at the next start)", timeout)
            with self.refit_lock:  # kept for the next start with the dropped ones: it may never end (a refit twice is one fit)
                if self.running_refit is not None:
                    self.dropped_refits.add(self.running_refit)
        self.background.stop()  # its thread ends once idle (a refit still running: once it returns)
        if not self.store.wait_withdrawn(WITHDRAWN_STOP_S):
            log.warning("stopping without the purge of a withdrawn users row, which has not had its maintenance turn (the store's "
                        "lease) in %g s: the users table's files keep it until the next start purges it (%s)", WITHDRAWN_STOP_S,
                        WITHDRAWN_NOTE)
        return dropped

    def close(self) -> None:
        """A start that stops (or fails) once `build` returned, before the app ran (no request served, no refit
        queued): refits are refused from now on, the ingest worker stops (what it had not moved stays in the
        feedback log, replayed at the next start) and the generation process, when the generator runs one, is
        ended and reaped, now rather than at the interpreter's exit (or never: the process killed by the stop); a
        remote generator's and encoder's connections are closed.
        A running app stops these in its shutdown. Once more does nothing more."""
        if not self.refits_stopped.is_set():
            self.stop_refits()
        self.ingest.close()
        if hasattr(self.generator, "close"):  # `ProcessGenerator`: its child process; `RemoteGenerator`: its connections
            self.generator.close()
        if hasattr(self.encoder, "close"):  # `RemoteEncoder`: its connections
            self.encoder.close()

    @classmethod
    def build(cls, settings: Settings, generator: Generator | None = None, encoder: Encoder | None = None) -> Runtime:
        """Load (or take) the models, open the tables, load or bootstrap the PAL checkpoint."""
        settings.data_path.mkdir(parents=True, exist_ok=True)
        restore_promoted(settings)  # (`pluralign serve` did it already, before its undoable start)
        keep_private(settings.data_path)  # users' texts, keys and jobs: no other account (but a shared folder's group) may read them
        adopt_own_pools(settings)  # stored while it served alone: asked from the replicas' shared folder now
        started = time.perf_counter()
        step = lambda text, *args: log.info("setup [%5.1f s] " + text, time.perf_counter() - started, *args)  # noqa: E731
        step("loading the encoder %s", redacted(settings.encoder) if encoder is None else encoder.encoder_id)
        own_encoder = encoder is None
        if encoder is None:
            from pluralign.embed.remote import RemoteEncoderError, ServedOtherwise

            try:
                encoder = make_encoder(settings.encoder, settings.encoder_model, settings.encoder_api_key, settings.encoder_timeout_s,
                                       settings.encoder_max_length)
            # a server saying it serves another model or length than the settings say (its /info, /v1/models): the
            # start's one line naming the setting to change
            except ServedOtherwise as exc:
                raise ValueError(f"{served_setting(exc, settings.encoder_max_length, settings.encoder_model)}: {exc}") from None
            # an embeddings server not reached: the start's one
            # line naming the setting (`pluralign serve`: exit 2), the server's address without its password, not
            # a traceback
            except (ValueError, RemoteEncoderError) as exc:
                raise ValueError(f"PLURALIGN_ENCODER (setting encoder): {exc}") from None
        step("loading the generator %s (the first start converts SmolLM2 to fp32 once: ~30 s)",
             redacted(settings.generator) if generator is None else generator.model_id)
        own_generator = generator is None
        generator = generator or make_generator(
            settings.generator, settings.generator_model, settings.generator_api_key, settings.generator_timeout_s, settings.generator_retries,
            own_process=settings.generation_process, stall_s=settings.generation_stall_s, replica=served_replica(settings),
            stream_idle_s=settings.generator_stream_idle_s, stream_timeout_s=settings.generator_stream_timeout_s,
        )
        ingest: Ingestor | None = None
        try:
            check_context(settings, generator)
            step("opening the tables at %s", settings.lancedb_uri)
            store = open_store(settings, encoder)
            hooks: list[Callable[[list[StoredPreference]], None]] = []
            # the users of every move are named on disk before the log lets go of their rows, from the replay on: a kill
            # before their refits were queued (`service.feedback.services.after_move`) loses none of them
            waiting = WaitingRefits(settings.data_path / WAITING_REFITS_FILE)
            # with replicas, the rows a retraction through another replica took back while stored here, named on disk
            # before the log lets go of them, from the replay on (`service.owed_retractions`)
            owed = OwedRetractions(settings.data_path / OWED_RETRACTIONS_FILE, store.problems)
            step("replaying the feedback log")
            ingest = Ingestor(
                FeedbackLog(settings.data_path / "feedback-log", problems=store.problems,
                            tenant_rows=settings.tenant_feedback_backlog_rows), store, encoder, batch=settings.ingest_batch,
                on_moved=partial(per_request, hooks),  # each request's rows under its X-Request-Id
                before_done=partial(_before_done, waiting, owed, store if settings.replicas > 1 else None),
            )
            promoted = settings.data_path / PROMOTED_PAL
            if (promoted / "meta.json").exists():  # a population model retrained on the service's feedback and promoted
                step("loading the promoted population model from %s", promoted)
                if settings.replicas > 1:  # no replica promotes one since operator47: a leftover, served by this one alone
                    log.warning(
                        "with PLURALIGN_REPLICAS=%d this replica serves the population model in %s (promoted into its own "
                        "data folder by an earlier release, or while it ran alone) over PLURALIGN_PAL_DIR %s, which the "
                        "other replicas may serve: users would be fitted against different models. With the replicas "
                        "stopped, copy the one to serve into PLURALIGN_PAL_DIR and remove %s from every replica's data "
                        "folder (deploy/README.md)", settings.replicas, promoted, settings.pal_path, PROMOTED_PAL)
                check_pal_dir_rewritable(settings)
                rewards = UserRewards.load_after_rewrites(promoted, encoder.encoder_id, encoder.dim)
            else:
                step("loading the PAL reward model from %s", settings.pal_path)
                refuse_a_model_of_its_own(settings, store)
                rewards = UserRewards.load_or_bootstrap(settings.pal_path, encoder, settings.shared_data_path)
                refuse_another_model(settings, store, rewards.version, rewards.weights, rewards.digest)
            if settings.replicas > 1:  # not before: a replica started beside it on an empty PLURALIGN_PAL_DIR waits for
                claim_index(store, settings)  # the model this one bootstraps, not refused (`refuse_a_model_of_its_own`)
            keys = KeyRing(settings.keys_path)
            adapters = AdapterPool(
                generator, AdapterRegistry(settings.adapters_path), generator.model_id,
                budget_bytes=settings.adapter_budget_mb << 20, fallback=settings.fspo_adapter,
            )
            step("done")
            log.info("ready: generator %s, encoder %s, PAL %s", generator.model_id, encoder.encoder_id, rewards.describe())
            return cls(
                settings=settings, store=store, encoder=encoder, generator=generator, rewards=rewards, keys=keys,
                adapters=adapters, ingest=ingest, moved_hooks=hooks, waiting_refits=waiting, owed_retractions=owed,
                # the worker moves them from now on, before the app hooks its refits in (`after_move`): they wait
                dropped_refits=set(ingest.replayed),
            )
        except BaseException:
            if ingest is not None:  # a stop while the population model loads (a first start bootstraps it: a minute):
                ingest.close()  # its worker and the log's writer end before `pluralign serve` removes what the start made
            if own_generator and hasattr(generator, "close"):  # its child process stopped now, not at the interpreter's
                generator.close()  # exit (which warns on stderr of a leaked semaphore, below the start's one-line error)
            if own_encoder and hasattr(encoder, "close"):  # a remote one's connections
                encoder.close()
            raise

    def swap_rewards(self, source: Path) -> UserRewards:
        """Serve the population model at `source` (a PAL checkpoint or an EM mixture) from the next
        request on, without a restart.

        It is loaded (and so checked against the encoder) before anything changes, copied into the
        data folder with renames (a restart serves it too), then swapped in with one assignment:
        requests in flight finish with the model they started with, and each user's weights are
        refitted against the new prototypes at their next request (their `pal_version` differs)."""
        UserRewards.load(source, self.encoder.encoder_id, self.encoder.dim)
        served = self.settings.data_path / PROMOTED_PAL
        staged = served.with_name(f".{served.name}.staged")
        with self.population_lock:
            copy_into_place(source, served, staged)  # whole or not at all: a full disk leaves the served one
            rewards = UserRewards.load(served, self.encoder.encoder_id, self.encoder.dim)
            rewards.note = f"promoted from {source}"
            self.rewards = rewards
        self.metrics.inc("pluralign_population_swaps_total", help="population reward models swapped in while serving")
        log.info("now serving population model %s (%s, K=%d) from %s", rewards.version, rewards.kind, rewards.k, source)
        return rewards

    def forget_population_users(self, forget: Forget) -> int:
        """For a DELETE, once the user's rows left the store (or for other replicas' deletion
        records): remove the training users `forget` names (`tenant/user`, as population snapshots
        name them, or its hash) from every population file that the `population_hooks` know (the
        admin area's snapshots and job artifacts), then from the per-user rows of the promoted population
        model and of the one in `pal_path` (a job's artifact an operator copied there: deploy/README.md, with
        replicas), on disk and in memory. The models' versions, and so
        every other user's fit, are kept (`service.rewards.checkpoint_version`); what their shared
        parameters learned from the user stays until a retrain. Returns the files rewritten. A file
        that cannot be read or rewritten (damaged, another schema, a read-only `pal_path` holding the
        user) is left as it is and the others are rewritten still; then ForgetIncomplete names them."""
        served = self.settings.data_path / PROMOTED_PAL
        rewritten, failures = 0, []
        with self.population_lock:
            rewritten += remove_crash_leftovers(served)
            for hook in list(self.population_hooks):
                try:
                    rewritten += hook(forget)
                except ForgetIncomplete as exc:  # the hook went on past them: so do the others
                    rewritten, failures = rewritten + exc.rewritten, failures + exc.failures
            # `pal_path` too: a job's artifact copied there would keep the user's row
            for folder in (served, self.settings.pal_path):
                try:
                    rewritten += self._forget_in_served_model(folder, forget)
                except (OSError, ValueError) as exc:
                    failures.append(f"{folder}: {exc}")
        if failures:
            raise ForgetIncomplete(rewritten, failures)
        return rewritten

    def _forget_in_served_model(self, folder: Path, forget: Forget) -> int:
        """Remove the users `forget` names from the population model at `folder` (a PAL checkpoint or EM mixture; any
        other folder is left), and reload it when it is the one served and holds its rows in memory (an EM mixture: a
        PAL model keeps only its prior). Returns 1 when the folder was rewritten, else 0; raises OSError or ValueError
        when it cannot be read or rewritten. Under `population_lock`."""
        from pluralign.reward.pal_model import PALModel
        from pluralign.reward.training_users import forget_training_users

        # `pal_path` is shared by replicas: their rewrites take turns (`folder_lock`; else one would undo another's)
        shared = folder == self.settings.pal_path
        if not forget_training_users(folder, forget, shared=shared):
            return 0
        if not isinstance(self.rewards.model, PALModel) and self.rewards.version == checkpoint_version(folder):
            # under the folder's lock: another replica's rewrite half done (users.jsonl, then meta.json's digest of it)
            with folder_lock(folder) if shared else contextlib.nullcontext():
                rewards = UserRewards.load_after_rewrites(folder, self.encoder.encoder_id, self.encoder.dim)
            rewards.note = self.rewards.note
            self.rewards = rewards
        return 1

    def maybe_compact(self) -> None:
        """Compact in a background thread once enough writes piled up (one compaction at a time). The thread runs at
        its starter's priority: the feedback worker's hooks (`after_move`) run at the service's,
        not at nice 19, where the compactions they start would hold the store's maintenance turn a DELETE
        waits for (`Store.maintenance`)."""
        if self.store.writes_since_compaction < self.settings.compact_every or not self._compacting.acquire(blocking=False):
            return

        def run() -> None:
            try:
                self.store.compact()
                self.metrics.inc("pluralign_compactions_total", help="background table compactions")
            except Exception:  # a failed compaction leaves the tables as they were; retry later
                log.exception("compaction failed")
            finally:
                self._compacting.release()

        threading.Thread(target=run, daemon=True, name="compaction").start()
