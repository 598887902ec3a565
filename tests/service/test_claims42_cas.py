"""Session 42: every change of a `pref_id` claim after its put is conditional on what was read
(`pluralign.store.claims`), on a real folder and on moto's S3. Each test is two or three replicas (claims
objects of their own on one store) interleaved at the one instant that matters: a hook on the first's read runs
the others there and then. Before, a claim's later time was written over it whatever it held by then (`_replace`),
and a DELETE's removal, a refused import's release and (new) the mover's removal took whatever was there."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

import pytest

from pluralign.store import StoredPreference
from pluralign.store import claims as claims_module
from pluralign.store.claims import FolderClaims, S3Claims, claim_of
from tests.s3 import S3Server
from tests.stores import at_most_at_once, wait_for

USER = "cas42"


def claim(chosen: str, received_at: float, pref_id: str = "p-1") -> dict:
    row = StoredPreference(tenant="acme", user_id=USER, pref_id=pref_id, prompt="Tea?", chosen=chosen, rejected="No.",
                           kind="comparison", created_at=1.0, received_at=received_at)
    return {pref_id: claim_of(row, stamped=False)}


@pytest.fixture(scope="module")
def s3():
    with S3Server("pluralign-claims42") as server:
        yield server


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.slow)])
def replicas(request, tmp_path):
    """A function giving one more replica's claims on one store (a folder, or a prefix of moto's bucket). The S3 cases
    are slow (`make test-object-store`): the default suite keeps S3's claims in one case of its own
    (`test_an_earlier_time_landing_last_does_not_move_the_claim_back_on_s3`) and the two S3 tests below."""
    if request.param == "folder":
        return lambda: FolderClaims(tmp_path)
    s3 = request.getfixturevalue("s3")
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    return lambda: S3Claims(s3.uri(prefix), s3.options)


def held(claims, pref_id: str = "p-1"):
    found = claims._get(f"{claims_module._folder('acme', USER)}/{claims_module.key_hash(pref_id)}")
    if found is None:
        return None
    return claims_module._decode(found[0] if isinstance(found, tuple) else found)


@contextlib.contextmanager
def after_its_read(claims, then):
    """`claims`' next read of a claim returns what it read, once `then()` has run (another replica, meanwhile)."""
    get = claims._get

    def read_then(name):
        found = get(name)
        del claims._get
        then()
        return found

    claims._get = read_then
    try:
        yield
    finally:
        vars(claims).pop("_get", None)


def test_an_earlier_time_landing_last_does_not_move_the_claim_back(replicas):
    """Replicas a and b receive the row again (at 200 and 300); b's time is written between a's read and a's write.
    Before, a wrote 200 over 300, and a DELETE begun at 250 removed the claim of the row it kept (b's copy)."""
    a, b = replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(a, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert a.claim("acme", USER, claim("Tea.", 200.0)) == ([], {})
    assert held(a).received_at == 300.0  # before: 200.0
    assert replicas().forget_user("acme", USER, before=250.0) == 0  # before: 1
    assert list(replicas().claim("acme", USER, claim("Coffee.", 400.0))[1]) == ["p-1"]


def test_an_earlier_time_landing_last_does_not_move_the_claim_back_on_s3(s3):
    """The S3 case of the test above in the default suite (the other S3 cases of `replicas` are slow)."""
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    test_an_earlier_time_landing_last_does_not_move_the_claim_back(lambda: S3Claims(s3.uri(prefix), s3.options))


def test_a_claim_a_delete_freed_and_another_replica_took_is_not_written_over(replicas):
    """a reads the claim (Tea., 100) to move its time on; meanwhile a DELETE removes it and c claims the id for
    Coffee. (its import acknowledged). Before, a wrote Tea. over c's claim: a third replica then acknowledged
    Tea. too, beside c's Coffee."""
    a, c = replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})

    def delete_then_claim():
        assert replicas().forget_user("acme", USER, before=150.0) == 1
        assert c.claim("acme", USER, claim("Coffee.", 160.0)) == (["p-1"], {})

    with after_its_read(a, delete_then_claim):
        made, taken = a.claim("acme", USER, claim("Tea.", 200.0))
    assert made == [] and list(taken) == ["p-1"], (made, taken)  # before: a took it for Tea.
    assert held(c).same_preference(claim("Coffee.", 160.0)["p-1"])  # before: Tea.


