"""A user's reward weights (kept in the users table) and everything else the service holds about them."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import math
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import msgspec
import numpy as np

from pluralign.data.text import (
    answer_key,
    bidi_controls_shown,
    is_blank,
    is_comparison,
    look_key,
    look_question_key,
    name_control_problem,
)
from pluralign.embed.cache import text_key
from pluralign.files import DECODE_ERRORS, staged_folder
from pluralign.policy.adapters import (
    ADAPTER_FILES,
    META_FILE,
    AdapterMeta,
    adapter_name,
    check_base,
    check_files,
    read_meta,
    write_meta,
)
from pluralign.store import StoredPreference, UserRecord
from pluralign.store.deletions import Forget, new_deletion, user_hash
from pluralign.store.failures import StoreUnavailable, storage_problem
from pluralign.store.history import History
from pluralign.store.tables import TEXT_ROWS_PER_READ, DeletedMeanwhile
from pluralign.user import FEATURE_NAMES, Ties, UserState
from pluralign.user.active import RECENT_ANSWERS
from pluralign.user.features import scope as features_scope
from pluralign.user.pooled import PooledPrior, pooled_prior
from pluralign.user.stated import STATED_VERSION, Direction, StatedChange, StatedPreferences, merged_history
from pluralign.user.summary import (
    Example,
    JointBelief,
    PrototypeBelief,
    PrototypeDescription,
    describe_prototypes,
    feature_beliefs,
    joint_beliefs,
    nearest_prototype,
    written_sentences,
)
from pluralign.user.summary import FeatureBelief as FeatureSummary
from service.encoders import refused_text
from service.metrics import DECLARED_COUNTERS
from service.owed_retractions import forget_owed
from service.periodic import Periodic
from service.rewards import UserRewards
from service.runtime import Runtime
from service.scheduler import Busy, Stopping
from service.settings import POOLED_PRIOR_MAX_USERS
from service.users.journal import Unfinished
from service.waiting_refits import forget_refits

if TYPE_CHECKING:
    from pluralign.user.active import Particles

log = logging.getLogger("pluralign.service")


@dataclass(frozen=True)
class UserWeights:
    logits: np.ndarray  # (K,)
    prior: bool  # True when nothing of the user has been fitted yet
    record: UserRecord | None
    state: UserState | None = None  # the per-user residual (setting `user_model = residual`), None = PAL alone
    rewards: UserRewards | None = None  # the population model the logits and state were fitted with
    stated: StatedPreferences = StatedPreferences()  # what the user said they prefer (a prior on the state)


def residual_on(rt: Runtime) -> bool:
    return rt.settings.user_model == "residual"


def stored_state(record: UserRecord | None) -> UserState | None:
    """The user's stored residual state; None (refitted, not served, nor pooled) when there is none, or it does not
    decode, or it holds NaN or a probability that is none (`UserState.readable`: a profile said "less" of a NaN)."""
    if record is None or record.user_model is None:
        return None
    try:
        state = UserState.decode(record.user_model)
    except DECODE_ERRORS:  # an unreadable state is refitted, not served
        return None
    if not state.readable():
        log.warning("the user model of %s/%s holds NaN or inf or a probability outside [0, 1]: refitted, not served",
                    record.tenant, record.user_id)
        return None
    return state


def stated_of(record: UserRecord | None) -> StatedPreferences:
    """The user's stated preferences (none when the row has none or an unreadable one)."""
    if record is None or record.stated is None:
        return StatedPreferences()
    try:
        return StatedPreferences.decode(record.stated)
    except DECODE_ERRORS:
        log.warning("unreadable stated preferences of %s/%s ignored", record.tenant, record.user_id)
        return StatedPreferences()


_MISSING = object()


def pooled_prior_of(rt: Runtime, tenant: str, rewards: UserRewards) -> PooledPrior | None:
    """The tenant's pooled prior for new users (`pluralign.user.pooled`): estimated from up to
    `POOLED_PRIOR_MAX_USERS` of its users fitted on at least one answer (a comparison, or a tie of two answers: a
    user who only ever said "no preference" is a kind of user too) against `rewards`'
    population model and without stated preferences (their states hold their own statements), once at least
    `pooled_prior_users` are; None below that, with the setting at 0, or without the residual user
    model. Only that tenant's users are read (one tenant's prior never comes from another's users);
    the estimate is reused `pooled_prior_ttl_s` seconds, until a user of the tenant is deleted
    (`Runtime.forget_pooled`)."""
    s = rt.settings
    if not s.pooled_prior_users or not residual_on(rt):
        return None
    key = (tenant, rewards.version)
    with rt.pooled_lock:  # one look (`get`): `key in` then `[key]` raised KeyError when it expired between them
        cached = rt.pooled_priors.get(key, _MISSING)
        generation = rt.pooled_generation.get(tenant, 0)
    if cached is not _MISSING:
        return cached
    model = rewards.user_model
    states = [state for record in rt.store.fitted_users(tenant, POOLED_PRIOR_MAX_USERS, pal_version=rewards.version, answered=True)
              for state in [stored_state(record)] if state is not None and state.answers > 0 and model.fits(state)]
    prior = pooled_prior(states, model.names, s.pooled_prior_spread) if len(states) >= s.pooled_prior_users else None
    with rt.pooled_lock:
        if rt.pooled_generation.get(tenant, 0) == generation:  # no user of the tenant was deleted meanwhile
            rt.pooled_priors[key] = prior
    return prior


def adapter_folder(rt: Runtime, tenant: str, user_id: str):
    return rt.adapters.registry.folder(tenant, user_id)


def refit(rt: Runtime, tenant: str, user_id: str, rewards: UserRewards | None = None, unsaved_ok: bool = False) -> UserWeights:
    """Fit the user's PAL logits on every stored comparison of theirs and store them. The user's
    attributes gather those their feedback carried, over those their row held (the latest, by `created_at` as
    `pluralign.data.record.seconds_meant` reads it in the store's history, win; nothing else is merged in: a batch's first row's attributes overrode them once). `unsaved_ok`:
    a read's refit, whose row the users table cannot take (no room, read-only), is logged and served
    all the same (the row is a cache of their comparisons: the next read fits again), as is a stated
    change's (`set_stated`: its version is stored by then); a DELETE's refit raises StoreUnavailable (a
    row drawn from deleted rows must not stay).

    Runs under the user's lock, so a DELETE is either before it (nothing to fit: no row is written,
    the user stays deleted) or after it (the DELETE removes what it wrote)."""
    with rt.user_lock(tenant, user_id):
        return _refit(rt, tenant, user_id, rewards, unsaved_ok)


def _refit(rt: Runtime, tenant: str, user_id: str, rewards: UserRewards | None, unsaved_ok: bool = False) -> UserWeights:
    """`refit`'s work, the features of the user's answers cached as their tenant's (`pluralign.user.features.scope`):
    a refit the feedback worker queued runs with none of the request's context, whose caller names the tenant."""
    with features_scope(tenant):
        return _fitted(rt, tenant, user_id, rewards, unsaved_ok)


def _fitted(rt: Runtime, tenant: str, user_id: str, rewards: UserRewards | None, unsaved_ok: bool = False) -> UserWeights:
    # one snapshot of the history for vectors, texts and attributes: feedback moved into the table
    # meanwhile must not make them disagree (the next read sees the new rows as stale and refits). With
    # replicas, on the newest version: rows another replica's DELETE took less than `store_sync_ms` ago,
    # fitted on, made a row `_deleted_meanwhile` withdraws, and with it a stated preference set since
    history = rt.store.history(tenant, user_id, latest=True)
    prompt, chosen, rejected, chosen_texts, rejected_texts = history.comparison_set()  # (N, d) x 3, N texts x 2
    ties = Ties(*history.tie_set()) if residual_on(rt) else None  # (M, d) x 3, M texts x 2: the user model fits them too
    from_feedback: dict[str, str] = {}  # in the order each label was last given
    for row in sorted(history.rows, key=lambda r: r["created_at"]):  # the seconds each meant (`History.meta`)
        for name, value in json.loads(row["attributes"]).items():
            from_feedback.pop(name, None)
            from_feedback[name] = value
    rt.store.refresh("users")  # with replicas: the row written back keeps another's stated preferences (PATCHed a moment ago)
    record = rt.store.get_user(tenant, user_id)
    stated = stated_of(record)
    now = time.time()
    rewards = rewards or rt.rewards  # one model for the whole refit, even if a new one is swapped in meanwhile
    state = None
    if len(prompt) or (ties is not None and len(ties.prompt)):
        prior = False
        if residual_on(rt):  # PAL's logits (from the comparisons with a winner) and the residual in one pass
            logits, state = rewards.user_model.fit_user(
                prompt, chosen, rejected, chosen_texts, rejected_texts, prior_logits=rewards.prior(), fitted_at=now,
                stated=stated.signs(), pooled=pooled_prior_of(rt, tenant, rewards), ties=ties,
                recent=history.newest_answers(RECENT_ANSWERS),  # comparisons and ties: what `UserState.surprise` checks
            )
        else:
            logits = rewards.fit(prompt, chosen, rejected)
    else:
        logits, prior = rewards.prior(), True
        if record is None and not len(history):
            return UserWeights(logits=logits, prior=True, record=None, rewards=rewards)  # deleted (or never seen): no row from nothing
        if residual_on(rt) and stated.preferences:  # no comparisons yet, but a stated preference: the prior is the state
            state = rewards.user_model.fit_user(prompt, chosen, rejected, chosen_texts, rejected_texts, logits, now, stated.signs(),
                                                pooled_prior_of(rt, tenant, rewards))[1]
    fit = UserRecord(
        tenant=tenant,
        user_id=user_id,
        created_at=now,
        updated_at=now,
        pal_logits=None if prior else [float(x) for x in logits],
        pal_version=rewards.version,
        n_preferences=int(len(prompt)),
        n_interactions=rt.store.count_interactions(tenant, user_id),
        user_model=state.encode() if state is not None else None,
    )
    try:
        # with no comparison fitted, the row is drawn from their stored row alone (stated preferences, attributes), and
        # `_deleted_meanwhile` has no row to look for: it is not written once that row is gone
        record = _store_fit(rt, record, fit, from_feedback, fitted_on_rows=bool(len(history)))
        if record is None:
            return UserWeights(logits=rewards.prior(), prior=True, record=None, rewards=rewards)
    except StoreUnavailable as exc:
        record = _onto(record, fit, from_feedback, rt.settings.max_attributes)
        if not unsaved_ok:
            raise
        log.error("the fit of a user of tenant %s is served without being stored (fitted again until it is): %s", tenant, exc)
    else:
        if _deleted_meanwhile(rt, history, record):
            return UserWeights(logits=rewards.prior(), prior=True, record=None, rewards=rewards)
    return UserWeights(logits=logits, prior=prior, record=record, state=state, rewards=rewards, stated=stated)


USER_ROW_WRITES = 5  # tries of a conditional write of a users row (`_write_over_read`), each after a row committed
# since its read: a refit's (`_store_fit`) and a PATCH's (`_write_stated`)


_UNREAD = object()


def _onto(read: UserRecord | None, fit: UserRecord, from_feedback: dict[str, str], labels: int) -> UserRecord:
    """The users row of a refit: `fit`'s fitted fields (PAL logits, the residual, counts, model version) on the row
    `read` (None: none), whose stated preferences, adapter and attributes it keeps (the attributes their feedback
    carried, `from_feedback`, in the order each was last given, over them), at most `labels` of them: those given last.
    A feedback carries at most `max_attributes` labels, and a row holding every label any of the user's feedback
    carried grew without bound (32 new names a feedback: 100 MB after 10,000), read whole by each chat and profile."""
    held = {} if read is None else {name: value for name, value in read.attributes.items() if name not in from_feedback}
    attributes = dict(list({**held, **from_feedback}.items())[-labels:])
    if read is None:
        return msgspec.structs.replace(fit, attributes=attributes)
    return msgspec.structs.replace(fit, created_at=read.created_at, updated_at=max(fit.updated_at, read.updated_at),
                                   attributes=attributes, adapter=read.adapter, stated=read.stated)


def _write_over_read(rt: Runtime, tenant: str, user_id: str, draw: Callable[[UserRecord | None], UserRecord | None],
                     give_up: Callable[[UserRecord], UserRecord], *, read: UserRecord | None | object = _UNREAD,
                     tables: tuple[str, ...] = ("users",)) -> UserRecord | None:
    """Write the users row `draw` makes from the user's row read (None: they have none) only over that row
    (`Store.put_user_if`): a row another writer committed since the read is read again (`tables` refreshed first:
    with replicas, reads may otherwise lag) and drawn again, up to USER_ROW_WRITES times. `read`: the row already
    read, for the first try (not given: read as the tries after it are). Returns the row written, or None when
    `draw` gives None (nothing to write; nothing is). After USER_ROW_WRITES refused writes, returns what
    `give_up(the last row drawn)` returns, or raises what it raises. Raises StoreUnavailable as `put_user` does,
    and what `draw` raises."""
    for attempt in range(USER_ROW_WRITES):
        if attempt or read is _UNREAD:
            rt.store.refresh(*tables)
            read = rt.store.get_user(tenant, user_id)
        row = draw(read)
        if row is None or rt.store.put_user_if(row, read):
            return row
    return give_up(row)


def change_user_row(rt: Runtime, tenant: str, user_id: str, change: Callable[[UserRecord], UserRecord | None],
                    what: str, *, read: UserRecord | None | object = _UNREAD) -> UserRecord | None:
    """Write the user's row `change` makes of the row read (None: nothing to change), stamped later than that row, only
    over that row (`_write_over_read`): another replica's PATCH of their stated preferences committed since the read
    is read again and the change made on it. Were the row read put back whole (`put_user`: a retraction's, a DELETE
    finished for a returning user's, `forget_before`), such a PATCH
    (200 to its client) would be written over, or make that write a row older than the stored one, dropped. `what` names
    the writer in the log line of a row that kept changing; `read`, the row already read (`_write_over_read`'s).
    Returns the row written (None: none needed changing, or the user has no row); after USER_ROW_WRITES rows committed
    in between, the last one drawn, unwritten, logged. Raises StoreUnavailable as `put_user` does."""
    def draw(read: UserRecord | None) -> UserRecord | None:
        changed = None if read is None else change(read)
        return None if changed is None else msgspec.structs.replace(
            changed, updated_at=max(time.time(), math.nextafter(read.updated_at, math.inf)))  # later than the row read

    def give_up(row: UserRecord) -> UserRecord:
        log.warning("%s of a user of tenant %s did not store their row: it changed %d times while it was written",
                    what, tenant, USER_ROW_WRITES)
        return row

    return _write_over_read(rt, tenant, user_id, draw, give_up, read=read)


def _store_fit(rt: Runtime, read: UserRecord | None, fit: UserRecord, from_feedback: dict[str, str],
               fitted_on_rows: bool) -> UserRecord | None:
    """Write the refit's row (`_onto` the row `read`) only over that row (`_write_over_read`): a row committed since
    the read (a stated preference PATCHed through another replica, stamped before the refit began: replaced by
    the refit's row, the PATCH would be lost) is read again and the fit carried onto it, up to USER_ROW_WRITES
    times (a stated change the fit did not see makes the next read fit again: the row's version no longer matches).
    Returns the row written (the last one drawn, unwritten, after USER_ROW_WRITES rows committed in between, with a
    warning: the row is a cache, the next read fits again); None when the fit was drawn from their row alone
    (`fitted_on_rows` False) and that row is gone (a DELETE took it). Raises StoreUnavailable as `put_user` does."""

    def draw(read: UserRecord | None) -> UserRecord | None:
        return None if read is None and not fitted_on_rows else _onto(read, fit, from_feedback, rt.settings.max_attributes)

    def give_up(record: UserRecord) -> UserRecord:
        log.warning("the refit of a user of tenant %s was not stored: their row changed %d times while it was written",
                    fit.tenant, USER_ROW_WRITES)
        return record

    return _write_over_read(rt, fit.tenant, fit.user_id, draw, give_up, read=read)


