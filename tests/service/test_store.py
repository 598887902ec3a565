"""The LanceDB store on a temp folder: schemas and versions, per-user search, group commit, delete."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import msgspec
import numpy as np
import pytest

from pluralign.store import SCHEMA_VERSION, Store, StoredPreference, StoreError, UserRecord
from tests.files import files_holding

DIM = 8


def prefs(tenant, user, n, start=0):
    rows = [
        StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tenant}-{user}-{start + i}", prompt=f"q{start + i}",
                         chosen="yes", rejected="no", kind="comparison", created_at=time.time() + i * 1e-3)
        for i in range(n)
    ]
    rng = np.random.default_rng(start)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows, vecs, vecs, vecs


def test_tables_are_indexed_and_versioned(tmp_path):
    store = Store(str(tmp_path), "enc-a", DIM)
    store.add_preferences(*prefs("t", "u", 3))
    indexed = {(i.columns[0], i.index_type) for i in store.preferences.list_indices()}
    assert {("tenant", "Bitmap"), ("user_id", "Bitmap")} <= indexed
    assert store.preferences.schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert store.preferences.to_arrow().column("schema_version").to_pylist() == [SCHEMA_VERSION] * 3
    with pytest.raises(StoreError, match="encoder_id=enc-a"):
        Store(str(tmp_path), "enc-b", DIM)
    with pytest.raises(StoreError, match="dim=8"):
        Store(str(tmp_path), "enc-a", DIM * 2)
    assert Store(str(tmp_path), "enc-a", DIM).count_preferences("t", "u") == 3  # reopened: rows are on disk


def test_search_sees_only_the_users_rows_nearest_first(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, vecs, _, _ = prefs("t1", "ann", 5)
    store.add_preferences(rows, vecs, vecs, vecs)
    for tenant, user in (("t1", "bob"), ("t2", "ann")):
        store.add_preferences(*prefs(tenant, user, 5, start=10))
    hits = store.search("t1", "ann", vecs[2], limit=3)
    assert [h.pref_id for h, _ in hits][0] == rows[2].pref_id
    assert all(h.tenant == "t1" and h.user_id == "ann" for h, _ in hits)
    distances = [d for _, d in hits]
    assert distances == sorted(distances) and distances[0] == pytest.approx(0, abs=1e-5)
    page, total = store.preferences_for("t1", "ann", offset=1, limit=2)
    assert total == 5 and [p.prompt for p in page] == ["q1", "q2"]
    prompt, chosen, rejected = store.comparisons("t1", "ann")
    assert prompt.shape == (5, DIM) and store.count_comparisons("t1", "ann") == 5


def test_concurrent_writes_share_commits_and_all_land(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("t", "warm", 1))

    def writer(k):
        for i in range(10):
            store.add_preferences(*prefs("t", f"w{k}", 1, start=i))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    group = store._appends["preferences"]
    assert sum(store.count_preferences("t", f"w{k}") for k in range(6)) == 60
    assert group.submits == 61 and group.commits <= group.submits
    reopened = Store(str(tmp_path), "enc", DIM)
    assert reopened.stats()["preferences"] == 61


def test_users_upsert_and_delete_user(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.put_user(UserRecord(tenant="t", user_id="u", created_at=1, updated_at=1, pal_logits=[0.0, 1.0]))
    store.put_user(UserRecord(tenant="t", user_id="u", created_at=1, updated_at=2, pal_logits=[2.0, 1.0], attributes={"g": "a"}))
    user = store.get_user("t", "u")
    assert user.pal_logits == [2.0, 1.0] and user.attributes == {"g": "a"} and store.stats()["users"] == 1
    store.add_preferences(*prefs("t", "u", 4))
    store.add_preferences(*prefs("t", "v", 2))
    counts = store.delete_user("t", "u")
    assert counts == {"preferences": 4, "interactions": 0, "users": 1, "stated_changes": 0}
    assert store.get_user("t", "u") is None and store.count_preferences("t", "u") == 0
    assert store.count_preferences("t", "v") == 2
    old = store.db.open_table("preferences")  # no version kept on disk still holds the user's rows
    for version in old.list_versions():
        old.checkout(version["version"])
        assert old.count_rows("user_id = 'u'") == 0


def test_fitted_users_are_the_tenants_users_with_a_model_newest_row_each(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.put_user(UserRecord(tenant="t", user_id="a", created_at=1, updated_at=1, user_model=b"old"))
    store.put_user(UserRecord(tenant="t", user_id="a", created_at=1, updated_at=2, user_model=b"new"))
    store.put_user(UserRecord(tenant="t", user_id="b", created_at=1, updated_at=1, user_model=b"b"))
    store.put_user(UserRecord(tenant="t", user_id="c", created_at=1, updated_at=1))  # no model fitted yet
    store.put_user(UserRecord(tenant="other", user_id="d", created_at=1, updated_at=1, user_model=b"d"))
    found = {u.user_id: u.user_model for u in store.fitted_users("t", 10)}
    assert found == {"a": b"new", "b": b"b"}
    assert len(store.fitted_users("t", 1)) == 1 and store.fitted_users("t", 0) == []
    store.delete_user("t", "a")
    assert [u.user_id for u in store.fitted_users("t", 10)] == ["b"]


def pairs(tenant, user, prompts, vec_seed=0):
    """Comparisons of `prompts` (each its own pair of answers), in one commit, with random vectors."""
    rows = [StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tenant}-{user}-{p}", prompt=p, chosen=f"{p} short",
                             rejected=f"{p} long", kind="comparison", created_at=time.time()) for p in prompts]
    vecs = np.random.default_rng(vec_seed).standard_normal((len(rows), DIM)).astype(np.float32)
    return rows, vecs, vecs + 1, vecs - 1


def test_answers_sample_draws_from_the_whole_tenant_and_reads_past_refused_and_repeated_pairs(tmp_path):
    """It used to be the first `limit` rows in storage order: the same oldest rows for everyone."""
    store = Store(str(tmp_path), "enc", DIM)
    for chunk in range(4):  # four commits: q0-q49 oldest
        store.add_preferences(*pairs("t", "old", [f"q{i}" for i in range(50 * chunk, 50 * chunk + 50)], chunk))
    store.add_preferences(*pairs("t", "copycat", [f"q{i}" for i in range(50)]))  # the same pairs again
    store.add_preferences(*pairs("u", "other", ["elsewhere"]))
    prompts, answers, prompt_vec, answer_vec = store.answers_sample("t", 20, seed=1)
    assert len(prompts) == len(answers) == 40 and prompt_vec.shape == answer_vec.shape == (40, DIM)
    assert all(a == f"{p} short" for p, a in zip(prompts[::2], answers[::2], strict=True))  # each pair side by side
    assert any(int(p[1:]) >= 50 for p in prompts) and "elsewhere" not in prompts  # beyond the oldest rows, one tenant
    assert store.answers_sample("t", 20, seed=1)[0] == prompts and store.answers_sample("t", 20, seed=2)[0] != prompts
    every = store.answers_sample("t", 1000)[0][::2]
    assert sorted(every) == sorted(f"q{i}" for i in range(200))  # a pair stored by two users counts once
    # pairs refused by `keep` do not use up the sample: all ten kept ones are found among 200
    wanted = {f"q{i} short" for i in range(190, 200)}
    kept = store.answers_sample("t", 10, keep=lambda prompt, chosen, rejected: chosen in wanted, max_rows=1000)[1][::2]
    assert sorted(kept) == sorted(wanted)
    assert len(store.answers_sample("t", 10, keep=lambda p, c, r: c in wanted, max_rows=10)[1]) < 20  # only 10 rows read
    assert set(store.answers_sample("t", 1000, leave_out_user="old")[0][::2]) == {f"q{i}" for i in range(50)}  # copycat's
    with pytest.raises(ValueError, match="`per` must be one of question, pair"):  # what counts once: a question or a pair
        store.answers_sample("t", 10, per="prompt")


def test_answers_sample_reads_every_drawn_pair_when_a_compaction_commits_between_its_draw_and_its_read(tmp_path):
    """CI's failure (test_elicitation's onboarding from stored comparisons, 400 "no pair ... left"):
    a feedback POST starts a background compaction (`maybe_compact`) that committed after
    `answers_sample` had drawn its row ids and before it read their rows; the new fragments have new
    row ids, so the read found none of them and the tenant's one stored pair was not offered."""
    store = Store(str(tmp_path), "enc", DIM)
    for chunk in range(3):  # three fragments, which a compaction merges into one (new row ids)
        store.add_preferences(*pairs("t", "old", [f"q{i}" for i in range(10 * chunk, 10 * chunk + 10)], chunk))
    draw, compacted = store._draw_pairs, []

    def draw_then_compact(*args, **kwargs):
        out = draw(*args, **kwargs)
        if not compacted:
            store.compact(every_table=True)
            compacted.append(True)
        return out

    store._draw_pairs = draw_then_compact
    prompts, answers, prompt_vec, answer_vec = store.answers_sample("t", 30, seed=1)
    assert compacted and sorted(prompts[::2]) == sorted(f"q{i}" for i in range(30))
    assert len(answers) == 60 and prompt_vec.shape == answer_vec.shape == (60, DIM)


