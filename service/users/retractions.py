"""A user takes back one stored preference (a misclicked pick): DELETE /v1/users/{user_id}/preferences/{pref_id}.

What goes, in this order, each step safe to do again, so a retraction stopped part way (its process killed) is
either done or not, and sent again finishes it:

1. the feedback log's files: every segment holding a record of the user is rewritten with only what is still pending
   (`FeedbackLog.drop_moved`). Their rows were moved into the table first (`flush_for_read`); a moved record left in
   its file is replayed at the next start, and one the table no longer holds whole is moved again, so the row would
   come back;
2. the vectors of the row's texts that none of the user's other rows holds, from the embedding caches the jobs fill
   (`service.users.services._forget_texts`, as a DELETE forgets a user's);
3. the user's adapter jobs queued since the row arrived, whose snapshots may hold it, stopped with their files and
   snapshots (`Runtime.retract_hooks`: the admin area's `forget_adapter_jobs_since`); the user's adapter when it may
   have been trained on the row (made or received here after the row was): no longer served (their chats generate
   with the fallback) until their next adapter job promotes a new one (`first_arrival`: when the row arrived);
4. the attributes of the users row cleared (a refit keeps the row's own, over those its rows carry: cleared after the
   row went, a stop or a failed write there kept the row's label for good); where the row cannot be deleted next, a
   refit puts back what its rows carry (a kill between the two leaves them empty until the user's next refit, or the
   retraction sent again);
5. the row itself, every copy, from the preferences table, which is purged so no file of the store keeps it
   (`Store.delete_preference`). This is the step that makes the retraction done: sent again, it is a 404;
6. the user's model: fitted again on what stays, their attributes drawn again from the rows that stay (a stop before
   this is mended by the next read, which finds the count of rows changed and refits: `user_weights`); the tenant's
   cached pooled prior and prototype descriptions, which may have used the user's old fit or quoted the row, go.

Not done here: population snapshots and PAL/EM artifacts trained on the row keep it until the next population job
(docs/api.md, "Taking back one answer"). With replicas, a row this replica finds neither in the table nor in its own
log may still wait in the feedback log of the replica that received it: the retraction is then recorded in the store,
pending (`Store.record_retraction`), and answered 202 (`RetractionPending`; past the bound on such records of the
user or tenant, `pluralign.store.retractions.TooManyPending`, a 429 and nothing recorded); that replica's mover drops the row before
it is stored (`Ingestor._not_retracted`), as its replay after a crash does, and one that stored it between this
replica's look and its record takes it back itself once moved (`retract_arrived`; owed on disk until done, tried
again until it is, and at the next start after a crash: `service.owed_retractions`; a 404 here
would let the row be stored and learned from). A moved record of the row in another replica's log file (the replica that
received it, when the retraction went through this one) is not moved in again: with replicas, the retraction is recorded
in the store first (`Store.record_retraction`, `pluralign.store.retractions`), and that replica's replay drops it
(`Ingestor._drop_retracted`), its sweep rewrites its log's files without it (`DeletionSweep.drop_retracted`); without
the record, that replica's next start would move the row in again."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from functools import partial

import msgspec

from pluralign.data.record import stand_in_received
from pluralign.store import StoredPreference
from pluralign.store.failures import StoreUnavailable
from service.runtime import Runtime
from service.scheduler import Stopping
from service.users.services import _forget_texts, _refit, change_user_row, flush_for_read

log = logging.getLogger("pluralign.service")


class Retracted(msgspec.Struct):
    user: str
    retracted: str  # the pref_id taken back
    # the user's adapter, which may have been trained on it, is no longer served (until their next adapter job)
    adapter_dropped: bool = False
    warnings: list[str] = []  # what could not be cleaned (an embedding cache): [] when all was


class RetractionPending(msgspec.Struct):
    """The 202's answer, with replicas: the row was in no table yet (it may wait in another replica's feedback log);
    the retraction is recorded and the row dropped when it comes. Nothing else was done here."""

    user: str
    retracted: str  # the pref_id taken back
    pending: bool = True


def texts_only_in(row: StoredPreference, theirs: Iterable[str]) -> list[str]:
    """The texts of `row` (prompt, chosen, rejected) that no other of the user's rows holds: `theirs` is every text of
    every row of theirs, `row`'s included, read as it comes (`Store.texts_in_batches`): only `row`'s are counted."""
    own = [t for t in (row.prompt, row.chosen, row.rejected) if t]
    held = Counter(t for t in theirs if t in own)
    held.subtract(own)
    return [t for t in dict.fromkeys(own) if held[t] <= 0]


def first_arrival(row: StoredPreference) -> float:
    """When `row` may first have reached the service (unix seconds), for what may have been trained on it: the earlier
    of its `received_at` and its `created_at` (`stand_in_received`: 0.0 for one that means no time or is still to come).
    `received_at` alone is not it: an import of the same row again (a file sent again, `already_stored`) moves it to now
    (`Store.received_again`), and an adapter trained between the two would pass as older than the row (kept,
    served, and its queued job promoted). A row's `created_at` is its receipt for feedback, and
    its file's time, from before any import of it, for an imported row."""
    return min(row.received(), stand_in_received(row.created_at))