def _deleted_meanwhile(rt: Runtime, history: History, record: UserRecord) -> bool:
    """With replicas: whether another replica's DELETE took the rows `history` held after they were read
    and before `record`, fitted on them, was written (this replica's user lock does not hold another's
    DELETE; a background refit on a loaded machine takes seconds). Then the row, drawn from deleted rows
    (their fitted weights, attributes, stated preferences), would stay for good: it is withdrawn. Either the
    DELETE deleted the row (written before it) or the write came after its rows went, which this fresh look
    sees. A withdrawn row is logged; the next read fits again from what is stored."""
    if rt.deletion_sweep is None or not len(history):
        return False
    if rt.store.still_holds(record.tenant, record.user_id, history.meta.column("pref_id")[0].as_py()):
        return False
    rt.store.withdraw_user(record.tenant, record.user_id, record.updated_at)
    log.warning("a fit of a user of tenant %s was withdrawn: their rows it was drawn from were deleted meanwhile", record.tenant)
    return True


def queue_refits(rt: Runtime, keys: Iterable[tuple[str, str]]) -> int:
    """Queue the background refit of each user of `keys` (tenant, user_id), the caller holding `rt.refit_lock` (so
    what it does beside it, such as emptying the waiting set, is one step with the queueing: the queue never looks
    drained in between); returns how many were queued, to be given to `submit_refits` once the lock is let go. A user
    already queued is not queued twice (their refits coalesce into one), and the refit thread takes the tenants in
    turn (`_next_refit`), so a tenant's thousands queued at once (every user of theirs moved during a feedback
    backlog) never hold another tenant's few behind them; each runs under the id of the request that caused it. The
    caller names the users on disk first (`service.waiting_refits`: `refit_waiting`, `refit_dropped`), so a crash
    before their refits ran loses none. Correctness does not hang on them: `user_weights` refits stale weights
    itself, so the next request of the user uses every acknowledged comparison even if their refit has not run yet."""
    queued = 0
    for key in keys:
        if rt.refits_stopped.is_set():  # the service stops (`Runtime.stop_refits`): the next start refits them
            rt.dropped_refits.add(key)
            continue
        if key in rt.pending_refits:
            continue
        rt.pending_refits.add(key)
        # run under the id of the request that caused it (service.requestid)
        rt.refit_turns.setdefault(key[0], deque()).append((key[1], contextvars.copy_context()))
        queued += 1
    return queued


def submit_refits(rt: Runtime, queued: int) -> None:
    for _ in range(queued):  # one task per refit queued: each runs the one whose turn it is
        rt.background.submit(_next_refit, rt)


def _next_refit(rt: Runtime) -> None:
    """The refit thread's next refit: the oldest queued of the tenant whose turn it is (`Runtime.refit_turns`, whose
    first tenant goes to the back once one of its refits is taken)."""
    with rt.refit_lock:
        if not rt.refit_turns:
            return
        tenant = next(iter(rt.refit_turns))
        users = rt.refit_turns.pop(tenant)
        user_id, context = users.popleft()
        if users:
            rt.refit_turns[tenant] = users  # behind the other tenants queued
        rt.pending_refits.discard((tenant, user_id))
        if rt.refits_stopped.is_set():
            return
        rt.running_refit = (tenant, user_id)  # owed until it ended (`service.waiting_refits`)
    try:
        context.run(_background_refit, rt, tenant, user_id)
    finally:
        with rt.refit_lock:  # the queue drained with nobody waiting: no refit is owed any more (`service.waiting_refits`)
            rt.running_refit = None
            if rt.waiting_refits.lines and not rt.refit_turns and not rt.dropped_refits and not rt.refits_stopped.is_set():
                rt.waiting_refits.drop()


def _background_refit(rt: Runtime, tenant: str, user_id: str) -> None:
    try:
        start = time.perf_counter()
        refit(rt, tenant, user_id)
        log.debug("background refit of a user of tenant %s done in %.1f ms", tenant, (time.perf_counter() - start) * 1000)
    except StoreUnavailable as exc:  # a full disk, a damaged table: its words are enough
        log.error("background refit of a user of tenant %s failed: %s", tenant, exc)
    except Exception:  # the next request of the user refits instead
        log.exception("background refit of a user of tenant %s failed", tenant)


def keep_dropped_refits(rt: Runtime) -> int:
    """At the stop, once the feedback worker has stopped: write the users whose background refits the stop dropped,
    or the feedback log's backlog still held back (`Runtime.dropped_refits`, `after_move`), to the dropped refits'
    file (`service.dropped_refits`), for the next start to refit (`refit_dropped`). A read of the user refits stale
    weights itself, but what reads the users table as it is (the fairness audit's user attributes and `pal_prototype`,
    the population a new user is compared against, the pooled prior) would otherwise keep the row of before their last
    feedback (or none) until they came back, and a tie's attributes (no strict comparison: the row does not look
    stale) until their next comparison. A user with nothing stored any more (deleted meanwhile) is not written, nor is
    one a file the start could not read named, read again here (`DroppedRefits.keep`); one that still cannot be read is
    not written over: the waiting file then stays, naming them. Returns how many the file names."""
    with rt.refit_lock:
        keys = sorted(rt.dropped_refits)
        rt.dropped_refits.clear()
    kept = rt.dropped_file.keep(keys, partial(still_stored, rt))
    if kept is None:  # logged; the waiting file (if written) still names them
        return 0
    with rt.refit_lock:  # what it names ran, or is named in the dropped refits' file now
        rt.waiting_refits.drop()
    return kept


def still_stored(rt: Runtime, keys: list[tuple[str, str]], doing: str = "stopping") -> list[tuple[str, str]]:
    """Those of the users `keys` with something still stored (not deleted meanwhile); all of them when the store
    cannot say (logged, `doing` first: the refit of a deleted user writes nothing). The check before any write of
    ids the dropped refits' file named (the stop's, `DroppedRefits.keep`; the pass's, `refit_dropped_again`)."""
    try:
        held = rt.store.users_with_preferences(keys)  # one read per 1,000 of them: a stop may find thousands waiting
    except StoreUnavailable as exc:
        log.error("%s: could not check which users with dropped refits are still stored: %s", doing, exc)
        return keys
    return [key for key in keys if key in held]


def refit_dropped(rt: Runtime) -> int:
    """At the start: background refits taken again from now on, and those of the users the last stop dropped
    (`keep_dropped_refits`), or a crash left waiting or queued (`service.waiting_refits`), queued; they stay named on
    disk (the waiting file) until they ran, and the stop's file is removed. Of a damaged file, the users it still
    names whole are queued (`service.dropped_refits`); one that cannot be read at all is left, listed by /health, and
    read again by each pass over the unfinished DELETEs (`refit_dropped_again`). One that cannot be removed is queued
    again at the next start (a refit twice is the same fit). Returns how many were queued."""
    rt.refits_stopped.clear()
    taken = rt.dropped_file.take()
    with rt.refit_lock:
        keys = list(dict.fromkeys([*(taken or []), *rt.waiting_refits.read()]))
        rt.waiting_refits.rewrite(keys)  # a crash before they ran finds them again
        queued = queue_refits(rt, keys)
        rt.waiting_refits.handed_on(keys)  # named by moves before the app hooked its refits in (`WaitingRefits.owe`)
    submit_refits(rt, queued)
    if taken is not None and rt.dropped_file.path.exists():
        rt.dropped_file.remove()
    return len(keys)


def refit_dropped_again(rt: Runtime) -> int:
    """The pass over the unfinished DELETEs (every `deletion_sweep_s`): a dropped refits' file the start could not read
    at all read again; once it reads, its users' refits are queued as the start queues them (named in the waiting
    file first) and it is removed. Only the users still stored are named and queued (`still_stored`), looked at in the
    store's turn, which a DELETE holds from its rows' removal to its removal of their id from the waiting refits
    (`forget_refits`): a DELETE answered before the look leaves nothing to find, one after it removes what this wrote,
    and none answered writes their id to disk again. Returns how many were queued."""
    if not rt.dropped_file.unread:
        return 0
    taken = rt.dropped_file.take()
    if taken is None:
        return 0
    with rt.store.maintenance():  # the file became readable again: rare, one turn (with replicas, the store's lease)
        taken = still_stored(rt, taken, "reading the dropped refits file again")
        with rt.refit_lock:
            rt.waiting_refits.add(taken)  # a crash before they ran finds them again
            queued = queue_refits(rt, taken)
    submit_refits(rt, queued)
    rt.dropped_file.remove()
    return queued


READ_INLINE_ROWS = 500  # a read of a user moves at most this many of their pending rows itself (an import's backlog: 503)
READ_RETRY_AFTER = 10  # seconds: `Retry-After` of that 503


def flush_for_read(rt: Runtime, tenant: str, user_id: str) -> None:
    """Move the user's feedback still pending in the log into the table before a read of their rows.
    Raises ServiceUnavailableException (503 with Retry-After) when more than READ_INLINE_ROWS of them
    wait (a large import being embedded): the worker moves them meanwhile, in batches, and a request
    would otherwise wait for all of it (minutes)."""
    from pluralign.store.ingest import Backlogged

    try:
        rt.ingest.flush_user(tenant, user_id, at_most=READ_INLINE_ROWS)
    except Backlogged as exc:
        from litestar.exceptions import ServiceUnavailableException

        raise ServiceUnavailableException(
            detail=f"this user's comparisons are still being stored ({exc.rows} rows, an import): "
                   f"retry after {READ_RETRY_AFTER} seconds", headers={"Retry-After": str(READ_RETRY_AFTER)}) from None


def user_weights(rt: Runtime, tenant: str, user_id: str, flush: bool = True) -> UserWeights:
    """The stored logits (and residual), refitted first when they are stale (another population
    checkpoint, or rows written after the last fit, e.g. by a process that crashed between its write
    and its refit). The user's feedback still pending in the log is moved into the table first
    (`flush_for_read`: 503 past READ_INLINE_ROWS; `flush` False: not moved, the caller decided). The
    result names the population model it belongs to: score with `weights.rewards`, not whatever
    model was swapped in since."""
    if flush:
        flush_for_read(rt, tenant, user_id)
    rewards = rt.rewards
    record = rt.store.get_user(tenant, user_id)
    if record is None:
        if rt.store.count_preferences(tenant, user_id) == 0:
            return UserWeights(logits=rewards.prior(), prior=True, record=None, rewards=rewards)
        return refit(rt, tenant, user_id, rewards=rewards, unsaved_ok=True)
    if record.pal_version != rewards.version:
        return refit(rt, tenant, user_id, rewards=rewards, unsaved_ok=True)
    stated = stated_of(record)
    state = stored_state(record) if residual_on(rt) else None
    # what the fit learned from against the user's rows, in one store count: comparisons, and with
    # the user model ties of two answers too (a state from before ties were fitted counts none: refitted once)
    fitted, count = (record.n_preferences + (0 if state is None else state.ties), rt.store.count_paired) if residual_on(rt) \
        else (record.n_preferences, rt.store.count_comparisons)
    if fitted != count(tenant, user_id):  # rows stored since the fit (a crash between a write and its refit)
        return refit(rt, tenant, user_id, rewards=rewards, unsaved_ok=True)
    if record.pal_logits is None and not (residual_on(rt) and stated.preferences):
        return UserWeights(logits=rewards.prior(), prior=True, record=record, rewards=rewards, stated=stated)
    # an older model, feature set or stated prior, or a changed-mind z an earlier rule computed (`UserModel.current`)
    if residual_on(rt) and not rewards.user_model.current(state, stated.signs()):
        return refit(rt, tenant, user_id, rewards=rewards, unsaved_ok=True)
    if record.pal_logits is None:  # only stated preferences so far
        return UserWeights(logits=rewards.prior(), prior=True, record=record, state=state, rewards=rewards, stated=stated)
    return UserWeights(logits=np.asarray(record.pal_logits, np.float32), prior=False, record=record, state=state,
                       rewards=rewards, stated=stated)


MAX_STATED_PAGE = 100  # versions per page of GET .../stated-preferences (a version holds at most 16 changes)
MAX_STATED_VERSION = 2**63 - 1  # the stored `version` is an int64: a `before` above it is out of range


class StatedPage(msgspec.Struct, kw_only=True):
    """A user's stated preferences now and the changes of a page of versions, oldest first."""

    format: int = STATED_VERSION
    version: int  # the current version (0: never stated anything)
    preferences: dict[str, Direction]
    history: list[StatedChange]  # the changes of versions [next_before or 1, the page's newest], oldest first
    next_before: int | None  # pass as `before` for the page of older versions; null: this page reaches version 1


def stated_history(rt: Runtime, tenant: str, user_id: str, stated: StatedPreferences, first: int = 1, last: int | None = None) -> list[StatedChange]:
    """The user's stated-preference changes of versions `first`..`last` (None: every one from `first`),
    oldest first: the changes table's rows and any the user's row holds that the table lacks."""
    last = stated.version if last is None else last
    if last < first:
        return []
    held = msgspec.structs.replace(stated, history=[c for c in stated.history if first <= c.version <= last])

    def read() -> list[StatedChange]:
        stored = [c for r in rt.store.stated_changes(tenant, user_id, first, last) for c in [stated_change_of(r, tenant, user_id)] if c]
        return merged_history(stored, held)

    changes = read()
    if not {c.version for c in changes} >= set(range(first, last + 1)):
        # with replicas, this process's view of the changes table may be older than the row it read
        # (a refit re-reads the row): a version missing from both is in the table by now
        rt.store.refresh("stated_changes")
        changes = read()
    return changes


def stated_change_of(row: dict, tenant: str, user_id: str) -> StatedChange | None:
    """A row of the changes table as a change; None (logged) for a damaged one, which is left out of
    the history as `stated_of` leaves out an unreadable record: the server's data, not the client's
    request (it was a 400 naming `direction`)."""
    try:
        return msgspec.convert(row, StatedChange)
    except msgspec.ValidationError as exc:
        log.warning("unreadable stated-preference change of %s/%s (version %s) left out: %s", tenant, user_id, row.get("version"), exc)
        return None


def stated_page(rt: Runtime, tenant: str, user_id: str, limit: int = 20, before: int | None = None,
                stated: StatedPreferences | None = None) -> StatedPage:
    """The user's current stated preferences and the changes of the `limit` newest versions below
    `before` (None: from the current one). Versions are dense (1, 2, ...), so a page is one range
    query. `stated`: the record when the caller has it (else read from the user's row)."""
    if stated is None:
        stated = stated_of(rt.store.get_user(tenant, user_id))
    top = stated.version if before is None else min(before - 1, stated.version)
    first = max(1, top - limit + 1)
    history = stated_history(rt, tenant, user_id, stated, first, top) if top >= 1 else []
    return StatedPage(version=stated.version, preferences=stated.preferences, history=history,
                      next_before=first if top >= 1 and first > 1 else None)


def _row_only_changes(rt: Runtime, tenant: str, user_id: str, stated: StatedPreferences) -> list[StatedChange]:
    """The changes the user's row holds whose version the changes table lacks (the service stopped
    between the two writes, or a format 1 row's history)."""
    if not stated.history:
        return []
    have = {r["version"] for r in rt.store.stated_changes(tenant, user_id, min(c.version for c in stated.history))}
    return [c for c in stated.history if c.version not in have]