WRITER_APPENDS = 2000  # the most one-row commits of the writer beside the purges


def test_delete_purges_beside_other_writers_who_never_wait_for_the_rewrite(tmp_path):
    """Deletes of users while another user's appends keep coming: every append lands, none waits
    for a purge's rewrite (only for the short delete and version cleanup), and once each delete
    returns no file under the folder holds the deleted user's text or id."""
    store = Store(str(tmp_path), "enc", DIM)
    for user in ("bob", "cy"):
        store.add_preferences(*prefs("t", user, 40))
    stop, appended, waits, errors = threading.Event(), [], [], []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            rows, vecs, _, _ = prefs("t", "writer", 1, start=1000 + i)
            start = time.perf_counter()
            try:
                store.add_preferences(rows, vecs, vecs, vecs)
            except Exception as exc:  # noqa: BLE001 (the test reports it)
                errors.append(exc)
                return
            waits.append((start, time.perf_counter()))  # submitted, and committed by then
            appended.append(rows[0].pref_id)
            i += 1
            # a bounded stream: unbounded one-row commits outran the purges' rewrites on a loaded machine
            # (a CI run: 13,000 fragments and 9.5 GB after 10 minutes, each rewrite slower than the last)
            if i >= WRITER_APPENDS:
                return

    thread = threading.Thread(target=writer)
    thread.start()
    purges = []
    try:
        for n in range(6):
            user, marker = f"gone{n}", f"mk{n}zq9secret"
            rows, vecs, _, _ = prefs("t", user, 5, start=100 * n)
            store.add_preferences([StoredPreference(**{**__import__("msgspec").structs.asdict(r), "prompt": f"{marker} {r.prompt}"}) for r in rows], vecs, vecs, vecs)
            start = time.perf_counter()
            assert store.delete_user("t", user)["preferences"] == 5
            purges.append((start, time.perf_counter()))
            left = files_holding(tmp_path, marker, user)  # the writer's temporary files may come and go meanwhile
            assert left == [], left
    finally:
        stop.set()
        thread.join()
    assert errors == []
    # appends submitted and committed while a purge rewrote fragments and rebuilt indexes (submitted
    # past the delete's first fifth): with the write lock held for the whole purge there are none
    during = sum(1 for s, e in waits for a, b in purges if a + 0.2 * (b - a) < s and e < b)
    assert during >= 3, (during, [round(b - a, 3) for a, b in purges])
    assert store.count_preferences("t", "writer") == len(appended)  # no append lost to a rewrite or a cleanup
    assert store.count_preferences("t", "bob") == 40
    assert sorted(r.pref_id for r in store.preferences_for("t", "writer", 0, 10_000)[0]) == sorted(appended)