def retract(rt: Runtime, tenant: str, user_id: str, pref_id: str, arrived: bool = False) -> Retracted | RetractionPending | None:
    """Take back the user's stored preference `pref_id` (module docstring); None (a 404) when the user holds no row
    under that id, whoever else may (another user's or tenant's id, one retracted already). With replicas, a row in
    no table and not in this replica's log (it may wait in another replica's: or never come) is recorded pending, a
    RetractionPending (the 202; recorded again when sent again). Runs on the DELETEs' threads (`Runtime.deletes`): it takes the store's maintenance
    turn, then the user's lock, as a DELETE does. Raises the 503 of `flush_for_read` (an import's backlog of the
    user's rows being stored), StoreUnavailable, and TimeoutError (the store's lease, with replicas). `arrived`: a row this replica stored that a retraction
    through another replica may have taken back meanwhile (`retract_arrived`): taken back only when a record says so
    (`Store.retracted`); None when none does or the row is stored no more, and nothing recorded."""
    flush_for_read(rt, tenant, user_id)  # their rows waiting in the log reach the table: the id is looked for there
    with rt.store.maintenance(), rt.user_lock(tenant, user_id):
        if rt.deletion_sweep is not None:  # with replicas: a row another replica moved in a moment ago
            rt.store.refresh("preferences", "users")
        row = rt.store.stored_row(tenant, user_id, pref_id)
        if row is None and rt.deletion_sweep is not None and not arrived:
            row = _recorded_pending(rt, tenant, user_id, pref_id)
            if isinstance(row, RetractionPending) or row is None:
                return row
        if row is None or (arrived and not rt.store.retracted([row])):
            return None
        if rt.deletion_sweep is not None:  # with replicas: the others' logs may keep a moved record of it (module docstring)
            rt.store.record_retraction(tenant, user_id, pref_id, time.time(), rt.settings.replica_index)
        rt.ingest.log.drop_moved(tenant, user_id)
        only = texts_only_in(row, (t for batch in rt.store.texts_in_batches(tenant, [user_id]) for t in batch))
        warnings = [f"the vectors of its texts stay in {name}, which could not be looked into or rewritten (the operator's "
                    "log says why; /health shows it)" for name in _forget_texts(rt, only)]
        since = first_arrival(row)
        for hook in list(rt.retract_hooks):  # their adapter jobs that may train on it stop first
            hook(tenant, user_id, since)
        dropped = _drop_adapter(rt, tenant, user_id, since)
        # the attributes, drawn again from the rows that stay by the refit below, or by the next read's when it cannot be
        # stored: cleared before the row goes (a refit keeps the users row's own; cleared after it,
        # a failure to write then would keep the misclick's label for good)
        change_user_row(rt, tenant, user_id, lambda read: msgspec.structs.replace(read, attributes={}) if read.attributes else None,
                        "a retraction")
        try:
            rt.store.delete_preference(tenant, user_id, pref_id)  # done from here on: a failure below is a warning, not a 5xx
        except BaseException:  # not taken back: the labels of their rows back on the users row, where it can be written
            try:
                _refit(rt, tenant, user_id, None)
            except Exception as exc:  # the delete's error is the one answered (the labels: at the user's next refit)
                log.error("a retraction of a user of tenant %s that failed could not put their attributes back: %s", tenant, exc)
            raise
        try:
            _refit(rt, tenant, user_id, None, unsaved_ok=True)
        except StoreUnavailable as exc:  # the next read finds the count of rows changed and fits again
            log.error("a retraction of a user of tenant %s could not store their fit without the row: %s", tenant, exc)
            warnings.append(f"their model could not be stored without it now ({exc.public}): it is fitted again at their next read")
        finally:
            rt.forget_pooled(tenant)
    if dropped:
        rt.adapters.forget(tenant, user_id)  # waits for their chats generating with it: outside the turn, as a DELETE
    return Retracted(user=user_id, retracted=pref_id, adapter_dropped=dropped, warnings=warnings)