def _store_missing_changes(rt: Runtime, tenant: str, user_id: str, stated: StatedPreferences) -> None:
    """Append the changes the user's row holds whose version the changes table lacks, so the table
    keeps every version."""
    missing = [msgspec.to_builtins(c) for c in _row_only_changes(rt, tenant, user_id, stated)]
    if missing:
        rt.store.add_stated_changes(tenant, user_id, missing)


class VersionMismatch(Exception):
    """A conditional change's precondition is false: `If-Match` named tags the user's stated preferences are not at,
    or `If-None-Match` (`header`) the tag they are at. `current`: their version; `tag`: their entity tag
    (`StatedPreferences.tag`)."""

    def __init__(self, current: int, tag: str, header: str = "If-Match"):
        # the tag too: after a DELETE, "at version 1, not <the earlier record's tag of version 1>" read as a match
        super().__init__(f'the stated preferences are at version {current} (entity tag "{tag}")')
        self.current = current
        self.tag = tag
        self.header = header


def tag_matches(current: str, wanted: list[str | None]) -> bool:
    """Whether `wanted`, the entity tags of an `If-Match` or `If-None-Match` header (opaque strings, None for `*`),
    names `current` (`StatedPreferences.tag`). `*` matches whenever a current record exists (RFC 9110, 13.1.1), and
    one always does: GET answers every user's, at version 0 (tag "0") for a user who never stated anything (known to
    the tenant or not)."""
    return any(w is None or w == current for w in wanted)


class TaggedPage(NamedTuple):
    """A page of stated preferences and the entity tag of the record it shows (the route's `ETag`)."""

    page: StatedPage
    tag: str


def tagged_stated_page(rt: Runtime, tenant: str, user_id: str, limit: int = 20, before: int | None = None) -> TaggedPage:
    """`stated_page` of the user's record as stored, with the record's entity tag (`StatedPreferences.tag`)."""
    stated = stated_of(rt.store.get_user(tenant, user_id))
    return TaggedPage(stated_page(rt, tenant, user_id, limit, before, stated), stated.tag())


def set_stated(rt: Runtime, tenant: str, user_id: str, changes: dict[str, Direction | None],
               if_match: list[str | None] | None = None, if_none_match: list[str | None] | None = None) -> TaggedPage:
    """Apply a change set to the user's stated preferences as one new version, store it, and refit
    the user against the new prior, all under the user's lock; returns the new record with the
    new version's changes (a page of one version), with its entity tag. A change set that changes nothing (clearing
    what is not set, setting what already is) writes nothing, creates no user and returns the
    record as it is with no changes (`history` empty). The row is written before the changes
    table: a stop between the two leaves the version in the row, which reads merge in and the
    next change stores. `if_match`: change only if the current record's tag (`StatedPreferences.tag`) is one of
    these (None in it, `*`: any record, version 0 included), checked under the lock, so two clients that read the
    same version cannot both change it. `if_none_match`: change only if the current tag is none of these (None in
    it, `*`: never), checked the same way (RFC 9110, 13.1.2).
    The row is written only over the row read (`_write_stated`): another replica's refit or PATCH committed meanwhile
    is read again and the change made on it.
    Raises ValueError naming an unknown feature, VersionMismatch when `if_match` does not hold, Busy when the row
    changed `USER_ROW_WRITES` times while it was written (nothing stored)."""
    with rt.user_lock(tenant, user_id):
        flush_for_read(rt, tenant, user_id)
        current, stated = _write_stated(rt, tenant, user_id, changes, if_match, if_none_match)
        if stated is current:  # no new version: no changes to carry, `next_before` pages from the current one
            return TaggedPage(StatedPage(version=current.version, preferences=current.preferences, history=[],
                                         next_before=current.version + 1 if current.version else None), current.tag())
        try:
            rt.store.add_stated_changes(tenant, user_id, [msgspec.to_builtins(c) for c in stated.history])
        except StoreUnavailable as exc:  # the version is stored, in the row: reads merge it in, the next change appends it
            log.error("stated preferences of a user of tenant %s: version %d is kept in their row only for now: %s",
                      tenant, stated.version, exc)
        try:  # the change is stored: the refit's row is a cache (a read whose fit does not match the stated version fits again)
            _refit(rt, tenant, user_id, None, unsaved_ok=True)
        except StoreUnavailable as exc:  # its history unreadable now: the next read of the user fits them
            log.error("stated preferences of a user of tenant %s: version %d is stored, their refit failed: %s",
                      tenant, stated.version, exc)
    rt.maybe_compact()  # each change set is a commit to the users and changes tables
    return TaggedPage(StatedPage(version=stated.version, preferences=stated.preferences, history=stated.history,
                                 next_before=stated.version if stated.version > 1 else None), stated.tag())


def _write_stated(rt: Runtime, tenant: str, user_id: str, changes: dict[str, Direction | None],
                  if_match: list[str | None] | None,
                  if_none_match: list[str | None] | None = None) -> tuple[StatedPreferences, StatedPreferences]:
    """Read the user's row, apply `changes` to its stated preferences and write the row only over the row read
    (`_write_over_read`): a row another replica committed since the read (its refit, its PATCH) is read again and
    the change made on it, `if_match` checked against it, up to USER_ROW_WRITES times. Not through `put_user`,
    which drops a row older than the stored one: a refit begun after this PATCH stamped its
    time and committed before its write would keep the old version in the row (200 to the client). Returns (the stated
    preferences read, those written; the same object when the change changes nothing: nothing written). Raises
    VersionMismatch, ValueError (an unknown feature), StoreUnavailable, Busy (the row changed USER_ROW_WRITES times
    while it was written: nothing of this change is stored)."""
    drawn: list[tuple[StatedPreferences, StatedPreferences]] = []  # (read, changed) of each row read

    def draw(record: UserRecord | None) -> UserRecord | None:
        now = time.time()
        current = stated_of(record)
        if if_match is not None and not tag_matches(current.tag(), if_match):
            raise VersionMismatch(current.version, current.tag())
        if if_none_match is not None and tag_matches(current.tag(), if_none_match):
            raise VersionMismatch(current.version, current.tag(), "If-None-Match")
        stated = current.changed(changes, at=now)
        drawn.append((current, stated))
        if stated is current:
            return None
        _store_missing_changes(rt, tenant, user_id, current)
        base = record or UserRecord(tenant=tenant, user_id=user_id, created_at=now, updated_at=now, pal_version=rt.rewards.version)
        # later than the row read, even on a clock behind the replica that wrote it: a writer that read that row
        # must not match this one (`put_user_if` compares `updated_at`)
        updated_at = now if record is None else max(now, math.nextafter(record.updated_at, math.inf))
        return msgspec.structs.replace(base, stated=stated.encode(), updated_at=updated_at)

    def give_up(_: UserRecord) -> UserRecord:
        raise Busy(f"the user's row changed {USER_ROW_WRITES} times while this change was written: nothing of it is "
                   "stored; send it again", retry_after=1)

    # with replicas: each read starts from another's PATCH a moment ago
    _write_over_read(rt, tenant, user_id, draw, give_up, tables=("users", "stated_changes"))
    return drawn[-1]


class PalProfile(msgspec.Struct):
    logits: list[float]
    weights: list[float]  # softmax of the logits: the user's mixture over prototypes
    nearest_prototype: int
    version: str
    prior: bool


class FeatureBelief(msgspec.Struct):
    weight: float  # posterior mean of the user's coefficient on the feature
    sd: float  # its posterior standard deviation


class UserModelProfile(msgspec.Struct):
    """The user's own model in readable form: their weight on each PAL prototype (around the
    population's mixture; off the simplex = beyond every prototype) and on each named feature."""

    prototypes: list[FeatureBelief]  # (K,) weights on the prototypes' ideal-point terms
    features: dict[str, FeatureBelief]  # FEATURE_NAMES -> belief; positive = prefers more of it
    comparisons: int
    population: str  # the population checkpoint the residual was fitted against
    pooled_users: int = 0  # fitted under the tenant's pooled prior from this many of its users (0: the model's own prior)
    ties: int = 0  # ties (two answers, neither better) fitted beside the comparisons (Davidson's tie term)


def model_profile(state: UserState | None) -> UserModelProfile | None:
    if state is None:
        return None
    belief = lambda name: FeatureBelief(*state.coefficient(name))  # noqa: E731
    return UserModelProfile(
        prototypes=[belief(n) for n in state.names if n.startswith("prototype_")],
        features={name: belief(name) for name in FEATURE_NAMES}, comparisons=state.n,
        population=state.population, pooled_users=state.pooled_users, ties=state.ties,
    )


class NearestPrototype(msgspec.Struct, kw_only=True):
    prototype: int
    weight: float  # the user's posterior weight on it (or PAL's mixture weight without a user model)
    highest: list[Example]  # stored answers it scores highest, best first
    lowest: list[Example]  # and lowest, worst first
    # the posterior probability that it is the prototype the user weighs most, and its level (`confident`, `likely`,
    # `uncertain`); both null where nothing was learned from the user's answers (their weights are the prior's, the
    # prototype the population's largest) or under `user_model = prototypes` (PAL's weights have no posterior)
    probability: float | None = None
    confidence: str | None = None


class UserSummary(msgspec.Struct, kw_only=True):
    """What the model believes, in words: each named feature's direction and confidence, the
    nearest prototype shown by stored answers (the user's own; the tenant's with `profile_examples = tenant`), and how
    many comparisons support it."""

    comparisons: int
    features: list[FeatureSummary]  # most certain first
    nearest_prototype: NearestPrototype
    sentences: list[str]  # the same, as short sentences a person can read
    # named features the user's comparisons moved together (they cannot tell which one the user cares
    # about), with the posterior probability of the user's direction along them jointly
    joint: list[JointBelief] = []
    # the user's other stored preferences, beside `comparisons` (the three add up to the profile's
    # counts.preferences): ties (neither answer better; a rating of 3), and ratings of an answer that had no
    # other to compare it with, which no model learns from
    ties: int = 0
    unpaired_ratings: int = 0
    # of `ties`, those the user's own model learned from (two answers, neither better: Davidson's tie term;
    # not a rating of 3, which names one answer; none under `user_model = prototypes`, whose PAL fit reads winners)
    ties_learned: int = 0
    # the user's newest RECENT_ANSWERS answers fail the held-out check (`UserState.surprised`): they changed their
    # mind, the beliefs above still rest on their older answers, and chat's `compare` asks them again (the
    # summary says so); false under `user_model = prototypes` (no check)
    changed_mind: bool = False


# the summary's first sentence while the user's newest answers fail the held-out check (`UserSummary.changed_mind`)
CHANGED_MIND = (f"your newest {RECENT_ANSWERS} answers disagree with what your earlier answers showed, as if you changed your "
                "mind: what follows still rests on the earlier ones, and pluralign asks again which answer you prefer until it "
                "has caught up")

DESCRIBED_PAIRS = 200  # stored pairs drawn to describe the prototypes (`Store.answers_sample`)


def prototype_descriptions(rt: Runtime, tenant: str | None, rewards: UserRewards | None = None, per_side: int = 2) -> list[PrototypeDescription]:
    """Each prototype of the served population model described by the tenant's (None: every
    tenant's, each example naming its tenant, so the page of every tenant's says
    whose) stored answers it scores highest and lowest (both answers of a random
    sample of up to 200 distinct stored pairs of answers, whatever their prompts, `Store.answers_sample`'s `per="pair"`:
    the description shows each answer once, so the "Yes."/"No." of a questionnaire's every question do not take the slots of
    other answers; none stored: empty example lists)."""
    if tenant is not None:
        return _describe(rewards or rt.rewards, *rt.store.answers_sample(tenant, DESCRIBED_PAIRS, per="pair"), per_side)
    *sample, tenants = rt.store.answers_sample(None, DESCRIBED_PAIRS, with_tenants=True, per="pair")
    return _describe(rewards or rt.rewards, *sample, per_side, tenants=tenants)


def _describe(rewards: UserRewards, prompts: list[str], answers: list[str], prompt_vec: np.ndarray, answer_vec: np.ndarray,
              per_side: int = 2, tenants: list[str] | None = None) -> list[PrototypeDescription]:
    keep = [i for i, answer in enumerate(answers) if not is_blank(answer)]  # an older version stored blank answers
    if len(keep) < len(answers):
        prompts, answers = [prompts[i] for i in keep], [answers[i] for i in keep]
        prompt_vec, answer_vec = prompt_vec[keep], answer_vec[keep]
        tenants = [tenants[i] for i in keep] if tenants is not None else None
    if not answers:
        return describe_prototypes(np.zeros((0, rewards.k)), [], [], per_side)
    scores = np.stack([rewards.score(logits, prompt_vec, answer_vec) for logits in rewards.prototype_logits()], axis=1)  # (M, K)
    return describe_prototypes(scores, prompts, answers, per_side, tenants=tenants)


def described_prototypes(rt: Runtime, tenant: str, rewards: UserRewards) -> list[PrototypeDescription]:
    """`prototype_descriptions` of the tenant. Once its sample is full (the tenant holds at least
    DESCRIBED_PAIRS pairs) it is reused `pooled_prior_ttl_s` seconds per population model, until a
    user of the tenant is deleted (`Runtime.forget_pooled`): drawn afresh for every profile, the sample
    read every row id of the tenant, so a profile got slower as the tenant's rows grew. A smaller tenant's
    is drawn each time (cheap, and each new pair changes it)."""
    key = (tenant, rewards.version)
    with rt.pooled_lock:
        cached = rt.described.get(key, _MISSING)
        generation = rt.pooled_generation.get(tenant, 0)
    if cached is not _MISSING:
        return cached
    sample = rt.store.answers_sample(tenant, DESCRIBED_PAIRS, per="pair")
    described = _describe(rewards, *sample)
    with rt.pooled_lock:
        # full, and no user of the tenant deleted meanwhile
        if len(sample[1]) >= 2 * DESCRIBED_PAIRS and rt.pooled_generation.get(tenant, 0) == generation:
            rt.described[key] = described
    return described