def test_a_delete_keeps_a_claim_moved_on_between_its_read_and_its_removal(replicas):
    """A DELETE begun at 250 reads the claim (100) and, before it removes it, b receives the row again (300:
    after the DELETE began, so the DELETE keeps b's copy). Before, the DELETE removed the claim all the same."""
    a, b, delete = replicas(), replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(delete, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert delete.forget_user("acme", USER, before=250.0) == 0  # before: 1
    assert held(a).received_at == 300.0
    assert list(replicas().claim("acme", USER, claim("Coffee.", 400.0))[1]) == ["p-1"]


def test_a_delete_keeps_a_claim_moved_on_between_its_read_and_its_removal_on_s3(s3):
    """The S3 case of the test above in the default suite (review tail61b: with the `[s3]` cases slow, a removal sent
    without `IfMatch`, `S3Claims._remove_if` taking whatever was there, failed no default test)."""
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    test_a_delete_keeps_a_claim_moved_on_between_its_read_and_its_removal(lambda: S3Claims(s3.uri(prefix), s3.options))


def test_a_release_leaves_a_claim_another_import_moved_on(replicas):
    """a's import claims p-1 and is then refused (another line's 409); meanwhile b's import of the same row found a's
    claim, moved its time on and was acknowledged. Before, a's release removed the claim b's row relies on."""
    a, b = replicas(), replicas()
    ours = claim("Tea.", 100.0)
    assert a.claim("acme", USER, ours) == (["p-1"], {})
    assert b.claim("acme", USER, claim("Tea.", 200.0)) == ([], {})
    a.release("acme", USER, ours)
    assert held(a).received_at == 200.0  # before: gone
    a.release("acme", USER, claim("Tea.", 200.0))  # as put (by b): released
    assert held(a) is None


def test_the_mover_removes_only_the_claim_of_the_row_it_stored(replicas):
    """`drop_stored`, what the mover calls once rows are in the table: a claim of that row received no later goes; one
    moved on by a later copy (still in another replica's log) stays, as does one of other content, and one moved on
    between the mover's read and its removal."""
    a, b, mover = replicas(), replicas(), replicas()
    assert a.claim("acme", USER, {**claim("Tea.", 100.0), **claim("Milk.", 100.0, "p-2"), **claim("Tea.", 100.0, "p-3")})[0]
    assert b.claim("acme", USER, claim("Milk.", 300.0, "p-2")) == ([], {})  # p-2 received again, through b
    stored = {**claim("Tea.", 100.0), **claim("Milk.", 100.0, "p-2"), **claim("Coffee.", 100.0, "p-3"), **claim("Tea.", 1.0, "p-4")}
    assert mover.drop_stored("acme", USER, stored) == 1
    assert held(a) is None and held(a, "p-2").received_at == 300.0 and held(a, "p-3") is not None
    assert mover.drop_stored("acme", USER, claim("Milk.", 300.0, "p-2")) == 1  # b's copy moved: gone
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    with after_its_read(mover, lambda: b.claim("acme", USER, claim("Tea.", 300.0))):
        assert mover.drop_stored("acme", USER, claim("Tea.", 100.0)) == 0
    assert held(a).received_at == 300.0



def test_a_change_waiting_for_a_folder_lock_that_was_unlinked_waits_for_the_new_one(tmp_path, monkeypatch):
    """Review of session 42: a DELETE's claims step removes the user's folder and its `.lock` (unlinked while held).
    A change that opened the old `.lock` and waited for it must not take it for the lock: it would hold a lock on an
    unlinked file while another process holds the one at that name (both changing one claim). Here a removal waits on
    the old file; the lock file is unlinked and the new one taken, then the old one let go: the removal waits for the
    new one, and only then removes the claim (without the look at the name, at once)."""
    claims = FolderClaims(tmp_path)
    assert claims.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    name = f"{claims_module._folder('acme', USER)}/{claims_module.key_hash('p-1')}"
    version = claims._get(name)[1]
    waiting, asked = threading.Event(), []  # the remover's calls for a lock
    flock = claims_module.fcntl.flock

    def noted(fd, op):
        if threading.current_thread().name == "remover":
            waiting.set()
            asked.extend([op] if op & claims_module.fcntl.LOCK_EX else [])
        return flock(fd, op)

    monkeypatch.setattr(claims_module.fcntl, "flock", noted)
    removed: list[bool] = []
    remover = threading.Thread(name="remover", target=lambda: removed.append(claims._remove_if(name, version)))
    old, new = claims._locked(name), claims._locked(name)
    assert old.__enter__()
    remover.start()
    assert waiting.wait(5)
    time.sleep(0.05)  # in flock, on the old file
    (claims.root / name.partition("/")[0] / claims_module.LOCK_FILE).unlink()
    assert new.__enter__()  # another process's change, on the lock file now at that name
    old.__exit__(None, None, None)
    # the remover has had the old lock and asked for the new one (or removed it meanwhile: the bug), where a sleep of
    # 0.1 s may not have let it run at all on a busy machine
    wait_for(lambda: len(asked) >= 2 or removed, timeout=30)
    assert held(claims) is not None and removed == []  # before: removed while the new lock was held
    new.__exit__(None, None, None)
    remover.join(5)
    assert removed == [True] and held(claims) is None


def test_a_claim_put_as_a_delete_removes_the_user_s_folder_is_made(tmp_path):
    """Review of session 42: a DELETE's claims step now removes the user's folder once empty. An import on another
    replica that made the folder (`FolderClaims.claim`) just before then puts its claim into no folder: made again."""
    a, delete = FolderClaims(tmp_path), FolderClaims(tmp_path)
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    assert delete.forget_user("acme", USER) == 1
    assert not (tmp_path / claims_module.FOLDER / claims_module._folder("acme", USER)).exists()
    put = a._put

    def removed_then_put(name, data):
        del a._put
        delete.forget_user("acme", USER)  # the folder `claim` made a moment ago, empty: removed
        return put(name, data)

    a._put = removed_then_put
    assert a.claim("acme", USER, claim("Coffee.", 200.0)) == (["p-1"], {})  # before the fix: FileNotFoundError
    assert held(a).same_preference(claim("Coffee.", 200.0)["p-1"])


def test_an_import_s_claims_do_not_wait_behind_the_mover_s_removals(s3):
    """Review of session 42: the mover removes the claims of every batch it stores (`drop_stored`), on S3 S3_THREADS at
    a time, on the pool an import's claims were written on: an import of one row of another tenant waited behind a
    batch's removals (25 s behind 2,000 against moto). Here the removals of one user's claims are held in flight (each
    read waits) and another tenant's import claims its id meanwhile."""
    claims = S3Claims(s3.uri(f"pool-{uuid.uuid4().hex[:8]}"), s3.options)
    ids = {f"p-{i}": claim("Tea.", 100.0, f"p-{i}")[f"p-{i}"] for i in range(claims_module.S3_THREADS + 8)}
    assert len(claims.claim("acme", USER, ids)[0]) == len(ids)
    folder = claims_module._folder("acme", USER)
    go, reading = threading.Event(), threading.Semaphore(0)
    get = claims._get

    def held_read(name):
        if name.startswith(folder):
            reading.release()
            go.wait(30)
        return get(name)

    claims._get = held_read
    dropped: list[int] = []
    mover = threading.Thread(target=lambda: dropped.append(claims.drop_stored("acme", USER, ids)))
    mover.start()
    try:
        assert all(reading.acquire(timeout=10) for _ in range(claims_module.S3_THREADS))  # every removal thread busy
        other = StoredPreference(tenant="globex", user_id="v", pref_id="q-1", prompt="Tea?", chosen="Tea.", rejected="No.",
                                 kind="comparison", created_at=1.0, received_at=100.0)
        made: list = []
        importer = threading.Thread(target=lambda: made.append(claims.claim("globex", "v", {"q-1": claim_of(other, stamped=False)})))
        importer.start()
        importer.join(10)
        assert made == [(["q-1"], {})], made  # before: still waiting (until the removals' reads go on)
    finally:
        go.set()
        mover.join(30)
    assert dropped == [len(ids)]


def test_the_mover_lists_the_claims_of_a_batch_s_users_at_once(s3):
    """Review of session 42: the mover looks for the claims of every row it stores, a listing of each user's claims
    (on S3 a LIST), one user after another: ~25 ms a user against moto, 1.6 s more for each batch of 64 users'
    feedback (which never has claims). Now they are listed several at a time; the claims still go."""
    claims = S3Claims(s3.uri(f"users-{uuid.uuid4().hex[:8]}"), s3.options)
    rows = [StoredPreference(tenant="acme", user_id=f"u{i}", pref_id=f"p-{i}", prompt="Tea?", chosen="Tea.", rejected="No.",
                             kind="comparison", created_at=1.0, received_at=100.0) for i in range(12)]
    for row in rows[:4]:  # four of them imported with their ids
        assert claims.claim("acme", row.user_id, {row.pref_id: claim_of(row, stamped=False)})[0] == [row.pref_id]
    claims._names, most = at_most_at_once(claims._names)
    # the mover's step on a batch (`Ingestor._drop_noted`, of its note since session 43: the claims by name)
    claims.drop_named(claims_module.named({("acme", r.user_id): {r.pref_id: claim_of(r, stamped=False)} for r in rows}))
    assert most[0] > 1, most  # before: 1
    del claims._names
    assert all(claims._names(claims_module._folder("acme", row.user_id)) == [] for row in rows[:4])


def test_a_restart_s_replay_removes_the_claims_of_rows_already_stored(tmp_path):
    """Review of session 42: a replica killed after its mover committed rows and before it removed their claims (the
    rows still in its log's files) finds them stored when its log is replayed at start, and removes their claims
    there (`Ingestor._drop_already_moved`). No test drove that path: removing the call failed nothing."""
    import msgspec

    from pluralign.store import Store
    from pluralign.store.feedback_log import FeedbackLog
    from pluralign.store.ingest import Ingestor
    from tests.service.test_feedback_log import HashEncoder, feedback
    from tests.service.test_store import DIM

    store = Store(str(tmp_path / "db"), "hash", DIM, sync_seconds=0)
    rows = [msgspec.structs.replace(r, received_at=100.0) for r in feedback("u", 0, n=2)]
    assert store.claims.claim("t", "u", {r.pref_id: claim_of(r, stamped=False) for r in rows})[0]  # the import's claims
    log = FeedbackLog(tmp_path / "log")
    log.append(rows)  # acknowledged
    vecs = HashEncoder().encode(["x", "y"])
    store.add_preferences(rows, vecs, vecs, vecs)  # committed by the mover, which was then killed
    log.close()
    folder = claims_module._folder("t", "u")
    assert len(store.claims._names(folder)) == 2
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())  # the restart
    try:
        assert store.claims._names(folder) == []  # without the replay's removal: 2
        assert store.count_preferences("t", "u") == 2
    finally:
        ingest.close()