def _recorded_pending(rt: Runtime, tenant: str, user_id: str, pref_id: str) -> StoredPreference | RetractionPending | None:
    """With replicas, a row the table does not hold: None (a 404) when taken back already (a record not pending); else
    the retraction recorded pending, at each request (sent again, a record of its own: a row of the id sent again since
    the one before, as a keyed feedback's, is received after that one's time and only this one drops it) and the table
    read again, for a row another replica stored meanwhile (returned: taken back as any); the 202's answer when it
    still holds none (answered once the replicas' skew passed: `service.users.controllers._retract`)."""
    if rt.store.retraction_recorded(tenant, user_id, pref_id) == "done":
        return None
    rt.store.record_retraction(tenant, user_id, pref_id, time.time(), rt.settings.replica_index, pending=True)
    rt.store.refresh("preferences", "users")
    row = rt.store.stored_row(tenant, user_id, pref_id)
    if row is not None:
        return row
    log.info("a retraction of a row of a user of tenant %s not stored yet was recorded, to drop the row when it comes", tenant)
    return RetractionPending(user=user_id, retracted=pref_id)


def retract_arrived(rt: Runtime, rows: list[StoredPreference]) -> int:
    """With replicas, rows just stored by this replica's mover that a retraction through another replica recorded
    (pending) meanwhile, between the mover's look (`Ingestor._not_retracted`) and its commit: each taken back now, as
    its user asked (`_retract_soon`: tried again until done). The ingest worker named them on disk before the log let go
    of them (`Runtime.owed_retractions`, `service.owed_retractions`), so a crash before they are taken back leaves them
    to the next start (`retract_owed`). The batch's owed rows are looked at again together first (`_look_again`): a
    batch owed whole (the worker's look failed) is mostly rows no one took back. Returns how many are still owed."""
    if rt.deletion_sweep is None or not rows:
        return 0
    owed = set(rt.owed_retractions.among(rows))
    return _look_again(rt, [r for r in rows if (r.tenant, r.user_id, r.pref_id) in owed], 0) if owed else 0


def retract_owed(rt: Runtime) -> int:
    """At the start: the retractions the last run owed and had not done (`Runtime.owed_retractions`: a crash after the
    row was stored, before or while it was taken back): their rows read and looked at again together on a thread of
    their own (`_owed_rows`), those a retraction names taken back on the DELETEs' threads; and from then on those of an
    owed file the start could not read at all, once a write reads it (`OwedRetractions.taken_up`). Returns how many
    were owed."""
    rt.owed_retractions.taken_up = partial(_retract_taken_up, rt)  # keys a write read later, the same way
    owed = sorted(rt.owed_retractions.keys())
    if owed:
        _retract_taken_up(rt, owed)
    return len(owed)


def _retract_taken_up(rt: Runtime, keys: list[tuple[str, str, str]]) -> None:
    """`retract_owed`'s work for `keys` read from the owed file: at the start, and while running when a write read a file
    the start could not read at all (`OwedRetractions.taken_up`)."""
    threading.Thread(target=_owed_rows, args=(rt, sorted(keys), 0), daemon=True, name="retract-owed").start()


def _owed_rows(rt: Runtime, keys: list[tuple[str, str, str]], tries: int) -> None:
    """`retract_owed`'s work, its `tries`-th try: the rows of `keys` read (one gone is owed no more), then `_look_again`.
    A read that fails is tried again later (`_again_later`). A key owed again after the read (its row stored again and
    taken back again) stays owed (`OwedRetractions.mark`)."""
    mark = rt.owed_retractions.mark()
    try:
        found = {key: rt.store.stored_row(*key) for key in keys}
    except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own: owed on disk, tried again)
        _again_later(rt, _owed_rows, (rt, keys, tries + 1), tries, exc)
        return
    rt.owed_retractions.paid_all((key for key, row in found.items() if row is None), owed_by=mark)
    _look_again(rt, [row for row in found.values() if row is not None], 0, mark)


def _look_again(rt: Runtime, rows: list[StoredPreference], tries: int, mark: int | None = None) -> int:
    """Owed `rows` (stored here) looked at together, one read (`Store.retracted`): those no retraction names are owed no
    more (one write of the owed file), each of the others taken back (`_retract_soon`). A read that fails is tried
    again later (`_again_later`). Returns how many are still owed. A batch owed whole is not a
    task each (the tenant's DELETE slots taken, a thread each past them: its other users' DELETEs a 429) nor a write of
    the owed file each. `mark`: the owed keys' `OwedRetractions.mark` from before `rows` were read (else now): a key
    owed again since stays owed."""
    if not rows:
        return 0
    mark = rt.owed_retractions.mark() if mark is None else mark
    try:
        late = rt.store.retracted(rows)
    except Exception as exc:  # noqa: BLE001 (StoreUnavailable, Lance's own: owed on disk, tried again)
        _again_later(rt, _look_again, (rt, rows, tries + 1, mark), tries, exc)
        return len(rows)
    rt.owed_retractions.paid_all({(r.tenant, r.user_id, r.pref_id) for r in rows} - late, owed_by=mark)
    for tenant, user_id, pref_id in sorted(late):
        _retract_soon(rt, tenant, user_id, pref_id, 0)
    return len(late)


