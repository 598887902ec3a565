"""Removing a whole tenant: every user's data, the tenant's jobs and files, and its keys, as an operator's
offboarding asks (`POST /admin/tenants/{tenant}/removal`, `pluralign tenants remove`; docs/admin.md).

A removal is a record in `<data folder>/tenant-removals/<sha256 of the tenant>.json` (`TenantRemoval`), written
whole (temp file, fsync, rename, fsync of the folder) before anything is removed, and rewritten after each
step with its progress. The steps:

1. the tenant's keys are revoked (admin keys labelled with it stay: they are the operator's, not the tenant's),
   so nothing new of the tenant arrives through this replica;
2. the tenant's users are deleted a batch of USERS_PER_LOOK at a time (`service.users.services.delete_batch`), each
   as `DELETE /v1/users/{id}` deletes one (their journal entry, rows in every table and old versions purged,
   feedback still in the log, claims, waiting refits, embedding-cache vectors, adapter, jobs and job files, rows in
   population snapshots and the promoted PAL/EM model, and with replicas the deletion records the others apply),
   every step taking the whole batch at once: one predicate per table and one purge of the store, not one a user
   (one by one: ~0.9 s a user; BENCHMARKS.md, session 49). One batch per turn of the DELETEs' threads (`Runtime.deletes`,
   tenants in turn): other tenants' DELETEs take turns with it, and wait for one batch at most. The users are looked
   up again after each batch (in the store's tables, the feedback log, the adapter folder, the DELETE journal)
   until none is left: rows acknowledged just before the keys went are found at the next look, and the last look
   waits for the tenant's requests being handled to end (`TenantRequests`: a chat authenticated before its keys went
   stores its interaction as it ends);
3. what is the tenant's and no user's: its remaining jobs (audits of the tenant, whose reports name its groups)
   with every file of them, its folders of job snapshots and adapters, its calibration pool, its cached pooled
   priors; the keys are
   revoked once more (one issued meanwhile by `pluralign keys create`).

Stopped part way (the process killed), the record stays `running` and the next start takes it up where the
store stands (the users of a batch cut short are found by their journal entries and deleted in the next batch:
`UnfinishedDeletes` leaves a tenant whose removal runs here to it, `Runtime.removal_runs`); a record
that is `done` is kept (the tenant's name, when, and the counts: no user id or text) as the operator's trace of
the removal. Sending the removal again while one runs answers that one; after it is done, it starts a new one,
which finds nothing left to remove (the done record is kept beside it, `kept_path`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from pluralign.data.record import Persisted
from pluralign.files import DECODE_ERRORS, write_atomic
from service.calibration.pools import forget_old_removals, pool_path, remove_pool, vectors_path
from service.metrics import DECLARED_COUNTERS
from service.owed_retractions import forget_owed
from service.scheduler import Busy, Stopping

if TYPE_CHECKING:
    from service.auth import KeyRing
    from service.runtime import Runtime

log = logging.getLogger("pluralign.service")

REMOVALS_FOLDER = "tenant-removals"  # under the data folder
USERS_PER_LOOK = 256  # users deleted in one batch (`delete_batch`), between two looks at what the tenant still holds
REQUESTS_WAIT_S = 30.0  # how long the last look waits for the tenant's requests being handled to end (else: the next pass)


class TenantRemoval(Persisted, kw_only=True, frozen=True):
    """A removal of every trace of one tenant (the module docstring), as `GET /admin/tenants/{tenant}/removal`
    shows it."""

    tenant: str
    state: Literal["running", "done"]
    started_at: float  # unix seconds
    finished_at: float | None = None  # unix seconds, once done
    users_removed: int = 0  # users deleted so far (whose DELETE removed anything: one a DELETE finished first is not counted)
    keys_revoked: int = 0
    jobs_removed: int = 0  # the tenant's jobs purged with their files, apart from those its users' DELETEs purged
    counts: dict[str, int] = {}  # what the users' DELETEs removed, summed by kind (as a DELETE's `deleted`)
    error: str | None = None  # the last step that failed (tried again at the next pass), None once it went through


def removal_path(data_path: Path, tenant: str) -> Path:
    """Where the removal record of `tenant` is kept: named by the sha256 (hex) of the tenant's name."""
    return data_path / REMOVALS_FOLDER / f"{hashlib.sha256(tenant.encode()).hexdigest()}.json"