def test_a_refused_import_puts_back_the_time_it_moved_on_unless_moved_again(replicas):
    """Review of session 42: b's import found a's claim of the same row and moved its time on (200), then was refused.
    Its release puts back 100 (before, 200 stayed: a's mover, storing the copy received at 100, kept the claim for
    ever); a time moved on again meanwhile (c, 300) stays."""
    a, b, c = replicas(), replicas(), replicas()
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    moved: dict = {}
    assert b.claim("acme", USER, claim("Tea.", 200.0), moved) == ([], {}) and list(moved) == ["p-1"]
    b.release("acme", USER, {}, moved)
    assert held(a).received_at == 100.0  # before: 200.0
    assert a.drop_stored("acme", USER, claim("Tea.", 100.0)) == 1
    assert a.claim("acme", USER, claim("Tea.", 100.0)) == (["p-1"], {})
    moved = {}
    assert b.claim("acme", USER, claim("Tea.", 200.0), moved) == ([], {})
    assert c.claim("acme", USER, claim("Tea.", 300.0)) == ([], {})
    b.release("acme", USER, {}, moved)
    assert held(a).received_at == 300.0


def test_the_sweep_of_what_earlier_releases_left_removes_only_stored_rows_claims_once(replicas):
    """Session 43: `sweep_stored`, the first start's pass over the claims earlier releases left of stored rows (on a
    folder and on S3, whose user folders it lists by delimiter): the claim of a stored row goes; one of a row not stored
    stays (acknowledged on a replica, not moved yet), and so does one received after the stored copy (another replica's
    later copy, still in its log). Once marked, the store is not swept again."""
    claims = replicas()
    tea, milk, later = claim("Tea.", 100.0, "p-1"), claim("Milk.", 100.0, "p-2"), claim("Cocoa.", 200.0, "p-3")
    assert len(claims.claim("acme", USER, {**tea, **milk, **later})[0]) == 3
    stored = {"p-1": tea["p-1"], "p-3": claim("Cocoa.", 150.0, "p-3")["p-3"]}
    owners = [("acme", USER), ("acme", "no-claims")]
    assert claims.sweep_stored(lambda: owners, lambda tenant, user_id: stored if user_id == USER else {}) == 1
    assert held(claims, "p-1") is None and held(claims, "p-2") is not None and held(claims, "p-3") is not None
    assert claims.sweep_stored(lambda: owners, lambda tenant, user_id: stored) is None  # marked: not again