def test_a_purge_that_conflicts_with_appends_is_redone_with_appends_held(tmp_path, monkeypatch, caplog):
    """Beside a heavy stream of appends Lance can give up committing the purge's rewrite ("Commit
    conflict ... after 20 retries"). The DELETE must not fail with the rows deleted but still in the
    files: the rewrite is redone with appends held, and no file keeps the user's text."""
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("t", "bob", 20))
    rows, vecs, _, _ = prefs("t", "gone", 5, start=500)
    marker = "mk7zq9conflict"
    store.add_preferences([StoredPreference(**{**__import__("msgspec").structs.asdict(r), "prompt": f"{marker} {r.prompt}"}) for r in rows],
                          vecs, vecs, vecs)
    import pluralign.store.tables as tables

    real, calls = tables.compact_with_deletions, []

    def conflicting(table):
        calls.append(store._lock._is_owned())  # RLock: held by this thread
        if len(calls) == 1:
            raise OSError("Commit conflict for version 9: This CreateIndex transaction was preempted by concurrent "
                          "transaction Append at version 8. Please retry. (retried 20 times)")
        return real(table)

    monkeypatch.setattr(tables, "compact_with_deletions", conflicting)
    with caplog.at_level("WARNING", logger="pluralign.store"):
        assert store.delete_user("t", "gone")["preferences"] == 5
    assert calls[:2] == [False, True]  # first beside the appends, then again holding the write lock
    assert "redoing it with appends held" in caplog.text
    left = files_holding(tmp_path, marker)
    assert left == [] and store.count_preferences("t", "bob") == 20