def kept_path(data_path: Path, removal: TenantRemoval) -> Path:
    """Where a done removal is kept once the tenant's removal is sent again: beside `removal_path`, its name followed
    by when it began (unix milliseconds)."""
    path = removal_path(data_path, removal.tenant)
    return path.with_name(f"{path.stem}.{int(removal.started_at * 1000)}.json")


def read_removal(data_path: Path, tenant: str) -> TenantRemoval | None:
    """The tenant's removal record, or None when there is none (or it is unreadable: logged)."""
    return _read(removal_path(data_path, tenant))


def _read(path: Path) -> TenantRemoval | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=TenantRemoval)
    except FileNotFoundError:
        return None
    except (OSError, *DECODE_ERRORS) as exc:
        log.error("%s is not a tenant removal record (left for the operator): %s", path, exc)
        return None


def write_removal(data_path: Path, removal: TenantRemoval) -> None:
    """Write the record whole and durably (its rename survives a power loss). Raises OSError."""
    path = removal_path(data_path, removal.tenant)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, msgspec.json.encode(removal))
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def found_anything(removal: TenantRemoval) -> bool:
    """Whether `removal` removed anything: a user, a job, a key, a row or file of any kind."""
    return bool(removal.users_removed or removal.jobs_removed or removal.keys_revoked or any(removal.counts.values()))


class TenantUnseen(LookupError):
    """A removal of a tenant that shows nowhere (`tenant_seen`): no key of its, no removal of it before, nothing of it
    stored: a mistyped name, whose removal would find nothing and end `done`, read as the tenant removed. Nothing was
    begun; the CLI's `--even-if-unseen` and the route's `even_if_unseen=true` begin it all the same."""

    def __init__(self, tenant: str, where: str):
        super().__init__(f"tenant {tenant!r} has no key, no removal before and nothing {where}: nothing to remove (a typo? "
                         "`pluralign keys list` names the tenants with keys)")
        self.tenant = tenant


def tenant_seen(data_path: Path, keys: KeyRing, tenant: str, holds_anything: Callable[[], bool]) -> bool:
    """Whether `tenant` shows here: a key of its (not an admin key: that one's tenant only labels it), a removal of it
    before (its record in `data_path`), or whatever `holds_anything()` finds of it (asked last: a read of the store). What
    the CLI's `tenants remove` and the route check before a removal begins (`TenantUnseen`)."""
    return bool(tenant_keys(keys, tenant) or read_removal(data_path, tenant) is not None or holds_anything())


def jobs_hold_tenant(jobs: Path, tenant: str) -> bool:
    """Whether the jobs folder `jobs` (`service.admin.paths.jobs_folder`) holds something of `tenant` its removal
    purges (`TenantRemovals._purge_jobs`, `_finish`): a job record naming it (`tenant_of` of its params: an audit of it,
    an adapter job of one of its users) or its snapshots' folder (`data/<tenant>`). Read off the files, no JobStore
    opened (the CLI's look, beside a running service); a record that cannot be read (damaged, a later release's) is
    skipped. A tenant whose only trace is such a job is not refused as a typo."""
    from training.jobs.record import decode_job, tenant_of

    if (jobs / "data" / tenant).is_dir():
        return True
    try:
        names = os.listdir(jobs)
    except FileNotFoundError:
        return False
    for name in names:
        if not name.endswith(".job.json") or name.startswith("."):
            continue
        try:
            job = decode_job((jobs / name).read_bytes())
        except (OSError, ValueError, msgspec.DecodeError):
            continue
        if tenant_of(job.params) == tenant:
            return True
    return False


class KeysKeptElsewhere(ValueError):
    """The tenant still has keys in a key file this service must not rewrite: a link (replicas share one file, a
    link to a Secret's, deploy/README.md; a write would put a file of its own in place of the link). Nothing was
    removed: revoke them where the keys are kept, then send the removal again."""


def tenant_keys(keys: KeyRing, tenant: str) -> list:
    """The keys of `tenant` that are no admin keys, as the key file says now."""
    return [k for k in keys.list() if k.tenant == tenant and not k.admin]


def revoke_tenant_keys(keys: KeyRing, tenant: str) -> int:
    """Revoke every key of `tenant` that is no admin key (`KeyRing.revoke_tenant`); returns how many. A running
    service refuses them at its next request. A key file that is a link is never rewritten (`KeysKeptElsewhere`):
    0, its keys left to the operator."""
    if keys.path.is_symlink():
        return 0
    return len(keys.revoke_tenant(tenant))