def test_the_sweep_of_what_earlier_releases_left_on_s3(s3):
    """The S3 case of the sweep above in the default suite (review tail61b: with the `[s3]` cases slow, an S3 sweep that
    listed no user folder, `S3Claims._folders` giving [], failed no default test; its Delimiter listing is S3's own)."""
    prefix = f"cas-{uuid.uuid4().hex[:8]}"
    test_the_sweep_of_what_earlier_releases_left_removes_only_stored_rows_claims_once(lambda: S3Claims(s3.uri(prefix), s3.options))


def test_a_sweep_that_cannot_read_one_user_still_sweeps_the_others_and_is_not_marked(replicas):
    """Review of session 43: `sweep_stored` stopped at the first user it could not sweep (their rows unreadable, or
    a claim that cannot be removed), leaving every user listed after them swept by no start while that user kept
    failing (each start read the users before them again, and stopped there again). Now every user is looked at,
    then the first failure is raised and the store stays unmarked (the next start tries again)."""
    claims = replicas()
    for user in ("broken", USER):
        row = StoredPreference(tenant="acme", user_id=user, pref_id="p-1", prompt="Tea?", chosen="Tea.", rejected="No.",
                               kind="comparison", created_at=1.0, received_at=100.0)
        assert claims.claim("acme", user, {"p-1": claim_of(row, stamped=False)})[0] == ["p-1"]
    tea = claim("Tea.", 100.0)

    def stored(tenant: str, user_id: str) -> dict:
        if user_id == "broken":
            raise OSError("the table could not be read for this user")
        return tea

    with pytest.raises(OSError, match="could not be read"):
        claims.sweep_stored(lambda: [("acme", "broken"), ("acme", USER)], stored)
    assert held(claims) is None  # before: USER's claim stayed, swept by no start while "broken" failed
    assert claims._get(claims_module.SWEPT) is None  # not marked: the next start sweeps again
    assert claims.sweep_stored(lambda: [("acme", "broken"), ("acme", USER)], lambda tenant, user_id: tea) == 1  # "broken"'s