def test_answers_sample_reads_every_drawn_pair_when_compactions_commit_beside_every_attempt(tmp_path):
    """Session 33: a compaction committing between the draw and the read of every attempt (a busy
    tenant's feedback starting one after another). Before: each of the DRAW_ATTEMPTS drew on the latest
    version and read on a newer one, so the last attempt too came back short (rows lost, pairs not
    offered). Now the last attempt draws and reads one pinned version."""
    store = Store(str(tmp_path), "enc", DIM)
    for chunk in range(3):
        store.add_preferences(*pairs("t", "old", [f"q{i}" for i in range(10 * chunk, 10 * chunk + 10)], chunk))
    draw, compactions = store._draw_pairs, []

    def draw_then_compact(*args, **kwargs):
        out = draw(*args, **kwargs)
        n = len(compactions)  # a row of another tenant, then a compaction: every row gets a new id
        store.add_preferences(*pairs("other", "x", [f"o{n}"], 10 + n))
        store.compact(every_table=True, keep_versions_for=timedelta(minutes=5))
        compactions.append(True)
        return out

    store._draw_pairs = draw_then_compact
    prompts, answers, prompt_vec, answer_vec = store.answers_sample("t", 30, seed=1)
    assert len(compactions) == 3
    assert sorted(prompts[::2]) == sorted(f"q{i}" for i in range(30))
    assert len(answers) == 60 and prompt_vec.shape == answer_vec.shape == (60, DIM)


def test_deletes_alone_on_the_store_remove_the_lease_tables_old_versions(tmp_path, monkeypatch):
    """A DELETE marks the purge and clears the mark (2 versions of the lease table); every TIDY_EVERY
    clears the old versions go, or the table kept 2 per DELETE for good."""
    import pluralign.store.lease as lease

    monkeypatch.setattr(lease, "TIDY_EVERY", 3)
    store = Store(str(tmp_path), "enc", DIM)
    for k in range(6):
        store.add_preferences(*prefs("t", f"u{k}", 2))
        store.delete_user("t", f"u{k}")
    versions = store.db.open_table(lease.TABLE).list_versions()
    assert len(versions) <= 2, [v["version"] for v in versions]
    assert store.stats()["preferences"] == 0 and not store.marks.pending()


def test_rows_received_again_count_as_received_since_for_another_process_too(tmp_path):
    """`received_again` moves the rows' `received_at` to now, no row added; another Store on the same
    tables whose cached history still holds the old times (same count of rows) tells it by `received_since`
    (a DELETE finished there keeps them). Ids not held, or deleted meanwhile, are not counted."""
    store = Store(str(tmp_path), "enc", DIM)
    rows, vecs, _, _ = prefs("t", "ann", 3)
    rows = [msgspec.structs.replace(r, received_at=1000.0 + i) for i, r in enumerate(rows)]
    store.add_preferences(rows, vecs, vecs, vecs)
    other = Store(str(tmp_path), "enc", DIM, sync_seconds=0.0)  # a replica: sees every commit at once
    assert len(other.preferences_for("t", "ann")[0]) == 3  # cached there, with the old times
    began = time.time()
    assert not store.received_since("t", "ann", began) and not other.received_since("t", "ann", began)
    assert store.received_again("t", "ann", [rows[0].pref_id, rows[0].pref_id, rows[2].pref_id, "not-held"]) == 2
    assert store.count_preferences("t", "ann") == 3
    times = {p.pref_id: p.received() for p in store.preferences_for("t", "ann")[0]}  # the cache was dropped
    assert times[rows[1].pref_id] == 1001.0 and min(times[rows[0].pref_id], times[rows[2].pref_id]) >= began
    assert other.received_since("t", "ann", began) and not other.received_since("t", "bob", began)
    store.delete_user("t", "ann")
    assert store.received_again("t", "ann", [rows[0].pref_id]) == 0


