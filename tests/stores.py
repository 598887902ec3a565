"""Real stores set up as several test files need them: two replicas' Stores on one folder, one of whose purges of a
withdrawn users row gave up; an Ingestor whose worker waits for the test to let it begin; a store with claims whose rows an import claimed, and a move that leaves their claims;
a feedback log whose segment rewrites find no room; a preferences table as a release before `received_at` wrote it;
records alone at their tenant's bound that fail on their own content; a store and an ingestor over a log. Each builds on the temporary folder a test gives
it, as the test did before these were shared."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lancedb
import msgspec
import pyarrow as pa
import pytest

from pluralign.store import Store, UserRecord, tables
from pluralign.store import feedback_log as feedback_log_module
from pluralign.store.claims import claim_of
from pluralign.store.failures import StoreUnavailable
from pluralign.store.feedback_log import FeedbackLog, TenantBacklog
from pluralign.store.ingest import Ingestor
from pluralign.store.schemas import preference_schema
from tests.files import files_holding
from tests.service.test_feedback_log import HashEncoder, feedback
from tests.service.test_store import DIM


def user_row(user_id: str, updated_at: float) -> UserRecord:
    """A users row of tenant `t`, created at 1.0, with K=2 logits."""
    return UserRecord(tenant="t", user_id=user_id, created_at=1.0, updated_at=updated_at, pal_logits=[0.0, 1.0])


def withdrawn_purge_given_up(tmp_path: Path, monkeypatch, gone: str) -> tuple[Path, Path]:
    """Replica b (a Store with a withdrawn note, `b/withdrawn-purge-owed`) withdrew user `gone`'s row (updated at
    2.0) while replica a (another Store on the same folder, `store`, holding user `ann`'s row) had the store's lease:
    b's purge gave up waiting for it (its stop's wait over), so the row is still in the users table's files and b's
    note says a purge is owed. Returns (store folder, note)."""
    monkeypatch.setattr(tables, "READ_MARGIN_S", 0.0)  # no reader to wait for: both stores are here
    store, note = tmp_path / "store", tmp_path / "b" / "withdrawn-purge-owed"
    note.parent.mkdir()
    a = Store(str(store), "enc", DIM, sync_seconds=0)
    b = Store(str(store), "enc", DIM, sync_seconds=0, withdrawn_note=note)
    b.lease.wait_s = 0.0
    b.put_user(user_row(gone, 2.0))
    a.put_user(user_row("ann", 1.0))
    with a.lease:  # another replica's turn
        b.withdraw_user("t", gone, 2.0)
        assert b.wait_withdrawn(30)  # given up: no turn
    assert files_holding(store, gone) and note.exists()
    return store, note


def claimed_rows(store: Store, user: str) -> list:
    """Two rows of `user` (tenant t, received at 100.0) an import claimed in `store` (their claims made), not stored."""
    rows = [msgspec.structs.replace(r, received_at=100.0) for r in feedback(user, 0, n=2)]
    assert len(store.claims.claim("t", user, {r.pref_id: claim_of(r, stamped=False) for r in rows})[0]) == 2
    return rows


def claimed_store(tmp_path: Path) -> tuple[Store, list, Path]:
    """A store with claims (`db`), two rows of user u an import claimed (`claimed_rows`), and the folder for a
    feedback log (`log`, not made). Returns (store, rows, log folder)."""
    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    return store, claimed_rows(store, "u"), tmp_path / "log"


def claims_left_by_an_earlier_release(store: Store, users: list[str]) -> None:
    """Each of `users` has two rows stored in `store` and their claims left (an earlier release's mover killed before
    removing them)."""
    for user in users:
        rows = claimed_rows(store, user)
        vecs = HashEncoder().encode([r.prompt for r in rows])
        store.add_preferences(rows, vecs, vecs, vecs)


@contextmanager
def claims_left(claimed: tuple[Store, list, Path], why: str = "the store refused the removal") -> Iterator[Ingestor]:
    """An Ingestor on `claimed` (`claimed_store`) that moved its rows into the table while the store refused the
    removal of their claims (`drop_named` raising OSError(`why`)): their claims and the move's note of them are left.
    Yields the Ingestor, the removal still refused; then allows it again and closes the Ingestor."""
    store, rows, folder = claimed
    ingest = Ingestor(FeedbackLog(folder), store, HashEncoder())
    # the start's sweep (its own thread since session 44) ends first: run after the move, it removes the moved rows'
    # claims itself, the path under test never taken (CI, session 45: "removed 2 pref_id claims of stored rows that
    # earlier releases left", then 0 claims where 2 were left)
    ingest.claims_settled()
    store.claims.drop_named = lambda folders: (_ for _ in ()).throw(OSError(why))
    try:
        with ingest.paused():
            ingest.submit(rows, received_at=100.0)  # acknowledged
        ingest.flush()  # the worker may have moved them already, once paused() ended: either way they are moved now
        yield ingest
    finally:
        del store.claims.drop_named
        ingest.close()


def wait_for(what, timeout: float = 20.0) -> None:
    """Return once `what()` is true, looking every 20 ms; an AssertionError when it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.02)


