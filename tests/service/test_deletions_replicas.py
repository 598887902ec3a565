"""A DELETE answered by one replica reaches the files only another replica holds: its population
snapshots, its PAL and EM artifacts, the population model it promoted (on disk and in memory), its
feedback log; through the store's deletion record (`pluralign.store.deletions`), which names the user
by hash only, and every replica's sweep (`service.deletions`)."""

from __future__ import annotations

import time

import msgspec
import pytest

from pluralign.reward.pal_checkpoint import load_pal
from pluralign.store.deletions import SLACK_S, Applied, Deletion, Forget, new_deletion, user_hash
from pluralign.store.feedback_log import FeedbackLog
from service.admin.controllers import ADMIN_HANDLERS
from service.runtime import PROMOTED_PAL
from tests.service.test_break20_delete import GONE, KEPT, MARKER, files_holding, give_comparisons, run_job
from tests.service.test_feedback_log import feedback, log_bytes
from tests.service.tiny import start_replicas

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py


def wait_until(check, timeout: float = 60.0):
    """Until `check()` is falsy (at most `timeout` seconds, which only a failing check waits); its last value."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.slow  # ~15 s: kept out of the default suite for its time (make test-all runs it)
def test_a_delete_on_one_replica_cleans_the_population_files_of_the_other(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, monkeypatch):
    from service.users import services as user_services

    monkeypatch.setattr(user_services, "DESCRIBED_PAIRS", 2)  # profiles' prototype descriptions kept per tenant from 2 pairs
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200,
                                         admin_handlers=ADMIN_HANDLERS, deletion_sweep_s=0.2,
                                         profile_examples="tenant")  # a tenant-wide sample to cache (own: the default since 53)
    folder_b = tmp_path / "b"
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b, b.client("globex") as globex_b, \
            b.client("admin") as admin_b:
        give_comparisons(acme_b, GONE, "tea", MARKER)  # through replica b: its feedback log holds them
        give_comparisons(acme_b, "ann", "coffee")
        give_comparisons(globex_b, "bea", "tea", KEPT)
        served = a.runtime.rewards.version
        pal = run_job(admin_b, "pal", {"k": 2, "epochs": 2, "latent_dim": 8, "hidden": 16})
        em = run_job(admin_b, "em", {"k": 2, "restarts": 1})
        # trained and kept, not served: promoted by replica b alone, b would serve another population model than a
        # (found by operator47 on moto's S3: /health said k=1 on one replica and k=4 on the other, and each replica's
        # reads refitted the shared users rows against its own model)
        for job in (pal, em):
            assert job["promoted"] is False, job
            assert "PLURALIGN_REPLICAS=2" in job["promotion_note"] and "PLURALIGN_PAL_DIR" in job["promotion_note"], job
            # it names the way deploy/README.md gives, which takes turns under `.pal.lock` (until trialdeploy50 it told
            # the operator to copy the artifact, which can leave a mix of two models that no replica serves)
            assert "`pluralign promote " in job["promotion_note"] and "copy its artifact" not in job["promotion_note"], job
        assert a.runtime.rewards.version == b.runtime.rewards.version == served
        assert not (folder_b / PROMOTED_PAL).exists()
        assert files_holding(folder_b, MARKER, GONE)
        assert acme_b.get("/v1/users/ann").status_code == 200
        key = ("acme", b.runtime.rewards.version)
        described = b.runtime.described[key]  # drawn from a sample that may quote the user

        r = acme_a.delete(f"/v1/users/{GONE}")  # answered by replica a
        assert r.status_code == 200, r.text
        assert r.json()["deleted"]["preferences"] == 8
        assert files_holding(tmp_path / "a", MARKER, GONE) == []

        # replica b's own folder loses them within its sweep, every other user's rows staying
        assert wait_until(lambda: files_holding(folder_b, MARKER, GONE)) == []
        # b's cached description went with the record (test_review29b shows its quoted answers)
        assert b.runtime.described.get(key) is not described
        profile = acme_b.get("/v1/users/ann")
        assert profile.status_code == 200 and MARKER not in profile.text
        snapshots = sorted((folder_b / "jobs" / "data" / "population").glob("comparisons-*.jsonl"))
        assert len(snapshots) == 2  # the PAL job's and the EM job's
        for path in snapshots:
            users = {msgspec.json.decode(line)["user_id"] for line in path.read_bytes().splitlines() if line.strip()}
            assert users == {"acme/ann", "globex/bea"} and KEPT.encode() in path.read_bytes()
        _, weights, meta = load_pal(folder_b / "jobs" / "artifacts" / pal["id"])
        assert sorted(weights.users()) == ["acme/ann", "globex/bea"] and meta.users == 2
        # the shared store names the user nowhere, the deletion record by hash only
        assert files_holding(tmp_path / "shared-lancedb", MARKER, GONE) == []
        (record,) = b.runtime.store.deletions_since(0)
        assert record.user_hash == user_hash("acme", GONE) and record.tenant == "acme" and record.replica == 0
        # each record is applied once: replica a wrote it (applied there), replica b applied it
        assert a.runtime.deletion_sweep.run_once() == 0 and b.runtime.deletion_sweep.run_once() == 0
        assert globex_b.get("/v1/users/bea").status_code == 200
        out = acme_b.post("/v1/rewards/score", json={"user": "ann", "prompt": "A drink?", "responses": ["Tea.", "Coffee."]})
        assert out.status_code == 200, out.text


def test_feedback_acknowledged_after_the_delete_stays_pending(tmp_path):
    """Another replica's DELETE at time T drops this log's records of the user from before T only: what
    the user sent again after it is theirs, and stays to be moved."""
    log = FeedbackLog(tmp_path, segment_bytes=600)
    for i in range(3):
        log.append(feedback("ann", i))
        log.append(feedback("bob", i))
    deleted_at = time.time()
    time.sleep(0.01)
    log.append(feedback("ann", 9))  # the user back after the DELETE
    assert log.forget_user("t", "ann", before=deleted_at) == 3
    assert b"question 0 of ann" not in log_bytes(tmp_path) and b"question 9 of ann" in log_bytes(tmp_path)
    assert sorted(e.rows[0].prompt for e in log.pending.values() if e.key == ("t", "ann")) == ["question 9 of ann"]
    assert ("t", "ann") in log.users()
    log.close()


def test_applied_records_are_remembered_with_a_slack_for_late_ones(tmp_path):
    def at(t: float, name: str) -> Deletion:
        return msgspec.structs.replace(new_deletion("acme", name, t, 0), deletion_id=name)

    path = tmp_path / "applied.json"
    state = Applied.load(path)
    assert state.pending([at(5.0, "x")]) == [at(5.0, "x")]  # a fresh replica applies every record
    state.add([at(5.0, "x"), at(10_000.0, "y")]).save(path)
    state = Applied.load(path)
    assert state.watermark == 10_000.0 and set(state.ids) == {"y"}  # x is older than the slack: passed by time
    late = at(10_000.0 - SLACK_S / 2, "late")  # committed late by a replica with a slower clock
    assert state.pending([at(5.0, "x"), at(10_000.0, "y"), late]) == [late]
    path.write_bytes(b"{not json")
    try:
        Applied.load(path)
    except ValueError as exc:
        assert "applied-deletions" in str(exc)
    else:
        raise AssertionError("a damaged file must be refused")


def test_forget_names_users_by_key_or_by_hash():
    by_key, by_hash = Forget.key("acme/ann"), Forget.of([new_deletion("acme", "ann", 1.0, 0)])
    for forget in (by_key, by_hash):
        assert forget("acme/ann") and forget.user("acme", "ann")
        assert not forget("globex/ann") and not forget("acme/anna")
    assert not by_key.may_name(b'{"user_id": "acme/bob"}') and by_key.may_name(b'{"user_id": "acme/ann"}')
    assert by_hash.may_name(b"anything")  # a hash cannot be looked for in a file's bytes


# 4 users: two DELETEs queued on each replica, all four sent at once, so the store's lease passes between
# the replicas with the other's DELETE waiting (each waits out a purge's sync_ms + READ_MARGIN_S: here 0.3 s, short_read_margin);
# 12 (the race met more often, ~30 s) in `make test-all`
@pytest.mark.parametrize("n_users", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_deletes_answered_by_two_replicas_at_once_all_succeed(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, n_users):
    """Each replica's purge removes the table's old versions; it must not remove what the other
    replica is writing at that moment (its own DELETE's compaction, its new index)."""
    from concurrent.futures import ThreadPoolExecutor

    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200)
    users = [f"user-{i}" for i in range(n_users)]
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        for i, user in enumerate(users):
            give_comparisons(acme_a if i % 2 else acme_b, user, "tea", f"{MARKER}-{i}", n=3)
        a.runtime.wait_for_background()
        b.runtime.wait_for_background()
        assert not wait_until(lambda: acme_a.get(f"/v1/users/{users[0]}/preferences").json().get("total") != 3)

        def delete(i: int) -> int:
            return (acme_a if i % 2 else acme_b).delete(f"/v1/users/{users[i]}").status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(delete, range(len(users))))
        assert codes == [200] * len(users)
        assert files_holding(tmp_path / "shared-lancedb", MARKER) == []
        for user in users:
            assert acme_a.get(f"/v1/users/{user}/preferences").status_code == 404


def test_the_deletion_records_are_indexed_by_user_once_compacted(tmp_path):
    """A replica's chat looks its user up in the records (`Store.deleted_after`): past 64 records a
    compaction gives the table an index on `user_hash`, and lookups answer the same."""
    from pluralign.store import Store

    store = Store(str(tmp_path / "db"), "hash", 8)
    for i in range(70):
        store.record_deletion(new_deletion("acme", f"user-{i}", 1000.0 + i, 0))
    assert not store.deletions.list_indices()
    store.compact(every_table=True)
    assert [tuple(i.columns) for i in store.deletions.list_indices()] == [("user_hash",)]
    store.record_deletion(new_deletion("acme", "late", 5000.0, 1))  # after the index: scanned beside it
    assert store.deleted_after(user_hash("acme", "user-3"), 1000.0)
    assert not store.deleted_after(user_hash("acme", "user-3"), 1004.0)
    assert store.deleted_after(user_hash("acme", "late"), 4000.0)
    assert not store.deleted_after(user_hash("globex", "user-3"), 0.0)
    assert len(store.deletions_since(0)) == 71