def test_interacted_since_counts_the_users_chats_from_a_time_on(tmp_path):
    """`interacted_since` (what a DELETE finished from the journal asks, `came_back`): a chat of the user created at
    or after the time; another user's, or one of theirs before it, does not count."""
    from pluralign.store.tables import Interaction

    store = Store(str(tmp_path), "enc", DIM)
    for user, at in (("ann", 1000.0), ("ann", 1002.5), ("bob", 3000.0)):
        store.add_interaction(Interaction(tenant="t", user_id=user, response_id=f"{user}-{at}", created_at=at, prompt="Tea?",
                                          messages=[{"role": "user", "content": "Tea?"}], candidates=["Yes."], scores=[0.1],
                                          chosen_index=0, history=[], model="m"))
    assert store.interacted_since("t", "ann", 1002.5) and store.interacted_since("t", "ann", 1001.0)
    assert not store.interacted_since("t", "ann", 1002.6) and not store.interacted_since("u", "ann", 0.0)
    assert store.interacted_since("t", "bob", 2999.0) and not store.interacted_since("t", "carl", 0.0)


def test_a_preferences_commit_that_met_another_is_made_again_and_other_errors_are_not(tmp_path, caplog):
    """`received_again` and `delete_copy` share one retry (`Store._committed_to_preferences`, session 51): a commit Lance
    refused for another's coming first is made again on the newest version and its result returned, with a warning
    naming which commit; an error that is no conflict is raised at once, after one try."""
    store = Store(str(tmp_path), "enc", DIM)
    rows, vecs, _, _ = prefs("t", "ann", 2)
    store.add_preferences(rows, vecs, vecs, vecs)
    table = store.tables["preferences"]
    tries = []

    def refused_first(method, exc):
        def call(*args, **kwargs):
            tries.append(method)
            if len(tries) == 1:
                raise exc
            return getattr(type(table), method)(table, *args, **kwargs)
        return call

    table.update = refused_first("update", RuntimeError("lance error: Retryable commit conflict for version 3"))
    with caplog.at_level("WARNING", logger="pluralign.store"):
        assert store.received_again("t", "ann", [rows[0].pref_id]) == 1
    assert tries == ["update", "update"]
    assert "a received_at update met another commit on preferences" in caplog.text
    tries.clear()
    table.update = refused_first("update", ValueError("lance error: LanceError(Schema): no field `x`"))
    with pytest.raises(ValueError, match="no field"):
        store.received_again("t", "ann", [rows[0].pref_id])
    assert tries == ["update"]
    del table.update
    tries.clear()
    [held] = table.search().where(f"pref_id = '{rows[1].pref_id}'").select(["received_at"]).with_row_id(True).to_list()
    row = msgspec.structs.replace(rows[1], received_at=held["received_at"])
    table.delete = refused_first("delete", OSError("lance error: Incompatible transaction: a compaction committed first"))
    with caplog.at_level("WARNING", logger="pluralign.store"):
        assert store.delete_copy(row, held["_rowid"]) == 1
    assert tries == ["delete", "delete"]
    assert "a delete of a row stored twice met another commit on preferences" in caplog.text
    assert [p.pref_id for p in store.preferences_for("t", "ann")[0]] == [rows[0].pref_id]


def test_a_purge_rewrites_a_fragment_the_deleted_user_shares_with_another(tmp_path):
    """gaps62: one `add` of two users' rows makes one fragment holding both; deleting the one with a
    row in twenty leaves it 5% deleted, under Lance's default threshold (10%) for rewriting a fragment. Only
    the purge's `materialize_deletions_threshold=0.0` (`pluralign.store.versions.compact_with_deletions`)
    takes the row out of the data file; the other purge tests give each user a fragment of their own,
    dropped whole. The same purge on moto's S3: tests/service/test_review38l_s3_versions.py."""
    (gone, gone_vecs, *_), (kept, kept_vecs, *_) = prefs("t", "ivy", 1), prefs("t", "joe", 19, start=1)
    gone = [msgspec.structs.replace(r, prompt="zq62ivy secret") for r in gone]
    vecs = np.concatenate([gone_vecs, kept_vecs])
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(gone + kept, vecs, vecs, vecs)  # one commit: one fragment
    assert len(store.preferences.to_lance().get_fragments()) == 1
    assert files_holding(tmp_path, "zq62ivy")  # the search below can find the row's text
    assert store.delete_user("t", "ivy")["preferences"] == 1
    assert files_holding(tmp_path, "zq62ivy") == []
    assert sorted(p.prompt for p in store.preferences_for("t", "joe", 0, 100)[0]) == sorted(f"q{i}" for i in range(1, 20))