@contextmanager
def ingesting(folder: Path, encoder, records: list[list] = (), **options) -> Iterator[tuple[Store, Ingestor]]:
    """A real Store at `folder`/db (vectors of DIM) and an Ingestor over the feedback log at `folder`/log embedding with
    `encoder`, `options` its own (`tries`, `batch`); `records` (lists of feedback rows) are in the log before the
    Ingestor starts, as a restart finds them. Its worker is running; it is closed on the way out."""
    if records:
        log = FeedbackLog(folder / "log")
        for record in records:
            log.append(record)
        log.close()
    store = Store(str(folder / "db"), "hash", DIM)
    ingest = Ingestor(FeedbackLog(folder / "log"), store, encoder, **options)
    try:
        yield store, ingest
    finally:
        ingest.close()


def at_most_at_once(call, hold_s: float = 0.02) -> tuple[Callable, list[int]]:
    """`call` wrapped to take at least `hold_s` seconds a call, and a list whose one item is the most calls of it that
    ran at once so far: whether a store's caller makes its requests one by one (1) or side by side (more)."""
    busy, most, lock = [0], [0], threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        try:
            time.sleep(hold_s)
            return call(*args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1

    return counted, most


class WorkerWaits(Ingestor):
    """An Ingestor whose worker begins once the test sets `begin` (60 s at most): what its start replayed is then read,
    held or refused before the worker may move it. A plain Ingestor's worker begins in its constructor, and under load
    it moved a replayed record before the test's next line (CI of session 49: before a `held`)."""

    def __init__(self, *args, **kwargs):
        self.begin = threading.Event()
        super().__init__(*args, **kwargs)

    def _run(self):
        self.begin.wait(60)
        super()._run()


def no_room_for_rewrites(monkeypatch) -> None:
    """Segment rewrites (`forget_user`, on the caller's thread) fail as on a full disk; the writer's appends do not."""
    real = feedback_log_module._write_all

    def write_all(fd, data):
        if threading.current_thread().name != "feedback-log":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(feedback_log_module, "_write_all", write_all)


def forget_without_room(folder: Path, monkeypatch) -> FeedbackLog:
    """A feedback log in `folder` holding a comparison of ann and one of bob (tenant t), whose `forget_user` of ann
    failed (StoreUnavailable) for want of room to rewrite the segment. Returns the log, open; the disk is still
    full (`no_room_for_rewrites`) until `monkeypatch.undo()`."""
    log = FeedbackLog(folder)
    log.append(feedback("ann", 0))
    log.append(feedback("bob", 0))
    no_room_for_rewrites(monkeypatch)
    with pytest.raises(StoreUnavailable):
        log.forget_user("t", "ann")
    return log


def old_preferences_table(folder: Path, times: tuple[float, ...], dim: int = DIM) -> None:
    """A preferences table in `folder` as a release before `received_at` stored it (imports then took any finite
    number): no such column, schema_version 1, a comparison of user `ann` (tenant `t`) made at each of `times`,
    pref_id `old<i>`, encoder `enc`, vectors of `dim`."""
    new = preference_schema("enc", dim)
    old = pa.schema([f for f in new if f.name != "received_at"], metadata=new.metadata)
    vec = [0.5] * dim
    rows = [{"tenant": "t", "user_id": "ann", "pref_id": f"old{i}", "prompt": f"q{i}", "chosen": "yes", "rejected": "no",
             "tie": False, "margin": None, "kind": "comparison", "source": None, "created_at": at, "attributes": "{}",
             "prompt_vec": vec, "chosen_vec": vec, "rejected_vec": vec, "schema_version": 1} for i, at in enumerate(times)]
    lancedb.connect(str(folder)).create_table("preferences", pa.Table.from_pylist(rows, schema=old))


def records_alone_at_the_bound_are_set_aside(folder: Path, records: list[list], encoder) -> None:
    """Two records of tenant t1 (`records`, 2 rows each) that fail on their own content with `encoder`, alone in a
    feedback log under `folder` whose bound on a tenant's waiting rows is 4: asserts that the tenant's next feedback is
    refused (TenantBacklog) before the worker begins (`WorkerWaits`), that both records are set aside after their 3
    tries (4 rows, 2 letters) and the log emptied, and that the tenant's feedback is then taken and stored."""
    log = FeedbackLog(folder / "log")
    for record in records:
        log.append(record)
    log.close()
    store = Store(str(folder / "db"), "hash", DIM)
    ingest = WorkerWaits(FeedbackLog(folder / "log", tenant_rows=4), store, encoder, tries=3)
    try:
        with pytest.raises(TenantBacklog):
            ingest.submit(feedback("good", 0, tenant="t1"))
        ingest.begin.set()
        wait_for(lambda: ingest.set_aside == 4 and ingest.log.backlog() == (0, 0), timeout=60.0)
        ingest.submit(feedback("good", 0, tenant="t1"))
        wait_for(lambda: store.count_preferences("t1", "good") == 1, timeout=60.0)
        assert len(ingest.dead_letters.names()) == 2
    finally:
        ingest.close()