def summary(rt: Runtime, tenant: str, user_id: str, weights: UserWeights, comparisons: int, preferences: int | None = None,
            set_aside: int = 0) -> UserSummary:
    """The user's `UserSummary`; `preferences`: how many preference rows the user has (the profile's count): where
    they are more than `comparisons`, its ties and unpaired ratings are counted and said not to be learned from;
    `set_aside`: their rows set aside as dead letters, said not to be learned from."""
    rewards = weights.rewards or rt.rewards
    stated = weights.stated.preferences
    belief = None
    if weights.state is not None:  # what the comparisons alone say on stated features was fitted with the state
        beliefs, joint = feature_beliefs(weights.state, stated), joint_beliefs(weights.state, stated)
        protos = [weights.state.coefficient(f"prototype_{k}")[0] for k in range(rewards.k)]
        belief = nearest_prototype(weights.state)
        learned = weights.state.answers > 0
    else:  # PAL's weights alone (`user_model = prototypes`): no named features
        beliefs, joint = [], []
        logits = np.asarray(weights.logits, np.float64)
        protos = list(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
        learned = not weights.prior
    nearest = int(np.argmax(protos))
    if rt.settings.profile_examples == "own":  # no other user's texts in this user's profile
        described = _describe(rewards, *rt.store.own_answers_sample(tenant, user_id, DESCRIBED_PAIRS))[nearest]
    else:
        described = described_prototypes(rt, tenant, rewards)[nearest]
    sentences = written_sentences(beliefs, joint)
    if not sentences:
        sentences = ["no preference about how answers are written is settled yet"]
    changed_mind = weights.state is not None and weights.state.surprised
    if changed_mind:  # the service asks again: the beliefs above must not read as the last word
        sentences.insert(0, CHANGED_MIND)
    sentences.append(_prototype_sentence(nearest, rewards.k, protos[nearest], belief, learned, described))
    # each kind counted as stored, only for a user with rows past their comparisons: the difference alone took a
    # comparison stored since the fit (in `preferences`, not in `comparisons`) for a tie or a rating
    ties, unpaired = (rt.store.count_ties(tenant, user_id), rt.store.count_unpaired(tenant, user_id)) \
        if (preferences or 0) > comparisons else (0, 0)
    learned, said = 0, ties
    if residual_on(rt) and ties:  # a tie of two answers stored since the fit is no rating of 3, nor learned yet: the
        paired = rt.store.count_paired_ties(tenant, user_id)  # sentence leaves it out (the next read fits it), as a comparison
        learned = min(weights.state.ties, paired) if weights.state is not None else 0  # no state: ratings of 3 alone
        said = learned + max(ties - paired, 0)  # the ties learned and the ratings of 3
    # the user's own model learns from ties of two answers, with a state or not yet (ratings of 3 alone fit none)
    sentences.append(based_on(comparisons, said, unpaired, learned, learns_ties=residual_on(rt)))
    if set_aside:
        sentences.append(f"{set_aside} row{'s' * (set_aside != 1)} set aside (acknowledged, but the service could not store "
                         f"{'them' if set_aside != 1 else 'it'}: an admin may put {'them' if set_aside != 1 else 'it'} back) "
                         f"{'are' if set_aside != 1 else 'is'} not learned from; the export holds {'them' if set_aside != 1 else 'it'}")
    return UserSummary(
        comparisons=comparisons, features=beliefs, sentences=sentences, joint=joint, ties=ties, unpaired_ratings=unpaired,
        ties_learned=learned, changed_mind=changed_mind,
        nearest_prototype=NearestPrototype(prototype=nearest, weight=round(float(protos[nearest]), 4),
                                           highest=described.highest, lowest=described.lowest,
                                           probability=belief.probability if belief else None,
                                           confidence=belief.confidence if belief else None),
    )


def _prototype_sentence(nearest: int, k: int, weight: float, belief: PrototypeBelief | None, learned: bool,
                        described: PrototypeDescription) -> str:
    """The summary's sentence on the nearest prototype: "closest to prototype 1 of 4 (weight 0.71, likely), which
    scores highest answers like “...”", with the confidence that it is the one the user weighs most (none under PAL's
    weights alone); for a user nothing was learned from, that no prototype is theirs yet and which one users in general
    lean to (not named as the user's closest, beside "based on 0 comparisons"). The answer
    is quoted as it reads, its lines joined by spaces (not as Python's `repr`, where a line break reads
    `\\n`, an apostrophe `\\'`), its bidi control characters as their code points ("[U+202E]",
    `bidi_controls_shown`: obeyed, an override would reverse the quote)."""
    quoted = bidi_controls_shown(' '.join(described.highest[0].answer.split())) if described.highest else ""
    like = f", which scores highest answers like “{quoted}”" if described.highest else ""
    if not learned:
        return (f"no prototype is closest yet: nothing learned from your answers (users in general lean to prototype "
                f"{nearest} of {k}, weight {weight:.2f}{like})")
    return f"closest to prototype {nearest} of {k} (weight {weight:.2f}{f', {belief.confidence}' if belief else ''}){like}"


def based_on(comparisons: int, ties: int, unpaired_ratings: int, ties_learned: int = 0, learns_ties: bool = False) -> str:
    """The summary's last sentence: "based on 12 comparisons" (and "and 3 ties (neither answer better)", those the
    user's own model learned from, `ties_learned`), and the rows it is not based on, so that it reads true beside
    counts.preferences. With `learns_ties` (the user's own model, which fits ties of two answers) the ties left are
    ratings of 3: "based on 4 comparisons and 2 ties (neither answer better); your 1 rating of 3 (one answer, no
    other named) is not counted: the model learns from two answers compared"; without (PAL's weights alone):
    "based on 0 comparisons; your 5 ties (neither answer better) are not counted: the model learns from
    comparisons with a winner"."""
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"  # noqa: E731
    said = f"based on {plural(comparisons, 'comparison')}"
    if ties_learned:
        said += f" and {plural(ties_learned, 'tie')} (neither answer better)"
    other_ties = ties - ties_learned
    left = [f"{plural(n, word)}{why}" for n, word, why in (
        (other_ties, "rating" if learns_ties else "tie", " of 3 (one answer, no other named)" if learns_ties else " (neither answer better)"),
        (unpaired_ratings, "rating", " of an answer with no other to compare it with"),
    ) if n]
    if not left:
        return said
    verb = "is" if other_ties + unpaired_ratings == 1 else "are"
    why = "the model learns from two answers compared" if learns_ties else "the model learns from comparisons with a winner"
    return f"{said}; your {' and '.join(left)} {verb} not counted: {why}"


class Counts(msgspec.Struct):
    preferences: int
    interactions: int
    # the user's rows set aside as dead letters (acknowledged, never stored: nothing learned from them; the export
    # holds them, `learned_from: false`)
    set_aside: int = 0


class StatedShown(msgspec.Struct, kw_only=True):
    """A user's stated preferences as the profile and the export show them (`StatedPreferences` without its `epoch`,
    a part of the entity tag only: `ETag` of GET .../stated-preferences); `history`: the latest version's changes in
    the profile, every version's in the export."""

    format: int = STATED_VERSION
    version: int
    preferences: dict[str, Direction]
    history: list[StatedChange]

    @classmethod
    def of(cls, stated: StatedPreferences, history: list[StatedChange] | None = None) -> StatedShown:
        """`stated` shown with `history` (None: the latest version's changes it holds)."""
        return cls(version=stated.version, preferences=stated.preferences,
                   history=stated.latest().history if history is None else history)


class UserProfile(msgspec.Struct):
    user: str
    attributes: dict[str, str]
    pal: PalProfile
    counts: Counts
    adapter: str | None
    created_at: float | None
    updated_at: float | None
    user_model: UserModelProfile | None = None  # null until the user has comparisons (or with `user_model = prototypes`)
    summary: UserSummary | None = None  # the model's beliefs in words
    # the user's stated preferences and the latest version's changes (every version: GET .../stated-preferences, the export)
    stated: StatedShown | None = None


def profile(rt: Runtime, tenant: str, user_id: str) -> UserProfile | None:
    """The user's profile; None (a 404) when nothing is held about them. A user whose only rows are set aside as dead
    letters has one, as an export (`anything_held`): the population's prior, nothing learned, `counts.set_aside`
    (not a 404 beside the export's 200)."""
    weights = user_weights(rt, tenant, user_id)
    counts = Counts(
        preferences=rt.store.count_preferences(tenant, user_id),
        interactions=rt.store.count_interactions(tenant, user_id),
        set_aside=rt.ingest.dead_letters.rows_for(tenant, user_id),
    )
    if weights.record is None and counts.preferences == 0 and counts.interactions == 0 and counts.set_aside == 0:
        return None
    logits = np.asarray(weights.logits, np.float64)
    mix = np.exp(logits - logits.max())
    mix /= mix.sum()
    record = weights.record
    return UserProfile(
        user=user_id,
        attributes=record.attributes if record else {},
        pal=PalProfile(
            logits=logits.tolist(), weights=mix.tolist(), nearest_prototype=int(mix.argmax()),
            version=(weights.rewards or rt.rewards).version, prior=weights.prior,
        ),
        counts=counts,
        adapter=record.adapter if record else None,
        created_at=record.created_at if record else None,
        updated_at=record.updated_at if record else None,
        user_model=model_profile(weights.state),
        summary=summary(rt, tenant, user_id, weights, weights.state.n if weights.state is not None else int(record.n_preferences if record else 0),
                        counts.preferences, counts.set_aside),
        stated=StatedShown.of(weights.stated),
    )


def register_adapter(rt: Runtime, tenant: str, user_id: str, source: Path) -> str:
    """Copy a saved LoRA adapter (peft `save_pretrained` folder) in as the user's adapter; the
    next chat request of the user generates with it. Returns the adapter name."""
    if not (source / "adapter_config.json").exists():
        raise ValueError(f"{source} holds no adapter_config.json (save the adapter with peft's save_pretrained)")
    if (source / META_FILE).exists():  # built by pluralign: refuse one trained on another base model
        check_base(read_meta(source), rt.generator.model_id, source)
    check_files(source)  # a damaged copy is refused here, not found at the user's next chat
    name = adapter_name(tenant, user_id)
    folder = adapter_folder(rt, tenant, user_id)
    # copied beside the user's adapter, then renamed into place: a copy cut short leaves the old one
    with staged_folder(folder, ADAPTER_FILES, "LoRA adapter") as staged:
        shutil.copytree(source, staged, dirs_exist_ok=True)
        now = time.time()
        if (staged / META_FILE).exists():  # when it was received here, beside when it was trained (`forget_before`)
            write_meta(staged, msgspec.structs.replace(read_meta(staged), received_at=now))
        else:  # a bare peft folder: registered for the model served here
            write_meta(staged, AdapterMeta(kind="user", base_model=rt.generator.model_id, shots=0, data_version="registered",
                                           created_at=now, received_at=now))
    rt.adapters.forget(tenant, user_id)  # a re-registered adapter is reloaded from its new files
    with rt.user_lock(tenant, user_id):  # no PATCH or refit between the read and the write is undone
        weights = user_weights(rt, tenant, user_id)
        now = time.time()
        record = weights.record or UserRecord(tenant=tenant, user_id=user_id, created_at=now, updated_at=now, pal_version=rt.rewards.version)
        rt.store.put_user(msgspec.structs.replace(record, adapter=name, updated_at=now))
    return name


def export_lines(rt: Runtime, tenant: str, user_id: str) -> Iterator[bytes]:
    """JSONL: one `user` line, then a line per preference and per interaction, each tagged by `type`.

    Read as it is sent (`Store.preferences_in_order`): the first `next` moves the user's pending feedback
    in (`flush_for_read`), reads their row (refitted first when stale, as a profile read: `user_weights`) and
    fixes the versions of the preference and interaction tables that every later line comes from, so a failure
    up to the first line (StoreUnavailable, the 503 of `flush_for_read`) is raised before anything is sent; a
    later one (StoreUnavailable, DeletedMeanwhile when the user is deleted meanwhile) is raised by the `next`
    that meets it."""
    encode = msgspec.json.encode
    flush_for_read(rt, tenant, user_id)
    # refitted first when stale, as a profile read is: the row as stored may predate their latest feedback (its
    # background refit not run yet, or waiting for the feedback log's backlog: `after_move`)
    record = user_weights(rt, tenant, user_id, flush=False).record
    if record is not None:
        line = msgspec.to_builtins(msgspec.structs.replace(record, user_model=None, stated=None))
        line["user_model"] = msgspec.to_builtins(stored_state(record))  # the residual posterior, readable
        stated = stated_of(record)  # stated preferences and every change, versioned (not the epoch: `StatedShown`)
        # the history's place on the line, filled as it is read (`_stated_history_pieces`): a random text no row holds
        history_at = f"stated-history-{uuid.uuid4().hex}"
        line["stated"] = {**msgspec.to_builtins(StatedShown.of(stated, [])), "history": history_at}
        history = _stated_history_pieces(rt, tenant, user_id, stated, record.created_at)
        first_changes = next(history)  # the first page before any line: its failure is the export's, nothing sent
    preferences = rt.store.preferences_in_order(tenant, user_id)
    interactions = rt.store.interactions_in_order(tenant, user_id)
    set_aside = rt.ingest.dead_letters.rows_of(tenant, user_id)
    if record is not None:
        # the rows the lines below hold (of the versions they are read from), as the profile counts them: the row's own
        # counts are its last refit's, which no chat makes; the store's counts now may hold a row stored since
        line["n_preferences"], line["n_interactions"] = len(preferences), len(interactions)
        before, after = encode({"type": "user", **line}).split(encode(history_at))
        yield before + b"[" + first_changes
        yield from history
        yield b"]" + after + b"\n"
    for row in preferences:
        yield encode({"type": "preference", **msgspec.to_builtins(row)}) + b"\n"
    yield from set_aside_lines(set_aside)
    for item in interactions:
        yield encode({"type": "interaction", **msgspec.to_builtins(item)}) + b"\n"


# versions of stated changes (at most 16 changes each, ~0.6 KB a version of 7) an export reads at once, each read finding
# its versions' rows by the index on `version` (`pluralign.store.tables.RANGE_INDEXED`): ~3 MB of a history at most
STATED_VERSIONS_PER_READ = 5_000


def _stated_history_pieces(rt: Runtime, tenant: str, user_id: str, stated: StatedPreferences, created_at: float) -> Iterator[bytes]:
    """The export's `stated.history` (every version's changes, oldest first) as pieces of the JSON array's inside,
    `STATED_VERSIONS_PER_READ` versions a read (`stated_history`), each piece after the first opening with its comma:
    the history has no bound (2^63 versions), and held whole it made an export of a user who changed their mind a
    million times hold every change at once, where its preference and chat lines are read 1,000 rows at a time.
    Always yields a first piece (empty for no change). The pages after the first are read while the line is sent,
    from the table as it is then: each is sent only while the user's row (`created_at`: the row `stated` was read
    from) still holds that record (`_same_record`), else DeletedMeanwhile, as a cut preference read: a DELETE between
    two pages left the rest of the history missing, or the versions of a record made since in its place."""
    encode = msgspec.json.encode
    first, written = 1, False
    while True:
        last = min(stated.version, first + STATED_VERSIONS_PER_READ - 1)
        page = stated_history(rt, tenant, user_id, stated, first, last) if first <= stated.version else []
        if first > 1 and not _same_record(rt, tenant, user_id, stated, created_at):
            raise DeletedMeanwhile(f"the stated preferences being read (versions {first} to {last} of {stated.version}) were deleted meanwhile")
        piece = encode(page)[1:-1]
        yield (b"," + piece) if written and piece else piece
        written = written or bool(piece)
        if last >= stated.version:
            return
        first = last + 1


def _same_record(rt: Runtime, tenant: str, user_id: str, stated: StatedPreferences, created_at: float) -> bool:
    """Whether the user's row, read now, still holds the stated-preference record `stated` (read from their row made at
    `created_at`), at its version or a later one: no DELETE since, nor a DELETE and a new record under the id (its
    versions restart at 1 under a new epoch; a record an earlier release wrote has none: the row's `created_at`)."""
    rt.store.refresh("users")  # with replicas: as fresh as the page `stated_history` may have read again
    row = rt.store.get_user(tenant, user_id)
    if row is None:
        return False
    now = stated_of(row)
    return now.version >= stated.version and (now.epoch == stated.epoch if stated.epoch else row.created_at == created_at)


def set_aside_lines(letters: list) -> Iterator[bytes]:
    """The export's lines of the user's rows set aside as dead letters (`DeadLetters.rows_of`: [(name, letter)]): a
    `preference` line each, as stored rows' are (a time that is not finite as null), with `learned_from: false` (never
    stored, so nothing was learned from it) and `set_aside` ({letter, error, set_aside_at}: an admin may put it back
    once its cause is fixed, docs/admin.md "Dead letters")."""
    for name, letter in letters:
        why = {"letter": name, "error": letter.error, "set_aside_at": letter.set_aside_at}
        for row in letter.rows:
            yield msgspec.json.encode({"type": "preference", **msgspec.to_builtins(row), "learned_from": False,
                                       "set_aside": why}) + b"\n"


def anything_held(rt: Runtime, tenant: str, user_id: str) -> bool:
    """Whether an export of the user holds anything (a user row, a preference or an interaction, or their
    acknowledged feedback still pending in the log, which is not moved for it, or set aside as a dead letter): counts,
    not rows."""
    return (bool(rt.ingest.log.pending_for(tenant, user_id)) or held_in_store(rt, tenant, user_id)
            or rt.ingest.dead_letters.holds(tenant, user_id))


def held_in_store(rt: Runtime, tenant: str, user_id: str) -> bool:
    """Whether the store holds a user row, a preference or an interaction of the user: counts, not rows."""
    return (rt.store.get_user(tenant, user_id) is not None or rt.store.count_preferences(tenant, user_id) > 0
            or rt.store.count_interactions(tenant, user_id) > 0)


def export_preference_lines(rt: Runtime, tenant: str, user_id: str) -> Iterator[bytes]:
    """JSONL in the preference-file form (`pluralign.data.io.preference_row`: TRL's prompt/chosen/
    rejected, each row in the form it was imported in with TRL's extra columns (`StoredPreference.trl`;
    text for feedback and rows stored before it was kept), plus user_id, margin, tie, source, created_at,
    attributes): what `import_preferences`,
    `pluralign data import` and TRL read. Rating rows without a rival answer (nothing to compare) are left out,
    and so are rows an import would refuse that older versions stored (a blank prompt or answer, two
    answers with the same visible text); a `created_at` an import refuses (`created_at_problem`) is written as null,
    a conversation it refuses (a role outside `MESSAGE_ROLES`) as its text, a row mixing TRL's forms in the conversational
    form, a score held as the text of a number ("8.5") as that number and one of another type left out (`file_trl`:
    imports of older releases stored them); a `pref_id` as it is stored,
    one no new row may carry included (`..`, stored before review dots54: an import refuses that line, naming it). Read as it is sent, from one version of the table, with the errors
    of `export_lines`."""
    from pluralign.data.io import file_trl, preference_row
    from pluralign.data.record import Preference, file_time, pref_id_problem

    flush_for_read(rt, tenant, user_id)
    for row in rt.store.preferences_in_order(tenant, user_id):
        if not in_preference_file(row):
            continue
        record = Preference(
            user_id=row.user_id, prompt=row.prompt, chosen=row.chosen, rejected=row.rejected, margin=row.margin,
            tie=row.tie, source=row.source, attributes=row.attributes,
            trl=file_trl(row.trl, row.chosen),  # a conversation no file takes (a role `bot`: imports before rows42 stored it) as its text
            # a time no file takes (-5, 1e300: imports before session rows42 stored them) is left out: stamped on receipt
            created_at=file_time(row.created_at),
        )
        line = preference_row(record)
        # the row's id as it is stored, one an older release took that no new row may carry included (`..`, which an
        # import now refuses: `new_pref_id_problem`), so it is read and retracted by it; an id a library user chose that
        # is not one at all (a space) is left out
        if pref_id_problem(row.pref_id) is None:
            line["pref_id"] = row.pref_id
        yield msgspec.json.encode(line) + b"\n"


def in_preference_file(row: StoredPreference) -> bool:
    """Whether `export_preference_lines` writes the row: not a rating without rival, nor a blank or same-answer
    row an older version stored, nor one with an attribute name holding a control character or a bidi embedding,
    override or isolate (an import refuses them: `check_labels`)."""
    return is_comparison(row.prompt, row.chosen, row.rejected) and not any(name_control_problem(name) for name in row.attributes or ())


def export_started(rt: Runtime, tenant: str, user_id: str, export_format: str) -> tuple[Iterator[bytes], bytes | None]:
    """The user's export (`export_format` "all": `export_lines`; "preferences": `export_preference_lines`) and
    its first line, None when it has none. A DELETE of the user landing between the version being fixed and
    that line being read (DeletedMeanwhile) starts it once more, on what is held now: nothing was sent yet,
    and a user deleted meanwhile is then unknown (no line), never a 500. Raises StoreUnavailable as the export."""
    build = export_lines if export_format == "all" else export_preference_lines

    def started() -> tuple[Iterator[bytes], bytes | None]:
        lines = build(rt, tenant, user_id)
        return lines, next(lines, None)

    return again_if_deleted(started)


def export_head(rt: Runtime, tenant: str, user_id: str, export_format: str) -> bool | None:
    """What a HEAD of the export answers: None when nothing is held about the user (`anything_held`: a 404),
    else whether the export has a first line (`export_has_lines`). A DELETE of the user while that is looked
    at (DeletedMeanwhile) is looked at once more, as `export_started`: the 404 of a user deleted meanwhile,
    never a 500. Call after `flush_for_read`; raises StoreUnavailable as the export does."""
    return again_if_deleted(lambda: export_has_lines(rt, tenant, user_id, export_format) if anything_held(rt, tenant, user_id) else None)


T = TypeVar("T")


def again_if_deleted(read: Callable[[], T]) -> T:
    """`read()`, once more if a DELETE of the user cut it (DeletedMeanwhile): the second reads what is held
    now. A second DeletedMeanwhile passes through."""
    try:
        return read()
    except DeletedMeanwhile:
        return read()


EXPORT_PROBE_ROWS = 64  # rows a HEAD of the preference file reads at a time, looking for one it would write


def export_has_lines(rt: Runtime, tenant: str, user_id: str, export_format: str) -> bool:
    """Whether the user's export (`export_format` "all": `export_lines`; "preferences": `export_preference_lines`)
    has a line now, without building it (a HEAD's answer: a body or none decides its `Content-Encoding`).
    "all": a user row, a preference or an interaction, counted (`held_in_store`); "preferences": the sort keys
    (created_at, pref_id) of all their rows, then their rows in order, EXPORT_PROBE_ROWS at a time, up to the
    first the file keeps (the first one, for nearly every user). Call after `flush_for_read`; raises
    StoreUnavailable as the export does."""
    if export_format == "all":
        return held_in_store(rt, tenant, user_id) or rt.ingest.dead_letters.holds(tenant, user_id)
    return any(in_preference_file(row) for row in rt.store.preferences_in_order(tenant, user_id, EXPORT_PROBE_ROWS))


def import_rows(tenant: str, user_id: str, records: list, pref_ids: list[str] | None = None) -> list[StoredPreference]:
    """Stored comparison rows for `user_id` from preference records (their times and labels kept,
    received now), each under the `pref_id` its record carries (an export's), else `pref_ids`' (one per
    record, an idempotent import's), else a fresh random id. A record without a `source` is labelled
    "import", unless it carries its own `pref_id`: an exported row comes back as it was stored, so a row
    stored without a source (by a library call, or an older release) imported again is the same row, not
    a 409 naming `source`."""
    now = time.time()
    pref_ids = [r.pref_id or pref_id for r, pref_id in zip(records, pref_ids or [uuid.uuid4().hex for _ in records], strict=True)]
    return [
        StoredPreference(
            tenant=tenant, user_id=user_id, pref_id=pref_id, kind="comparison",
            created_at=r.created_at if r.created_at is not None else now + i * 1e-6,
            prompt=r.prompt, chosen=r.chosen, rejected=r.rejected, tie=r.tie, margin=r.margin,
            source=r.source if r.pref_id else r.source or "import", attributes=r.attributes, received_at=now, trl=r.trl,
        )
        for i, (r, pref_id) in enumerate(zip(records, pref_ids, strict=True))
    ]


def new_rows(rt: Runtime, tenant: str, user_id: str, rows: list[StoredPreference],
             stamped: frozenset[str] = frozenset()) -> tuple[list[StoredPreference], list[str]]:
    """(new, held) of an import's rows: the rows to store, and the ids of those the user holds already with
    the same content (a file imported again), which are not stored again; a row repeated in the body goes
    once. `stamped`: the ids of rows whose file gave no `created_at` (stamped on receipt, `import_rows`):
    their times are not compared. The user's rows still in the feedback log are held too
    (`Store.new_and_held`, the check `Store.add_preferences` makes). Raises PrefIdConflict (its `index` the
    row's position in `rows`, its `earlier` that of the earlier row with the id, None when the row differs
    from a held one) for a row whose id is held, or given by an earlier row, with other content. Run in a thread."""
    pending = [r for e in rt.ingest.log.pending_for(tenant, user_id) for r in e.rows]
    new, held = rt.store.new_and_held(rows, pending, untimed=stamped)
    return [rows[i] for i in new], [rows[i].pref_id for i in held]


class HeldRowsGone(Exception):
    """Rows an import found held (`new_rows`) were deleted before they could count as received again
    (`received_again`): a DELETE of the user ran meanwhile. Nothing of the import was logged; sent
    again, the rows are stored anew."""


def received_again(rt: Runtime, tenant: str, user_id: str, held: list[str], received_at: float | None = None) -> None:
    """The rows of an import the user holds with the same content (`new_rows`' `held`: in the table or in this
    replica's feedback log) count as received now, as the import's new rows do. Those in the table have their
    `received_at` moved on (`Store.received_again`): a DELETE of the user begun before
    the import and finished later, on any replica, keeps what came after it began (`came_back`,
    `forget_before`), and before this removed rows the import had acknowledged as `already_stored`. Rows
    held in this replica's feedback log, not yet moved, are logged again, received now: a DELETE's record
    applied here (`service.deletions`) drops the copy received before it began and keeps this one, and the
    mover keeps the latest time of one row's copies (`Store.add_preferences`). Kept at
    their first time, they would be dropped by that record. `received_at` (unix seconds; None: now): when the import
    arrived, the time its claims on those ids carry (`controllers._claim_and_log`); the copy logged again carries it
    too. With the log's stamp, later, a DELETE on another replica begun between the two would remove the
    claim (received before it) and keep the copy (received after), and the id take other content there beside it.
    Raises HeldRowsGone when some went from the table meanwhile. Run in a thread, under the tenant's import lock (with replicas, and the user's lock:
    `service.users.controllers._claim_and_log`)."""
    logged = _logged(rt, tenant, user_id, held)
    in_table = [i for i in dict.fromkeys(held) if i not in logged]
    if in_table and rt.store.received_again(tenant, user_id, in_table) < len(in_table):
        raise HeldRowsGone
    if logged:
        at = time.time() if received_at is None else received_at
        # copies of rows acknowledged already, but copies all the same: they wait in the log as new rows do, so they count
        # against the tenant's bound (TenantBacklog; `_claim_and_log` asked first, `held_in_log`)
        rt.ingest.submit([msgspec.structs.replace(row, received_at=at) for row in logged.values()], received_at)


def _logged(rt: Runtime, tenant: str, user_id: str, held: list[str]) -> dict[str, StoredPreference]:
    """{pref_id: row} of the `held` ids whose rows wait in this replica's feedback log (not yet moved)."""
    wanted = set(held)
    return {r.pref_id: r for e in rt.ingest.log.pending_for(tenant, user_id) for r in e.rows if r.pref_id in wanted} if wanted else {}


def held_in_log(rt: Runtime, tenant: str, user_id: str, held: list[str]) -> int:
    """How many of an import's `held` rows wait in the feedback log: the copies `received_again` logs, which count
    against the tenant's bound on waiting rows (`FeedbackLog.check_room`) as its new rows do."""
    return len(_logged(rt, tenant, user_id, held))


class EmbeddingsNotForgotten(RuntimeError):
    """Every step of a DELETE ran (its journal entry is gone) but the vectors of the user's texts could
    not be removed from an embedding cache (damaged, unreadable, its folder not permitted): the rows
    that named the texts are gone, so no later pass can find them. `counts`: the DELETE's; `left`: what
    could not be cleaned, in words for the client (no paths: the log names the files)."""

    def __init__(self, counts: dict[str, int], left: list[str]):
        super().__init__("; ".join(left))
        self.counts, self.left = counts, left


def delete(rt: Runtime, tenant: str, user_id: str, unfinished: Unfinished | None = None,
           began: list[float] | None = None) -> dict[str, int]:
    """Every row, the weights and the adapter files of the user; old table versions are purged too,
    and so is their feedback still pending in the log (from memory and the log's files); their
    queued or running jobs are stopped and every job file naming them removed (`delete_hooks`); their
    rows and fitted weights leave population snapshots and PAL/EM artifacts (`Runtime.forget_population_users`), and the vectors of their
    texts the embedding cache those jobs fill (first, while the rows still name the texts); with several replicas,
    a deletion record tells the others to do the same to their own files (`service.deletions`), written as soon as the
    rows left the store.

    Before its first destructive step the DELETE is written to the journal of DELETEs in progress
    (`service.users.journal`), and its entry goes only once every step finished (the embedding cache's
    failure aside: the rows that named the texts are gone, so a retry cannot find them). Stopped part way
    (the process killed, a population file that could not be rewritten), the service finishes it at its
    next start and every `deletion_sweep_s` after (`UnfinishedDeletes`, which passes the entry as
    `unfinished`), whether or not the client sends it again; the store finishes its own purge at its next
    turn or start (`Store.delete_user`). A user who came back meanwhile (feedback, an import, a chat or a
    stated preference received after the DELETE began, through any replica) keeps what they sent since:
    only what was received before goes (`came_back`, `forget_before`).

    Returns counts by kind: preferences, interactions, users, stated_changes, adapter_files, job_files,
    population_files (files rewritten without them); all 0 for an `unfinished` entry finished meanwhile.
    `began`: a new DELETE appends when it began (unix seconds; its journal entry's `started_at`) to it.
    Raises TimeoutError when, with replicas, the store's maintenance lease is not free within its wait;
    OSError when the journal entry cannot be written (then nothing was deleted)."""
    journal = rt.delete_journal
    if unfinished is not None and unfinished.recorded_at is not None:
        seen_by_every_replica(rt, unfinished.recorded_at)  # before the turn: its wait holds no other DELETE's
    recorded: list[float] = []
    entry: Unfinished | None = None
    try:
        # the store's maintenance turn first (with replicas it may wait minutes for the lease), then the
        # user's lock: their chats and refits never wait that long
        with rt.store.maintenance(), rt.user_lock(tenant, user_id):  # no refit or adapter promotion of the user runs meanwhile
            if unfinished is None:
                entry = journal.begin(tenant, user_id, time.time())
                if began is not None:
                    began.append(entry.started_at)
            elif journal.resume(unfinished):
                entry = unfinished
            else:  # finished meanwhile, replaced by a later DELETE of theirs, or being run
                return no_counts(rt)
            if unfinished is None:
                counts, cache_error = _delete_steps(rt, tenant, user_id, entry.started_at, recorded)
            else:  # their rows stay in the log from the look on: moved into the table meanwhile, the store's step
                with rt.ingest.held(tenant, user_id):  # would delete what they sent since, with the rest
                    counts, cache_error = _finish_steps(rt, unfinished, recorded)
        # the steps took the user's adapter out of the pool (`AdapterPool.retire`); its drop from memory waits for their
        # chats still generating with it: waited for here, the turn let go (under it,
        # every tenant's DELETE would wait for this user's chat)
        rt.adapters.forget(tenant, user_id)
        # the turn ended (with replicas the store removed the old versions its purge left once every replica looks past
        # them, outside the turn: `Store._maintenance`); the wait for the record, and its step, hold no other DELETE either
        if recorded:
            seen_by_every_replica(rt, recorded[0])
            with rt.store.maintenance(), rt.user_lock(tenant, user_id):
                counts["interactions"] += _chats_stored_meanwhile(rt, tenant, user_id, recorded[0])
        # their ids leave the owed retractions' file once their rows are gone (`service.owed_retractions`)
        forget_owed(rt, lambda t, u: (t, u) == (tenant, user_id))
        journal.done(entry)  # every step ran: the entry, and the user's id in it, goes
    finally:
        if entry is not None:
            journal.release(entry)
    if cache_error:
        raise EmbeddingsNotForgotten(counts, cache_error)
    return counts


def delete_batch(rt: Runtime, tenant: str, user_ids: Iterable[str]) -> dict[str, int]:
    """`delete` of each of `user_ids` (of `tenant`) at once, as a tenant's removal deletes its users
    (`service.tenants`): each step takes every user of the batch in one go (`_delete_batch_steps`: one predicate per
    table and one purge of the store, each feedback-log segment rewritten once, one read of their texts for the
    embedding caches, one pass over population files and job files, one deletion record commit). One by one, a user
    costs ~0.9 s, nearly all of it the store's purge of every table (hours for 10,000 users; BENCHMARKS.md, session 49).

    The guarantees are `delete`'s: each user's journal entry is written before the first destructive step and goes
    once every step finished, so a batch stopped part way (the process killed) is finished at the next start: by the removal's next
    batch, whose look finds the entries (`UnfinishedDeletes` leaves them to a removal running here), else user by
    user by `UnfinishedDeletes`. What it does not do that
    `delete` does: look whether a user came back since (their tenant's keys are revoked before a removal deletes
    anyone: nothing they send after it began is theirs to keep), nor count the stated changes only a users row of an
    earlier format held (they go with the row, uncounted). Returns counts by kind, summed over the batch, as `delete`
    does; raises EmbeddingsNotForgotten, TimeoutError and OSError as it does."""
    journal = rt.delete_journal
    users = sorted(set(user_ids))
    if not users:
        return no_counts(rt)
    recorded: list[float] = []
    # their texts, for the embedding caches, read before the turn (256 users' rows: no other DELETE waits for it) when
    # they are one read's worth, in rows and in bytes (more: None, read in the turn a batch at a time, as a user's DELETE
    # reads them), the count first: a row moved into the table meanwhile changes it, and the texts are read again in the turn
    counted = rt.store.count_of(tenant, users)
    texts = rt.store.texts_of(tenant, users) if counted <= TEXT_ROWS_PER_READ else None
    entries: list[Unfinished] = []
    try:
        with rt.store.maintenance(), contextlib.ExitStack() as locks:  # the store's turn first, as `delete`
            for user_id in users:  # in one order (every batch sorts): two batches never wait for each other's locks
                locks.enter_context(rt.user_lock(tenant, user_id))
            entries = journal.begin_many(tenant, users, time.time())
            counts, cache_error = _delete_batch_steps(rt, tenant, users, entries, recorded, (texts, counted))
        for user_id in users:  # their adapters' drops, which wait for their chats, the turn let go (as `delete`)
            rt.adapters.forget(tenant, user_id)
        # as `delete`: the waits after the turn hold no other tenant's DELETE
        if recorded:
            # the chats other replicas stored before they saw the records (`_chats_stored_meanwhile`): every row of the
            # batch's users goes (none of theirs is kept: the tenant's keys are revoked), after one wait for them all
            seen_by_every_replica(rt, recorded[0])
            with rt.store.maintenance(), contextlib.ExitStack() as locks:
                for user_id in users:
                    locks.enter_context(rt.user_lock(tenant, user_id))
                late = rt.store.delete_users(tenant, users)
            counts = {k: counts.get(k, 0) + late.get(k, 0) for k in {*counts, *late}}
        deleted = set(users)
        forget_owed(rt, lambda t, u: t == tenant and u in deleted)  # as `delete`
        journal.done_many(entries)
    finally:
        for entry in entries:
            journal.release(entry)
    if cache_error:
        raise EmbeddingsNotForgotten(counts, cache_error)
    return counts


def _delete_batch_steps(rt: Runtime, tenant: str, users: list[str], entries: list[Unfinished],
                        recorded: list[float], read: tuple[list[str] | None, int]) -> tuple[dict[str, int], list[str]]:
    """`_delete_steps` for a batch of a tenant's users (`delete_batch`), each step for all of them at once, in the
    same order: jobs, the feedback log, the embedding caches' vectors (of `read`'s texts, which `delete_batch` read
    before the turn with their rows' count, read again, a batch at a time, when that count changed or they were too
    many to read before: None; while the rows still name the texts),
    the store's rows, claims, waiting refits, deletion records (with replicas; when their commit returned is appended
    to `recorded`, for `delete_batch`'s step after the turn), adapters, population files. Returns the summed counts
    and the embedding cache's error if any."""
    started_at = entries[0].started_at
    forget = Forget(keys=frozenset(f"{tenant}/{u}" for u in users))
    job_files = sum(hook(forget) for hook in list(rt.delete_hooks))  # their jobs stop first
    pending = rt.ingest.forget_users(tenant, users)
    texts, counted = read
    if texts is not None and rt.store.count_of(tenant, users) == counted:
        cache_error = _forget_texts(rt, texts)
    else:
        cache_error = _forget_batches(rt, rt.store.texts_in_batches(tenant, users))
    counts = rt.store.delete_users(tenant, users)
    for user_id in users:
        forget_claims(rt, tenant, user_id, started_at)
    forget_refits(rt, [(tenant, u) for u in users])
    if rt.deletion_sweep is not None:  # other replicas' files: their sweeps read these records
        rt.deletion_sweep.record_many(tenant, users, began_at=started_at)
        recorded_at = time.time()
        rt.delete_journal.recorded_many(entries, recorded_at)
        recorded.append(recorded_at)
    counts["preferences"] += pending  # acknowledged rows, wherever they were
    counts["adapter_files"] = 0
    for user_id in users:
        counts["adapter_files"] += rt.adapters.registry.delete(tenant, user_id)  # with what a killed swap left beside it
        rt.adapters.retire(tenant, user_id)  # dropped once their chats end, waited for after the turn (`delete_batch`)
    counts["job_files"] = job_files
    try:
        counts["population_files"] = rt.forget_population_users(forget)
    finally:
        for user_id in users:
            rt.note_deleted(tenant, user_id)  # a chat of theirs still generating stores nothing (chat.services.remember)
        rt.forget_pooled(tenant)
    return counts, cache_error


def _finish_steps(rt: Runtime, unfinished: Unfinished, recorded: list[float]) -> tuple[dict[str, int], list[str]]:
    """`delete`'s steps finishing the journal's `unfinished` DELETE: first, when it was stopped after its record
    (`Unfinished.recorded_at`, waited for by `delete` before the turn), the chats other replicas stored before they
    saw it (`_chats_stored_meanwhile`: not the user coming back); then what the user sent before it began, when they
    came back since (`forget_before`), else every step (`_delete_steps`, which appends to `recorded` as it says; and
    `forget_before` after all when its second look, just before its store's step, finds them back: `_CameBack`).
    Returns its counts and the embedding cache's error as they do."""
    tenant, user_id = unfinished.tenant, unfinished.user_id
    chats = 0
    if rt.deletion_sweep is not None and unfinished.recorded_at is not None:
        chats = _chats_stored_meanwhile(rt, tenant, user_id, unfinished.recorded_at)
    if came_back(rt, tenant, user_id, unfinished.started_at):
        counts, cache_error = forget_before(rt, tenant, user_id, unfinished.started_at, unfinished.rows_left_at,
                                            unfinished.rows_seen_at)
    else:
        try:
            counts, cache_error = _delete_steps(rt, tenant, user_id, unfinished.started_at, recorded, finishing=True)
        except _CameBack as back:  # since the look, through another replica: finished as for a user who came back
            noted = rt.delete_journal.unfinished(tenant, user_id) or unfinished  # `_rows_back`'s note
            counts, cache_error = forget_before(rt, tenant, user_id, unfinished.started_at, noted.rows_left_at,
                                                noted.rows_seen_at)
            counts["preferences"] += back.pending
            counts["job_files"] += back.job_files
    counts["interactions"] += chats
    return counts, cache_error


class _CameBack(Exception):
    """`_delete_steps` finishing a DELETE from the journal found, just before its store's step, that the user came back
    since `_finish_steps` looked (`came_back`: through another replica, which writes to the store straight, a stated
    preference or a chat, or moved their feedback in): what its steps before had removed, `pending` rows from the log
    (received before the DELETE) and `job_files`."""

    def __init__(self, pending: int, job_files: int):
        super().__init__("the user came back while their DELETE was finished")
        self.pending, self.job_files = pending, job_files


def _chats_stored_meanwhile(rt: Runtime, tenant: str, user_id: str, recorded_at: float) -> int:
    """With replicas, the user's chats other replicas stored while this DELETE ran, deleted once every replica's
    reads see its record (its commit returned at `recorded_at`, unix seconds): returns how many. Another replica
    checks the records before it stores a chat (`service.chat.services.remember`: one planned before the record
    stores nothing), but sees this one only up to `store_sync_ms` after its commit, and stored every chat of the user
    it served until then (in a trial, 16 of 17 served during a 12 s DELETE on moto's S3 stayed, and the user's profile
    answered 200 after the DELETE's 200). Those it stamped before `recorded_at` + `store_sync_ms` by a clock up to
    `store_sync_ms` ahead (the skew the clocks check allows, `pluralign.store.clocks`) go, and the users row when
    nothing else of the user is left; a chat planned after the record and stored by then (the user back before the
    DELETE's answer) goes with them. A chat stored after the DELETE's answer, which comes after this, stays. Were
    the wait to run from the time stamped in the record (before its commit, which an object
    store takes a while over), or the cut-off to have no room for clocks, a chat the other replica stored just before it
    saw the record would stay; and a DELETE stopped before this step (killed in its wait, or the store failing) is not
    finished from the journal as if the user had come back with those chats, which would stay, with their users row.
    Not covered: a chat committed in the instant this step counts, its replica not seeing the record yet.
    Called under the store's turn and the user's lock, once `seen_by_every_replica(recorded_at)` returned (waiting
    here, under the turn, would hold every other tenant's DELETE with it)."""
    sync = rt.settings.sync_seconds or 0.0
    # before=0: no feedback row is received before 1970; feedback moved in late is the sweeps' (service.deletions)
    return rt.store.delete_feedback_before(tenant, user_id, 0.0, chats_before=recorded_at + 2 * sync)


def seen_by_every_replica(rt: Runtime, recorded_at: float) -> None:
    """Block until every replica's reads see a deletion record whose commit returned at `recorded_at` (unix
    seconds): `store_sync_ms` after it, at most that long (a clock set back meanwhile). Called holding no store turn
    and no user's lock: the wait is the DELETE's own."""
    sync = rt.settings.sync_seconds or 0.0
    time.sleep(max(0.0, min(sync, recorded_at + sync - time.time())))


def _delete_steps(rt: Runtime, tenant: str, user_id: str, started_at: float, recorded: list[float],
                  finishing: bool = False) -> tuple[dict[str, int], list[str]]:
    """`delete`'s steps, under its turn and the user's lock, for a DELETE begun at `started_at` (unix
    seconds): the counts, and the embedding cache's error if any. `finishing`: a DELETE from the journal
    of a user who had not come back when it looked (`came_back`): their feedback acknowledged since, while
    it runs, is theirs, and stays in the log (only rows received before `started_at` go from it), and so do the rows
    another replica moves into the table meanwhile (were the store's step to delete every row of
    theirs in the table, a returning user's feedback another replica moved in after that look would be lost); just before
    the store's step it looks again and, the user back meanwhile (a stated preference or chat another replica wrote
    straight to the store, which that step would delete with their users row), raises `_CameBack` for `_finish_steps`
    to finish it as for a returning user. With replicas,
    the deletion record's step: when its commit returned is appended to `recorded`, whose chats step
    (`_chats_stored_meanwhile`) `delete` runs after its wait, outside the turn."""
    forget = Forget.key(f"{tenant}/{user_id}")
    job_files = sum(hook(forget) for hook in list(rt.delete_hooks))  # their jobs stop first
    pending = rt.ingest.forget_user(tenant, user_id, before=started_at if finishing else None)
    in_row = len(_row_only_changes(rt, tenant, user_id, stated_of(rt.store.get_user(tenant, user_id))))
    # the vectors of their texts go while the rows still name those texts: a DELETE stopped after the rows
    # went (its process killed) and finished or sent again would find none to forget
    cache_error = _forget_vectors(rt, tenant, user_id)
    step = time.time()  # the store's step's own note of the rows gone (`Store.rows_gone`) comes after this
    if finishing:  # of their rows in the table, those received before it began: what another replica moves in
        _rows_back(rt, tenant, user_id, started_at)  # meanwhile (the user back since `came_back` looked) stays theirs
        if came_back(rt, tenant, user_id, started_at):  # looked again: the store's step would delete their users row and
            raise _CameBack(pending, job_files)  # stated changes, a PATCH through another replica since
        counts = rt.store.delete_user(tenant, user_id, before=started_at)
    else:
        counts = rt.store.delete_user(tenant, user_id)
    # when their rows left the store: finished from the journal for a user who came back, what was made after it stays.
    # Noted by the store's step itself before its purge (`Store.rows_gone`, `DeleteJournal.rows_gone`); here when not
    # (its write failed: an earlier pass's note is not this step's)
    entry = Unfinished(tenant=tenant, user_id=user_id, started_at=started_at)
    noted = rt.delete_journal.unfinished(tenant, user_id)
    if noted is not None and entry.same_delete(noted) and noted.rows_left_at is not None and noted.rows_left_at >= step:
        entry = noted
    else:
        entry = rt.delete_journal.rows_left(entry, time.time())
    forget_claims(rt, tenant, user_id, started_at)
    forget_refits(rt, [(tenant, user_id)])  # their id goes from the waiting refits' file too
    # other replicas' files: their sweeps read this record (service.deletions), even if this replica stops
    # before the steps below; once per DELETE (finishing one from the journal, it may be there already)
    if rt.deletion_sweep is not None and (any(counts.values()) or not recorded_since(rt, tenant, user_id, started_at)):
        rt.deletion_sweep.record(tenant, user_id, began_at=started_at)
        recorded_at = time.time()
        rt.delete_journal.recorded(entry, recorded_at)
        recorded.append(recorded_at)
    counts["preferences"] += pending  # acknowledged rows, wherever they were
    counts["stated_changes"] += in_row  # changes only the row held (a format 1 row's history), gone with it
    counts["adapter_files"] = rt.adapters.registry.delete(tenant, user_id)  # with what a killed swap left beside it
    rt.adapters.retire(tenant, user_id)  # out of the pool now; its drop, which waits for their chats, after the turn (`delete`)
    counts["job_files"] = job_files
    try:
        # population snapshots and PAL/EM artifacts trained on them: their rows and fitted weights go
        # (ForgetIncomplete, a 500, when a file could not be rewritten: the journal entry stays, the next pass retries)
        counts["population_files"] = rt.forget_population_users(forget)
    finally:  # their rows left the store whatever happened to the population files
        rt.note_deleted(tenant, user_id)  # a chat of theirs still generating stores nothing (chat.services.remember)
        rt.forget_pooled(tenant)  # the tenant's pooled prior was estimated from them too: estimated again without them
    return counts, cache_error


def forget_claims(rt: Runtime, tenant: str, user_id: str, before: float) -> None:
    """The store's claims on the user's pref_ids (`pluralign.store.claims`, with replicas) of rows received
    before `before` (unix seconds) go with those rows: the ids are free for other content again. Claims of
    rows sent since stay, as the rows do."""
    if rt.store.claims is not None:
        rt.store.claims.forget_user(tenant, user_id, before)


def _forget_vectors(rt: Runtime, tenant: str, user_id: str, before: float | None = None) -> list[str]:
    """`OwedVectors.forget` (`service.users.vectors`) of the texts of the user's stored comparisons (received before `before`, when
    given). A cache it cannot look into or rewrite stops no other step of the DELETE: it is logged (with
    its path), noted for /health (`degraded`, as a storage problem) and returned in words, for the
    DELETE's 200 to warn of."""
    # their texts alone (not every row, vectors and all: ~3 s for 100,000), read in the store's turn a batch of rows at a
    # time: one read of them all held a user's whole history in memory at once
    return _forget_batches(rt, rt.store.texts_in_batches(tenant, [user_id], before))


def _forget_batches(rt: Runtime, batches: Iterable[list[str]]) -> list[str]:
    """`_forget_texts` of each of `batches` (`Store.texts_in_batches`) in turn, as they are read: the caches that could
    not be cleaned, each named once. Stopped between two (the process killed), the DELETE's journal entry stays and its
    next pass forgets them all again: the rows still name them (the store's step comes after this one)."""
    left: dict[str, None] = {}
    for texts in batches:
        left.update(dict.fromkeys(_forget_texts(rt, texts)))
    return list(left)


def _forget_texts(rt: Runtime, texts: list[str]) -> list[str]:
    """`_forget_vectors` of `texts` (a batch of a user's, or of a tenant's removal's: `delete_batch`)."""
    for hook in list(rt.vector_hooks):  # jobs that may have read them and embed after this: again once they end
        hook(texts)
    left = rt.owed_vectors.forget([text_key(t) for t in texts])  # what a busy cache kept is owed, not waited for
    for name, path, exc in left:
        log.error("the vectors of a deleted user's texts stay in %s (%s): %s", name, path, exc)
        problem = (storage_problem(exc) or ("read-only" if isinstance(exc, PermissionError) else "unreadable", None))[0]
        rt.store.problems.failed(StoreUnavailable("the embedding cache", str(path), "cleaned of a deleted user's texts",
                                                  problem, str(exc)), watched=False)
    return [name for name, _, _ in left]


def came_back(rt: Runtime, tenant: str, user_id: str, since: float) -> bool:
    """Whether the user sent anything (feedback, an import, a chat, a stated preference) at or after
    `since` (unix seconds), their feedback still pending in the log included: told by when each row
    reached the service (`StoredPreference.received`), on whichever replica, not by the time it carries
    (an import keeps its file's, which may be older than the DELETE). Their rows still in the feedback log
    are read there, not moved into the table first (a large import's backlog embedded inside the DELETE,
    under the store's turn and the user's lock), and before the table: a row moved meanwhile is seen in one."""
    if any(r.received() >= since for e in rt.ingest.log.pending_for(tenant, user_id) for r in e.rows):
        return True
    if rt.deletion_sweep is not None:  # with replicas: what another replica stored a moment ago
        rt.store.refresh("preferences", "interactions", "stated_changes")
    # the table, not the cached history: an import that found the rows held moved their `received_at` on
    # (`received_again`), which another replica's cached history does not show (its count of rows is the same)
    return (rt.store.received_since(tenant, user_id, since)
            or rt.store.interacted_since(tenant, user_id, since)
            or rt.store.stated_since(tenant, user_id, since))


def forget_before(rt: Runtime, tenant: str, user_id: str, before: float, rows_left_at: float | None = None,
                  rows_seen_at: float | None = None) -> tuple[dict[str, int], list[str]]:
    """Finish the DELETE of a user who came back after it began (`before`, unix seconds): what they
    sent before it goes (their jobs and job files, pending feedback, feedback rows and chats, their
    adapter when it reached this service before it (trained here or registered: `AdapterMeta.received`), their
    rows in population files), what they sent since stays.
    With replicas the deletion record carries `before` as when the DELETE began (its `deleted_at` is
    now, when it is recorded). Their users row is fitted again from what stays
    (its attributes only those that feedback carried); stated preferences they set before it stay in
    their row (its current state is theirs now); so do the vectors of the texts they sent before it in the
    embedding cache. Returns counts by kind as `delete` does, and the embedding cache's error if any; raises
    ForgetIncomplete as `Runtime.forget_population_users` does.
    What was made since it began from what the user had sent before it (an adapter job's snapshot, the job and the
    adapter trained on it, a population snapshot) goes too, when those rows were still stored here as this looks (the
    DELETE stopped before its store's step, or another replica's feedback log held them): a user who came back then
    had their old rows read with their new ones. Once those rows had gone, what was made after they went holds none
    and stays (what was made before them goes: kept, an adapter trained on the deleted rows would serve on):
    `rows_left_at` (unix seconds, the journal entry's note of the store's step), else the store's kept versions tell
    when, from `rows_seen_at` on when a pass saw them back in the store (`_left_at`, `Unfinished.rows_seen_at`)."""
    stored = _stored_before(rt, tenant, user_id, before)
    made = time.time() if stored else _left_at(rt, tenant, user_id, before, rows_left_at, rows_seen_at)
    # by hash: rows received before `until` (it began), things made before `made_until` (`Forget.made_at`)
    forget = Forget.of([new_deletion(tenant, user_id, made, rt.settings.replica_index, began_at=before)])
    counts = no_counts(rt)
    counts["job_files"] = sum(hook(forget) for hook in list(rt.delete_hooks))  # only jobs queued before it
    rt.chat_keys.forget_user(tenant, user_id)  # answers kept for their chats' Idempotency-Keys (those since too: kept in memory only)
    pending = rt.ingest.forget_user(tenant, user_id, before=before)
    cache_error = _forget_vectors(rt, tenant, user_id, before)  # while the rows still name the texts
    chats = rt.store.count_interactions(tenant, user_id)
    rows = rt.store.delete_feedback_before(tenant, user_id, before, chats_before=before)
    forget_claims(rt, tenant, user_id, before)
    chats -= rt.store.count_interactions(tenant, user_id)
    counts.update(preferences=pending + rows - chats, interactions=chats)
    if (rows or pending) and (record := rt.store.get_user(tenant, user_id)) is not None:
        # their users row was drawn from those rows too (weights, the residual, the attributes their feedback
        # carried, which a refit keeps): fitted again from what they sent since, with only its attributes
        # over the row read only (`change_user_row`): a stated change another replica took meanwhile stays, and this
        # write is not dropped as older than it (dropped, the old label would stay for good)
        change_user_row(rt, tenant, user_id, lambda read: msgspec.structs.replace(read, attributes={}) if read.attributes else None,
                        "a DELETE finished for a returning user", read=record)
        _refit(rt, tenant, user_id, None)
    try:
        meta = rt.adapters.registry.meta(tenant, user_id)
    except (OSError, ValueError):  # unreadable: not shown to be trained since, so it goes
        meta = None
    if meta is None or meta.received() < before or (meta.received_at is None and meta.created_at < made):
        # trained, or registered here, before it; or trained here since on a snapshot that may hold their old rows
        counts["adapter_files"] = rt.adapters.registry.delete(tenant, user_id)
        rt.adapters.retire(tenant, user_id)  # its drop waited for after the turn (`delete`)
        change_user_row(rt, tenant, user_id, lambda read: msgspec.structs.replace(read, adapter=None) if read.adapter else None,
                        "a DELETE finished for a returning user")  # not named as theirs
    try:
        counts["population_files"] = rt.forget_population_users(forget)  # rows made before it (`Forget.made_at`)
    finally:
        rt.forget_pooled(tenant)
        if rt.deletion_sweep is not None and not recorded_since(rt, tenant, user_id, before):
            # recorded now: a replica whose watermark passed `before` applies it. Their rows from before it had gone from
            # the store before this looked: what another replica made after they went holds none (their newer adapter
            # job) and stays, as it does here (`made_until`: those replicas neither purge it nor refuse its
            # adapter). Not from when it began: what was made while it ran up to its store's step read them
            rt.deletion_sweep.record(tenant, user_id, began_at=before, made_until=None if stored else made)
    return counts, cache_error


def _stored_before(rt: Runtime, tenant: str, user_id: str, before: float) -> bool:
    """Whether the user's feedback received before `before` (unix seconds) is still stored here: pending in the
    feedback log or in the store's preferences (`StoredPreference.received`). Called in the store's maintenance turn:
    the table is asked for one count (`Store.holds_received_before`); reading every row of the user
    there would take ~3 s for 100,000 rows while every tenant's DELETE waited (benchmarks/stored_before.py)."""
    if any(r.received() < before for e in rt.ingest.log.pending_for(tenant, user_id) for r in e.rows):
        return True
    return rt.store.holds_received_before(tenant, user_id, before)


def _rows_back(rt: Runtime, tenant: str, user_id: str, began: float) -> None:
    """Before the store's step of a DELETE finished from the journal (begun at `began`, unix seconds): when rows the
    user sent before it are in the store, the entry notes when this saw them (`DeleteJournal.rows_back`,
    `Unfinished.rows_seen_at`), clearing an earlier pass's note that its store's step had deleted them
    (`Unfinished.rows_left_at`): another replica, not having seen the DELETE, may have moved them in from its feedback
    log since, and what it made from the store then read them. Without that note, stopped after this step and before its own note, the
    DELETE finished later for a user who came back would take the first note for when they left, or,
    with no note (the first pass killed inside its store's step), the store's kept versions from before the rows came
    back, whose bisection could find the first removal: either way what was made while they were
    back would stay. Not covered: a row moved in between this look and the store's step (its own read of the newest
    version)."""
    entry = rt.delete_journal.unfinished(tenant, user_id)
    if entry is None or entry.started_at != began:
        return
    rt.store.refresh("preferences")  # with replicas: what another replica moved in a moment ago
    seen = time.time()
    if rt.store.holds_received_before(tenant, user_id, began):
        rt.delete_journal.rows_back(entry, seen)


def _left_at(rt: Runtime, tenant: str, user_id: str, before: float, noted: float | None = None,
             seen: float | None = None) -> float:
    """When the user's rows received before `before` (unix seconds: a DELETE's beginning) left the store, once
    `_stored_before` found none: `noted` (the journal's note of the DELETE's store's step, `Unfinished.rows_left_at`),
    else the time of the first kept version of the preferences table without them (`Store.received_before_left_at`,
    later than that step when a purge removed the versions between; only versions from `seen` on, when a pass saw
    them back in the store before deleting them again: `Unfinished.rows_seen_at`), never before `before` or `seen`;
    now when neither tells. What was made before it may hold those
    rows: the DELETE's steps before its store's step (stopping the user's jobs, the embedding caches) take a while,
    and another replica (or a population snapshot here) read them meanwhile. With `before`
    standing in, the adapter job another replica queued of those rows in that while would stay, and be promoted."""
    left = noted if noted is not None else rt.store.received_before_left_at(tenant, user_id, before, since=seen)
    return time.time() if left is None else max(before, seen or 0.0, left)


def no_counts(rt: Runtime) -> dict[str, int]:
    """`delete`'s counts by kind, each 0."""
    return dict.fromkeys((*rt.store.tables, "adapter_files", "job_files", "population_files"), 0)


def recorded_since(rt: Runtime, tenant: str, user_id: str, since: float) -> bool:
    """Whether the store's deletion records hold a DELETE of the user at or after `since` (unix seconds)."""
    return rt.store.deleted_after(user_hash(tenant, user_id), since)


class UnfinishedDeletes(Periodic):
    """Finishes the DELETEs the journal holds that no thread here runs (`service.users.journal`): at
    start (a DELETE the last process was killed in) and every `interval_s` seconds (one whose population
    file could not be rewritten). Each runs as a DELETE does, on the DELETEs' own threads, tenants in
    turn (`Runtime.deletes`); one that fails stays in the journal for the next pass. Those of a tenant whose removal
    runs here (`Runtime.removal_runs`) are left to it: its next batch deletes their users, entries and all."""

    def __init__(self, rt: Runtime, interval_s: float):
        super().__init__(interval_s, "unfinished-deletes", "finishing unfinished DELETEs")
        self.rt = rt
        self._queued: set[tuple[str, str]] = set()  # submitted and not run yet: not submitted twice
        self._lock = threading.Lock()

    def run_once(self) -> int:
        """Submit the unfinished DELETEs not submitted yet, after the purges of vectors a busy embedding cache
        kept (`OwedVectors.retry`), the owed retractions' file read or written again when it could not be
        (`OwedRetractions.retry`), and the dropped refits' file the start could not read read again
        (`refit_dropped_again`); returns how many DELETEs were submitted."""
        self.rt.owed_vectors.retry()
        self.rt.owed_retractions.retry()
        refit_dropped_again(self.rt)
        submitted = 0
        removed: dict[str, bool] = {}  # tenant -> whether its removal runs here
        for entry in self.rt.delete_journal.pending():
            key = (entry.tenant, entry.user_id)
            runs = self.rt.removal_runs
            if runs is not None and removed.setdefault(entry.tenant, runs(entry.tenant)):
                # the removal's next batch takes it up with the others (a killed batch left up to 256): one by one
                # they would fill the tenant's places in the DELETEs' queue, and the removal wait
                continue
            with self._lock:
                if key in self._queued:
                    continue
                self._queued.add(key)
            try:
                future = self.rt.deletes.submit(entry.tenant, partial(delete, self.rt, entry.tenant, entry.user_id, entry))
            except (Busy, Stopping) as exc:  # the DELETEs' queue is full (the next pass submits it), or the service stops
                with self._lock:
                    self._queued.discard(key)
                if isinstance(exc, Stopping):
                    break
                continue
            future.add_done_callback(partial(self._finished, key))
            submitted += 1
        return submitted

    def _finished(self, key: tuple[str, str], future: Future) -> None:
        with self._lock:
            self._queued.discard(key)
        if future.cancelled():
            return
        if isinstance(exc := future.exception(), Stopping):  # refused as the service stops: the next start finishes it
            return
        if exc is not None:
            log.error("an unfinished DELETE of a user of tenant %s is tried again at the next pass: %s", key[0], exc)
        elif any(future.result().values()):
            log.warning("finished a DELETE of a user of tenant %s that a stopped process had left unfinished", key[0])
            self.rt.metrics.inc("pluralign_unfinished_deletes_finished_total",
                                help=DECLARED_COUNTERS["pluralign_unfinished_deletes_finished_total"][0])


class NextComparison(msgspec.Struct, kw_only=True):
    user: str
    prompt: str
    answers: list[str]  # the two answers to show; send the pick as `comparison` feedback
    bits: float  # expected information of the user's answer (about their model, which known user they are like, or their other answers)
    worth_asking: bool  # false once no pair's answer carries `compare_min_bits` bits about which answer of its prompt is best
    # "supplied" (the request's `pool`), "calibration" (the tenant's stored calibration pool, PUT /v1/calibration-pool)
    # or "stored" (the tenant's stored comparisons, any user's)
    pool: str
    pairs: int  # candidate pairs considered
    criterion: str = "coefficients"  # what `bits` is about: "coefficients" (BALD), "population" or "predictive" (EPIG)
    population_users: int = 0  # with "population": the tenant's fitted users the user was compared against


POPULATION_USERS = 128  # at most this many of the tenant's fitted users in a `population` choice (P x U x D^2 work)
POPULATION_HISTORY = 1000  # the user's newest comparisons that weigh the known users (each is scored by every one of them)
STORED_PAIRS = 200  # at most this many of the tenant's stored pairs are the candidates of one `{}` request (each is scored)
FLUSH_INLINE_ROWS = STORED_PAIRS  # a `{}` request with nothing stored moves at most this many pending rows itself, else 503
FLUSH_RETRY_AFTER = 5  # seconds: `Retry-After` of that 503


def stored_seed(tenant: str, user_id: str) -> int:
    """The seed of the user's draw of stored pairs (`Store.answers_sample`): the same in every
    process, so asking again without answering gives the same pair, and another user's draw differs."""
    return int.from_bytes(hashlib.blake2b(f"{tenant}\0{user_id}".encode(), digest_size=8).digest(), "big")


def pair_shown_first(seed: int, prompt: str, x: str, y: str) -> str:
    """Which of a stored question's two answers is shown first: a coin drawn from the user's `seed`, the
    prompt (as `answer_key` reads it) and the pair's texts, never from which was chosen, so the order reveals no
    stored choice (and no position bias follows it); the same on every call while the question is the same,
    whoever stored it. The prompt is read since the questions of a questionnaire answered "Yes." or "No." are
    each asked: from the texts alone every one of them would show the same answer first to a user."""
    low, high = sorted((x, y))
    coin = hashlib.blake2b(f"{seed}\0{answer_key(prompt)}\0{low}\0{high}".encode(), digest_size=1).digest()[0] & 1
    return high if coin else low


def population_particles(rt: Runtime, tenant: str, user_id: str, rewards) -> Particles:
    """Up to `POPULATION_USERS` of the tenant's other users whose stored user model belongs to the
    current population model (`UserModel.fits`) and was fitted on at least one answer (comparisons or ties: a user
    of ties alone is one of the indifferent ones a new user's tie weighs towards), each their own group; there may
    be none. Only their
    fitted coefficients are read, never their texts (the pair asked comes from the pool)."""
    from pluralign.user.active import Particles

    model = rewards.user_model
    states = []
    for record in rt.store.fitted_users(tenant, POPULATION_USERS + 1, pal_version=rewards.version, answered=True):  # stale rows never fill the bound, nor stated-only ones
        state = stored_state(record)
        if record.user_id != user_id and state is not None and state.answers > 0 and model.fits(state, stated_of(record).signs()):
            states.append(state)
    states = states[:POPULATION_USERS]
    dim = len(model.names)
    return Particles(np.stack([s.mean_array() for s in states]) if states else np.zeros((0, dim)),
                     np.stack([s.cov_array() for s in states]) if states else np.zeros((0, dim, dim)), np.arange(len(states)))


def distinct_answers(answers: list[str]) -> list[str]:
    """`answers` without a later one a person cannot tell from an earlier one (same `look_key`), in order."""
    first: dict[str, str] = {}
    for answer in answers:
        first.setdefault(look_key(answer), answer)
    return list(first.values())


def _supplied_pairs(rt: Runtime, tenant: str, pool: list[tuple[str, list[str]]], calibration=None):
    """A supplied pool laid out for `next_comparison`: (prompts, answers, prompt_vec (M, d),
    answer_vec (M, d), first, second, items), one row per answer, each pair of an item's answers as
    indices (first[k], second[k]) into those rows, and items (M,) the pool item of each row.

    `calibration`: the tenant's stored calibration pool whose items `pool` is (a `CalibrationPool`): its texts' vectors
    come from `Runtime.calibration_vectors` (held for its version, else read from beside it: no
    replica embeds a stored pool the PUT embedded). A supplied pool's come from the tenant's pool vectors (`Runtime.pool_vectors`, `ScopedVectors`): a questionnaire
    sends its pool once per question, and embedding each text again at every call would take 1.3-3.0 s for 32
    items of MiniLM on two cores. The on-disk embedding cache is not used here: it is keyed by text alone, shared by
    every tenant and the jobs, so a pool's timing would tell a tenant whether another embedded a text, and it outlives
    the process. Kept by (tenant, encoder, exact text), in memory, bounded (`POOL_VECTOR_BYTES`), they hold no user
    id, yet a pool may quote a user's texts: a DELETE of any user of the tenant, and the tenant's removal, drop them
    all (`Runtime.forget_pooled`); another tenant's same texts are embedded for it."""
    from pluralign.embed.remote import RemoteTextsRefused
    from pluralign.user.active import all_pairs

    asked = pool
    # each answer of an item once (look_key: NFC and NFD, invisible characters, spaces, ligatures): two answers a
    # person cannot tell apart are never a pair, nor do they make one pair count twice
    pool = [(prompt, distinct_answers(answers)) for prompt, answers in pool]
    prompts = [prompt for prompt, answers in pool for _ in answers]
    answers = [a for _, answers in pool for a in answers]
    texts = [*(p for p, _ in pool), *answers]
    try:
        if calibration is not None:
            vectors = rt.calibration_vectors.rows(rt.encoder, rt.settings.calibration_pools_path, tenant, calibration, texts)
        else:
            vectors = rt.pool_vectors.encode(rt.encoder, tenant, texts)
    except RemoteTextsRefused as exc:  # a text of the pool past the embeddings server's length: the 400 naming it
        raise refused_text(rt.encoder, pool_fields(asked), exc) from None
    prompt_vec = np.repeat(vectors[: len(pool)], [len(a) for _, a in pool], axis=0)  # (M, d)
    answer_vec = vectors[len(pool) :]
    first, second, start = [], [], 0
    for _, item in pool:
        a, b = all_pairs(len(item))
        first += (a + start).tolist()
        second += (b + start).tolist()
        start += len(item)
    items = np.repeat(np.arange(len(pool)), [len(a) for _, a in pool])  # (M,)
    return prompts, answers, prompt_vec, answer_vec, first, second, items


def pool_fields(pool: list[tuple[str, list[str]]]) -> dict[str, str]:
    """{the request's field: its text} of a supplied pool, in the request's order: `pool[i].prompt`, then each
    `pool[i].answers[j]`."""
    return {field: text for i, (prompt, answers) in enumerate(pool)
            for field, text in [(f"pool[{i}].prompt", prompt), *((f"pool[{i}].answers[{j}]", a) for j, a in enumerate(answers))]}


def _askable(prompts: list[str], answers: list[str], first: list[int], second: list[int],
             new_pair: Callable[[str, str, str], bool]) -> list[tuple[int, int]]:
    """The candidate pairs (first[k], second[k]) that may be asked (`new_pair(prompt, x, y)`), each question once:
    a pool item sent twice is one."""
    seen: set[tuple[str, frozenset[str]]] = set()
    out = []
    for a, b in zip(first, second, strict=True):
        key = look_question_key(prompts[a], answers[a], answers[b])
        if key not in seen and new_pair(prompts[a], answers[a], answers[b]):
            seen.add(key)
            out.append((a, b))
    return out


def _nothing_to_ask(prompts: list[str], answers: list[str], first: list[int], second: list[int], source: str) -> str:
    """Why next-comparison has no pair to ask (`source` as `NextComparison.pool`): a supplied pool (or the tenant's
    calibration pool) whose every question the user answered already (not
    told, as one without two different answers, to send a calibration `pool`), or no two answers
    a person can tell apart (a supplied pool's answers that read the same: not told to send 2-8
    answers a prompt, which it has)."""
    calibration = source == "calibration"
    if source != "stored" and _askable(prompts, answers, first, second, lambda p, x, y: not is_blank(p) and look_key(x) != look_key(y)):
        return (("the user answered every question of the tenant's calibration pool already (each prompt with its two "
                 "answers): store other questions (PUT /v1/calibration-pool), send a `pool`, or stop asking") if calibration else
                ("the user answered every question of this `pool` already (each prompt with its two answers): "
                 "send other questions, or stop asking"))
    if source != "stored":
        where = "the tenant's calibration pool (PUT /v1/calibration-pool)" if calibration else "prompts"
        return ("each prompt's answers read the same: answers that differ only in Unicode normalization (NFC), "
                "invisible characters, spacing or ligatures are one answer (docs/api.md, \"The same answer\"); "
                f"send {where} with at least two answers a person can tell apart")
    return "no pair of different answers left to ask about: send a calibration `pool` of prompts with 2-8 answers each"


def _population_bits(rt: Runtime, tenant: str, user_id: str, model, particles: Particles, diffs: np.ndarray) -> np.ndarray:
    """(P,) bits each candidate pair (`diffs`, (P, D): first answer's features minus second's) carries
    about which of the known users (`particles`, each their own group) this user is like, weighted by
    how well each predicts the user's newest `POPULATION_HISTORY` comparisons and ties."""
    from pluralign.user.active import group_information, particle_posterior
    from pluralign.user.features import response_features

    history = rt.store.history(tenant, user_id)

    def predicted(parts) -> np.ndarray:  # (N, U): each known user's predictive that the first answer wins
        prompt, chosen, rejected, chosen_texts, rejected_texts = (part[-POPULATION_HISTORY:] for part in parts)
        return particles.predictive(model.design(prompt, chosen, rejected, response_features(chosen_texts), response_features(rejected_texts)))

    likeness = particle_posterior(predicted(history.comparison_set()), predicted(history.tie_set()))  # a tie: like the indifferent ones
    return group_information(particles.predictive(diffs), likeness, particles.groups)


def next_comparison(rt: Runtime, tenant: str, user_id: str, pool: list[tuple[str, list[str]]] | None,
                    target: str = "coefficients", source: str = "supplied", calibration=None) -> NextComparison:
    """The most informative pair of answers to one prompt for this user (`pluralign.user.active`),
    from a pool ((prompt, answers) items; `source` "supplied", the request's, or "calibration", the tenant's stored
    one, `calibration` the `CalibrationPool` read: what the answer's `pool` says) or, without one, the two answers of each of a
    sample of the tenant's stored comparisons, leaving out pairs the user already compared.

    `target` "coefficients": information about the user's coefficients (BALD on their posterior).
    "population": information about which of the tenant's fitted users (`population_particles`)
    the user is like, weighted by how well each predicts the user's comparisons so far
    (`group_information` with each known user their own group, `particle_posterior`, over the user's
    newest `POPULATION_HISTORY` comparisons and as many ties: a tie weighs towards the known users
    who are indifferent between its two answers). It falls back to "coefficients" (the response's
    `criterion` says which) with fewer than two such users, or when no pair carries
    `compare_min_bits` about them: known users who predict alike cannot tell the user apart, and
    the user's own model may still be worth asking about.
    "predictive": the information the answer carries about the user's answers to the pool's pairs
    (all of them, asked or not: the comparisons this user's model is for), EPIG
    (`predictive_information`, Bickford Smith et al. 2023). BALD's most informative pair is the one
    farthest apart in the model's features, however unlike the rest of the pool it is; EPIG asks about
    pairs that tell most about the others.
    `worth_asking`, whatever the target: whether some askable pair's answer carries `compare_min_bits` about
    which answer of its pool item (a supplied prompt's answers; a stored pair) is best for the user
    (`best_information` on their own posterior), the gate chat's `compare` reads over its returned choices, so a
    user chat no longer asks is not asked here either (not BALD's best pair: variance of
    coefficients that no longer change which answer is best would keep a well-known user being asked).
    Raises a 400 naming `pool` when there is nothing to choose from."""
    from pluralign.user.active import best_information, pair_information, predictive_information
    from service.errors import bad_request

    weights = user_weights(rt, tenant, user_id)
    rewards = weights.rewards or rt.rewards
    model = rewards.user_model
    if pool is not None:
        prompts, answers, prompt_vec, answer_vec, first, second, items = _supplied_pairs(rt, tenant, pool, calibration)
    done = {look_question_key(r["prompt"], r["chosen"], r["rejected"]) for r in rt.store.history(tenant, user_id).rows}
    # two answers a person can tell apart (an answer stored before blank ones were refused is never shown), to a
    # prompt one can read, not asked before in either spelling (NFC or NFD): the same two answers to another prompt
    # are another question ("Yes." or "No." to each of a questionnaire's; else the first asked
    # would be taken for all of them)
    new_pair = lambda p, x, y: (not is_blank(p) and not is_blank(x) and not is_blank(y)  # noqa: E731
                                and look_key(x) != look_key(y) and look_question_key(p, x, y) not in done)
    stored = lambda: rt.store.answers_sample(  # noqa: E731
        tenant, STORED_PAIRS, seed=stored_seed(tenant, user_id), keep=new_pair, leave_out_user=user_id)
    def stored_pairs() -> tuple[list[int], list[int], np.ndarray]:
        """Each stored pair (laid out chosen, rejected) in the order it is shown (`pair_shown_first`), and the item
        (M,) of each answer: each pair is an item of its own."""
        seed, first, second = stored_seed(tenant, user_id), [], []
        for k in range(0, len(answers), 2):
            flip = pair_shown_first(seed, prompts[k], answers[k], answers[k + 1]) != answers[k]
            first.append(k + flip)
            second.append(k + 1 - flip)
        return first, second, np.arange(len(answers)) // 2

    if pool is None:
        prompts, answers, prompt_vec, answer_vec = stored()
        first, second, items = stored_pairs()
        source = "stored"

    askable = lambda: _askable(prompts, answers, first, second, new_pair)  # noqa: E731
    keep = askable()
    if not keep and pool is None:
        # nothing stored to ask about yet: the tenant's acknowledged feedback may still be in the log.
        # A few rows are moved here, without waiting for the ingest worker's batch in progress (any
        # tenant's: up to INGEST_BATCH_ROWS of another tenant's import to embed; a row of this tenant's
        # in it is embedded here too, and whichever move commits first stores it); a large backlog (an
        # import) is left to the worker, not embedded inside one request.
        from pluralign.store.ingest import Backlogged

        try:
            rt.ingest.flush_some(tenant, FLUSH_INLINE_ROWS)
        except Backlogged:
            from litestar.exceptions import ServiceUnavailableException

            raise ServiceUnavailableException(
                detail="this tenant's comparisons are still being stored (the feedback log is being moved into the table): "
                       f"retry after {FLUSH_RETRY_AFTER} seconds, or send a calibration `pool`",
                headers={"Retry-After": str(FLUSH_RETRY_AFTER)}) from None
        prompts, answers, prompt_vec, answer_vec = stored()
        first, second, items = stored_pairs()
        keep = askable()
    if not keep:
        raise bad_request("pool", _nothing_to_ask(prompts, answers, first, second, source))
    x = model.candidates(prompt_vec, answer_vec, answers).x  # (M, D)
    a, b = np.asarray([k[0] for k in keep]), np.asarray([k[1] for k in keep])
    particles = population_particles(rt, tenant, user_id, rewards) if target == "population" else None
    bits, criterion = None, "coefficients"
    if particles is not None and len(particles) >= 2:
        bits = _population_bits(rt, tenant, user_id, model, particles, x[a] - x[b])
        if bits.max() >= rt.settings.compare_min_bits:
            criterion = "population"
        else:  # the known users cannot tell this user apart: ask about the user's own model
            bits = None
    pooled = pooled_prior_of(rt, tenant, rewards) if weights.state is None else None  # a fitted user's posterior holds it
    mean, cov = model.posterior(weights.state, weights.stated.signs(), pooled)
    if bits is None:
        bits = pair_information(x[a] - x[b], mean, cov)
        if target == "predictive":
            targets = x[np.asarray(first)] - x[np.asarray(second)]  # (T, D) every pair of the pool
            bits, criterion = predictive_information(x[a] - x[b], targets, mean, cov), "predictive"
    # whether to ask at all, whatever chose the pair: chat's gate (`most_informative_pair`'s `gate="best"`), each pool
    # item (a prompt's answers; a stored pair) taken as a chat's returned choices
    # or, once their newest answers contradict their posterior (`UserState.surprised`), they changed their mind: ask again
    surprised = weights.state is not None and weights.state.surprised
    worth = surprised or best_information(x, a, b, mean, cov, sets=items).max() >= rt.settings.compare_min_bits
    best = int(np.argmax(bits))
    i, j = int(a[best]), int(b[best])
    return NextComparison(
        user=user_id, prompt=prompts[i], answers=[answers[i], answers[j]], bits=round(float(bits[best]), 4),
        worth_asking=bool(worth), pool=source, pairs=len(keep),
        criterion=criterion, population_users=len(particles) if criterion == "population" else 0,
    )