def begin_removal(data_path: Path, keys: KeyRing, tenant: str) -> tuple[TenantRemoval, bool]:
    """Record a removal of `tenant` and revoke its keys (steps 1 of the module docstring), or find the one running:
    (the record, whether it was begun now). What the CLI does; the service runs the steps after (`TenantRemovals`).
    Raises OSError when the record or the key file cannot be written (then no new record is left: a done one is the
    tenant's record again; a record written that cannot note the keys revoked is logged, the removal begun all the
    same), KeysKeptElsewhere when the tenant's keys are in a key file that is a link (then nothing was removed)."""
    running = read_removal(data_path, tenant)
    if running is not None and running.state == "running":
        return running, False
    if keys.path.is_symlink() and (kept := tenant_keys(keys, tenant)):
        from service.auth import key_id

        raise KeysKeptElsewhere(f"tenant {tenant} still has {len(kept)} keys ({', '.join(key_id(k) for k in kept)}) in "
                                f"{keys.path.name}, a link this service does not rewrite (the replicas' shared key file, "
                                "deploy/README.md): revoke them where the keys are kept, then send the removal again")
    if running is not None:  # a done one: kept beside the new one, the operator's trace of it (`kept_path`)
        os.replace(removal_path(data_path, tenant), kept_path(data_path, running))
    removal = TenantRemoval(tenant=tenant, state="running", started_at=time.time())
    try:
        write_removal(data_path, removal)
        revoked = revoke_tenant_keys(keys, tenant)
    except OSError:  # the record or the key file cannot be written (a full disk): nothing was removed, no pass takes
        # the removal up unasked, and a done one is the tenant's record again (else a record that could
        # not be written would leave the done one moved aside: GET answered 404)
        if running is not None:  # the done one is the tenant's record again
            os.replace(kept_path(data_path, running), removal_path(data_path, tenant))
        else:
            removal_path(data_path, tenant).unlink(missing_ok=True)
        raise
    removal = msgspec.structs.replace(removal, keys_revoked=revoked)
    try:
        write_removal(data_path, removal)
    except OSError as exc:  # begun all the same (its keys are revoked, its record `running`): only the count is not
        # in the record (the caller is not told nothing was removed)
        log.error("the removal of tenant %s is begun, but its record could not note the %d keys it revoked: %s", tenant, revoked, exc)
    return removal, True


def running_removals(data_path: Path) -> list[TenantRemoval]:
    """The removals begun and not done, oldest first."""
    folder = data_path / REMOVALS_FOLDER
    if not folder.is_dir():
        return []
    found = [r for p in sorted(folder.glob("*.json")) if (r := _read(p)) is not None and r.state == "running"]
    return sorted(found, key=lambda r: r.started_at)


class TenantRequests:
    """How many requests of each tenant's keys are being handled now (`tenant_requests_middleware` counts them, from
    the key's check to the last byte of the answer, whatever it stores meanwhile). A removal's last look waits until the
    tenant has none: one authenticated before its keys went (a chat of a user it never found, storing their interaction
    as it ends) would store what no look saw."""

    def __init__(self):
        self._running: dict[str, int] = {}
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def held(self, tenant: str) -> Iterator[None]:
        with self._changed:
            self._running[tenant] = self._running.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                left = self._running.pop(tenant) - 1
                if left:
                    self._running[tenant] = left
                self._changed.notify_all()

    def wait_none(self, tenant: str, timeout_s: float, until: threading.Event | None = None) -> int:
        """Wait up to `timeout_s` seconds (or until `until` is set) for `tenant` to have no request being handled;
        returns how many it still has (0: none)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._running.get(tenant, 0) and (left := deadline - time.monotonic()) > 0 and not (until and until.is_set()):
                self._changed.wait(min(left, 0.1))
            return self._running.get(tenant, 0)


def tenant_requests_middleware(app: ASGIApp) -> ASGIApp:
    """Counts the requests of each tenant's keys being handled (`TenantRequests`, the app's `state.tenant_requests`):
    inside the authentication middleware, which has put the key's principal in the scope; admin keys and requests
    without a key are not counted."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if scope["type"] != "http" or user is None or getattr(user, "admin", True):
            await app(scope, receive, send)
            return
        with scope["litestar_app"].state.tenant_requests.held(user.tenant):
            await app(scope, receive, send)

    return middleware