def _again_later(rt: Runtime, work, args: tuple, tries: int, exc: Exception, what: str = "looked at") -> None:
    """`work(*args)` after the next of ARRIVED_RETRY_S past `tries` (then every ARRIVED_RETRY_S[-1] s), on a timer: a
    look at owed rows, or a take-back of one, that failed (`what` it was to be, for the log)."""
    wait = ARRIVED_RETRY_S[min(tries, len(ARRIVED_RETRY_S) - 1)]
    say = log.warning if tries < len(ARRIVED_RETRY_S) else log.error
    say("rows stored here that a retraction through another replica took back could not be %s yet (try %d, again in "
        "%.0f s; %d such rows owed): %s", what, tries + 1, wait, len(rt.owed_retractions), exc)
    timer = threading.Timer(wait, work, args)
    timer.daemon = True
    timer.start()


# seconds before each new try of `retract_arrived`'s retraction that failed; past the last, every ARRIVED_RETRY_S[-1]
# seconds until it is done (a try is one retraction's work: a look at the row when the store is down)
ARRIVED_RETRY_S = (5.0, 30.0, 120.0, 600.0)


def _retract_soon(rt: Runtime, tenant: str, user_id: str, pref_id: str, tries: int) -> None:
    """`retract` of the user's row on the DELETEs' threads (a thread of its own when those are busy or stopping), its
    `tries`-th try: one that fails (a 503 of the user's import being stored, the store unavailable, its lease held) is
    tried again after the next of ARRIVED_RETRY_S (the user was answered 202 and sends nothing again), and on past the
    last, every ARRIVED_RETRY_S[-1] seconds while the service runs; the key stays owed on disk meanwhile
    (`Runtime.owed_retractions`), for the next start."""
    work = partial(_retract_logged, rt, tenant, user_id, pref_id, tries)
    try:
        rt.deletes.submit(tenant, work)
    except Stopping:  # owed on disk: the next start takes it back (`retract_owed`)
        log.info("a row of a user of tenant %s taken back through another replica is taken back at the next start", tenant)
    except Exception:  # noqa: BLE001 (Busy: the retraction goes on all the same)
        threading.Thread(target=work, daemon=True, name="retract-arrived").start()


def _retract_logged(rt: Runtime, tenant: str, user_id: str, pref_id: str, tries: int = 0) -> None:
    mark = rt.owed_retractions.mark()  # the row stored again and taken back again after the look: still owed
    try:
        if _still_owed(rt, tenant, user_id, pref_id):  # a look first: most of a batch owed unchecked is not
            retract(rt, tenant, user_id, pref_id, arrived=True)
    except Exception as exc:  # noqa: BLE001 (tried again while the service runs; owed on disk for the next start)
        _again_later(rt, _retract_soon, (rt, tenant, user_id, pref_id, tries + 1), tries, exc, f"of tenant {tenant} taken back")
        return
    rt.owed_retractions.paid_all([(tenant, user_id, pref_id)], owed_by=mark)


def _still_owed(rt: Runtime, tenant: str, user_id: str, pref_id: str) -> bool:
    """Whether the user's row `pref_id` is stored and a retraction recorded after it arrived (`Store.retracted`): a look
    without the store's maintenance turn, before `retract(..., arrived=True)` takes it and looks again. A batch owed whole
    because the worker's look failed (`OwedRetractions.check`) is mostly rows no one took back."""
    row = rt.store.stored_row(tenant, user_id, pref_id)
    return row is not None and bool(rt.store.retracted([row]))


def _drop_adapter(rt: Runtime, tenant: str, user_id: str, received: float) -> bool:
    """Stop serving the user's adapter when it may have been trained on a row received at `received` (unix seconds):
    made or received here at or after it, or its record unreadable. Its files go (`AdapterRegistry.delete`) and the
    users row no longer names it; the pool drops it (`retire`; the caller's `forget` waits for their chats). An
    adapter made before the row arrived stays. Returns whether one was dropped."""
    registry = rt.adapters.registry
    try:
        meta = registry.meta(tenant, user_id)
    except (OSError, ValueError):  # unreadable: not shown to be older than the row
        meta = None
    else:
        if meta is not None and max(meta.created_at, meta.received()) < received:
            return False
    gone = registry.delete(tenant, user_id)
    named = change_user_row(rt, tenant, user_id, lambda read: msgspec.structs.replace(read, adapter=None) if read.adapter else None,
                            "a retraction")
    if not gone and named is None:
        return False
    rt.adapters.retire(tenant, user_id)
    log.info("a retraction of a user of tenant %s stopped serving their adapter (it may have been trained on the row)", tenant)
    return True