class TenantRemovals:
    """Runs the removals the data folder records (`running_removals`): at start, every `interval_s` seconds, and
    at once when one is begun through the service (`wake`). On a daemon thread of its own; one removal at a time,
    each user's DELETE on the DELETEs' threads in the tenant's turn. `admin`: the admin area (its jobs folder),
    None when the app has none."""

    def __init__(self, rt: Runtime, interval_s: float, admin=None, requests: TenantRequests | None = None):
        self.rt, self.interval_s, self.admin = rt, interval_s, admin
        self.requests = requests  # the app's requests being handled (None: no app, as for a removal run from a script)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._begin_lock = threading.Lock()  # two removals of one tenant begun at once: one record
        self._thread: threading.Thread | None = None

    @property
    def data_path(self) -> Path:
        return self.rt.settings.data_path

    def begin(self, tenant: str, even_if_unseen: bool = False) -> tuple[TenantRemoval, bool]:
        """`begin_removal`, then wake the thread. Raises TenantUnseen, nothing begun, for a tenant that shows nowhere
        here (`tenant_seen`: no key, no removal before, nothing of it in the store, this service's feedback log, its
        dead letters, its unfinished DELETEs or its adapters) unless `even_if_unseen`, as the CLI's `tenants remove`."""
        with self._begin_lock:
            if not even_if_unseen and not tenant_seen(self.data_path, self.rt.keys, tenant, lambda: self.holds_anything(tenant)):
                raise TenantUnseen(tenant, "of it in the store, this service's feedback log, its dead letters or its jobs")
            removal, begun = begin_removal(self.data_path, self.rt.keys, tenant)
        self._wake.set()
        return removal, begun

    def removing(self, tenant: str) -> bool:
        """Whether a removal of `tenant` is running (jobs for it are refused meanwhile)."""
        removal = read_removal(self.data_path, tenant)
        return removal is not None and removal.state == "running"

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="tenant-removals")
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.run_once()
            except Exception:  # the store unreachable, a full disk: tried again at the next pass
                log.exception("removing tenants failed")
            self._wake.wait(self.interval_s)

    def run_once(self) -> int:
        """Take every running removal as far as it goes; returns how many were finished. First, the removals the pools
        folders' ledgers noted more than an hour ago are forgotten (`forget_old_removals`)."""
        for folder in self._pool_folders():
            try:
                forget_old_removals(folder)
            except OSError as exc:  # the shared volume away a moment: the next pass tries again
                log.warning("the calibration pools' ledger in %s could not be pruned of old removals: %s", folder, exc)
        finished = 0
        for removal in running_removals(self.data_path):
            if self._stop.is_set():
                break
            finished += self.run(removal)
        return finished

    def run(self, removal: TenantRemoval) -> bool:
        """Go on with `removal` until the tenant holds nothing (True) or a step fails or the service stops (False:
        the record says how far it went and why; the next pass goes on). Each look deletes up to USERS_PER_LOOK of
        the users it finds in one batch (`service.users.services.delete_batch`), those deleted fewest times in this
        pass first; a user counts as removed once the next look no longer finds them. A look that finds only users
        deleted twice in this pass already (something keeps naming them that a DELETE does not clean) stops the pass
        with an error naming how many, rather than deleting them again and again."""
        tenant = removal.tenant
        try:
            revoked = revoke_tenant_keys(self.rt.keys, tenant)
        except OSError as exc:  # a full disk, a read-only key file: the record says so; the next pass tries again
            log.error("removing tenant %s: its keys could not be revoked (tried again at the next pass): %s", tenant, exc)
            self._note(removal, error=f"its keys could not be revoked: {exc}")
            return False
        removal = self._note(removal, keys_revoked=removal.keys_revoked + revoked)
        tries: dict[str, int] = {}  # user -> their batches' DELETEs in this pass (one found again after a chat in
        # flight stored it gets a second; after that they do not take the turns)
        users = self.users_of(tenant)
        while not self._stop.is_set():
            if not users and (busy := self._requests_running(tenant)):
                log.warning("removing tenant %s: %d of its requests are still being handled (tried again at the next pass)", tenant, busy)
                self._note(removal, error=f"{busy} requests of the tenant were still being handled after {REQUESTS_WAIT_S:g} s")
                return False
            if not users:
                users = self.users_of(tenant)  # looked at again once none of its requests is being handled
                if not users:
                    return self._finish(removal)
                continue
            left = [u for u in users if tries.get(u, 0) < 2]
            if not left:
                log.error("removing tenant %s: %d users are still found after two DELETEs of them (tried again at the next "
                          "pass)", tenant, len(users))
                self._note(removal, error=f"{len(users)} users are still found after two DELETEs of them removed nothing")
                return False
            batch = sorted(left, key=lambda u: (tries.get(u, 0), u))[:USERS_PER_LOOK]
            for user_id in batch:
                tries[user_id] = tries.get(user_id, 0) + 1
            counts = self._step(removal, tenant, batch)
            if counts is None:
                return False
            summed = {k: removal.counts.get(k, 0) + counts.get(k, 0) for k in {*removal.counts, *counts}}
            try:  # the next look, noted with the batch's counts: a stop before the loop's next turn loses neither
                # (counted at the next turn, the batch's users would be lost to a stop meanwhile)
                users = self.users_of(tenant)
            except Exception:
                self._note(removal, counts=summed)
                raise
            removal = self._note(removal, users_removed=removal.users_removed + len(set(batch) - users), counts=summed, error=None)
        return False

    def _requests_running(self, tenant: str) -> int:
        """Wait (REQUESTS_WAIT_S at most) for the tenant's requests being handled to end; how many still are."""
        return 0 if self.requests is None else self.requests.wait_none(tenant, REQUESTS_WAIT_S, self._stop)

    def _step(self, removal: TenantRemoval, tenant: str, users: list[str]) -> dict[str, int] | None:
        """One batch of the users' DELETEs: its counts, or None when it failed (logged, noted in the record)."""
        try:
            return self._delete_users(tenant, users)
        except (Busy, Stopping) as exc:  # the DELETEs' queue is full, or the service stops: the next pass
            self._note(removal, error=f"waiting for a turn of the DELETEs: {exc}")
        except Exception as exc:  # noqa: BLE001 (a batch's DELETE failed: logged, the record says so, tried again)
            log.error("removing tenant %s: a batch of its users' DELETEs failed (tried again at the next pass): %s", tenant, exc)
            self._note(removal, error=f"a user's DELETE failed: {exc}")
        return None

    def _delete_users(self, tenant: str, users: list[str]) -> dict[str, int]:
        from service.users.services import EmbeddingsNotForgotten, delete_batch

        future = self.rt.deletes.submit(tenant, lambda: delete_batch(self.rt, tenant, users))
        try:
            return future.result()
        except EmbeddingsNotForgotten as exc:  # every step ran; the cache's failure is logged and shown on /health
            return exc.counts

    def holds_anything(self, tenant: str) -> bool:
        """Whether anything here holds something of `tenant` its removal removes: a row of its dead letters, a job naming
        it (`_jobs_of`), a folder of its (`_folders`), a user of its (`users_of`: last, a read of the store). A job or a
        folder counts: else a tenant whose only trace is an audit of it an admin
        queued would be a 404 `tenant_unseen`, "nothing to remove", and the job would stay."""
        return (self.rt.ingest.dead_letters.holds_tenant(tenant) or bool(self._jobs_of(tenant))
                or any(folder.is_dir() for folder in self._folders(tenant))
                or any(pool_path(folder, tenant).exists() or vectors_path(folder, tenant).exists() for folder in self._pool_folders())
                or bool(self.users_of(tenant)))

    def _pool_folders(self) -> list[Path]:
        """The folders that may hold a calibration pool of a tenant (`service.calibration.pools`): the one PUTs write, and
        this replica's own data folder's when that is another (a pool stored there before PLURALIGN_CALIBRATION_POOLS_DIR
        named the shared one)."""
        settings = self.rt.settings
        return list(dict.fromkeys([settings.calibration_pools_path, settings.own_calibration_pools_path]))

    def _jobs_of(self, tenant: str) -> list:
        """The jobs whose params name `tenant` (`tenant_of`), as the job runner holds them (none without the admin area)."""
        if self.admin is None:
            return []
        from training.jobs.record import tenant_of

        return [j for j in self.admin.runner.store.all() if tenant_of(j.params) == tenant]

    def _folders(self, tenant: str) -> list[Path]:
        """The folders named for `tenant` its removal removes whole: its adapters', its job snapshots'."""
        return [self.rt.adapters.registry.tenant_folder(tenant), *([self.admin.folder / "data" / tenant] if self.admin is not None else [])]

    def users_of(self, tenant: str) -> set[str]:
        """Every user of `tenant` anything here holds: rows in the store's tables, feedback in the log (pending
        or moved), an adapter folder, an unfinished DELETE."""
        rt = self.rt
        rt.store.refresh(*rt.store.tables)  # with replicas: rows another replica committed a moment ago
        users = rt.store.tenant_user_ids(tenant)
        users |= {u for t, u in rt.ingest.log.users() if t == tenant}
        users |= {e.user_id for e in rt.delete_journal.pending() if e.tenant == tenant}
        return users | rt.adapters.registry.holders(tenant)

    def _finish(self, removal: TenantRemoval) -> bool:
        """Step 3 of the module docstring, then the record is `done`."""
        tenant = removal.tenant
        jobs = self._purge_jobs(tenant)
        folders = 0
        for folder in self._folders(tenant):
            if folder.is_dir() and folder.resolve().parent == folder.parent.resolve():  # a tenant name is one segment
                shutil.rmtree(folder)
                folders += 1
        # its calibration pool, noting when the removal began: a PUT whose key was checked before stores nothing after
        pools = sum(remove_pool(folder, tenant, removal_began=removal.started_at) for folder in self._pool_folders())
        self.rt.forget_pooled(tenant)
        self.rt.chat_keys.forget_tenant(tenant)  # its chats' answers kept for their Idempotency-Keys
        # its feedback records set aside (`pluralign.store.dead_letter`): a DELETE forgets its user's, but a letter
        # names no user the look above finds (left, they would stay, the tenant's texts with them)
        set_aside = self.rt.ingest.dead_letters.forget_tenant(tenant)
        # and its keys in the owed retractions' file, whoever's, once their rows are gone
        forget_owed(self.rt, lambda t, _: t == tenant, lambda t: t == tenant)
        if self.rt.deletion_sweep is not None:  # and the other replicas' letters (`service.deletions.apply_deletions`)
            try:
                # the record first: until it is written a replica replaying its log moves the tenant's rows in, and its
                # retractions keep the rows taken back out (forgotten first, a failed write would leave a
                # replica restarting before the next pass free to move a taken-back row back in). Written again when
                # forgetting them fails (the next pass): a second record of a tenant applies as the first
                self.rt.deletion_sweep.record_tenant(tenant, removal.started_at)
                self.rt.store.forget_retractions(tenant)  # its rows taken back (`pluralign.store.retractions`): none stays
            except Exception as exc:  # noqa: BLE001 (Lance's errors are of many kinds: the store unreachable; tried again)
                log.error("removing tenant %s: its record for the other replicas could not be written (tried again at "
                          "the next pass): %s", tenant, exc)
                self._note(removal, error=f"its record for the other replicas could not be written: {exc}")
                return False
        counts = {**removal.counts, "preferences": removal.counts.get("preferences", 0) + set_aside} if set_aside else removal.counts
        counts = {**counts, "calibration_pools": counts.get("calibration_pools", 0) + pools} if pools else counts
        revoked = revoke_tenant_keys(self.rt.keys, tenant)
        done = self._note(removal, state="done", finished_at=time.time(), jobs_removed=removal.jobs_removed + jobs,
                          keys_revoked=removal.keys_revoked + revoked, counts=counts, error=None)
        log.warning("removed tenant %s: %d users, %d jobs, %d keys", tenant, done.users_removed, done.jobs_removed, done.keys_revoked)
        if found_anything(done) or folders:  # a removal that found nothing (a tenant never seen, one sent again) is not
            # one more tenant removed
            self.rt.metrics.inc("pluralign_tenants_removed_total", help=DECLARED_COUNTERS["pluralign_tenants_removed_total"][0])
        return True

    def _purge_jobs(self, tenant: str) -> int:
        """Purge every job whose params name `tenant` (an audit of the tenant, an adapter job a user's DELETE did not
        reach): stopped if running, every file of it removed. Returns how many."""
        jobs = self._jobs_of(tenant)
        for job in jobs:
            self.admin.runner.purge(job.id)
        return len(jobs)

    def _note(self, removal: TenantRemoval, **changes) -> TenantRemoval:
        removal = msgspec.structs.replace(removal, **changes)
        try:
            write_removal(self.data_path, removal)
        except OSError as exc:  # its progress is in memory: the next pass looks again at what is left
            log.error("the record of tenant %s's removal could not be written: %s", removal.tenant, exc)
        return removal
