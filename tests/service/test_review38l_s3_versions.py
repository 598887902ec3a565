"""Session 38 review: `pluralign.store.versions` (Lance's own dataset calls, in place of lancedb's
deprecated `cleanup_old_versions` / `compact_files`) on an object store: moto's S3 on loopback
(`tests/s3.py`), the store's credentials and endpoint given only as storage options. The dataset those
calls open must reach the bucket with them; old versions must really go from the bucket, and a purged
user's text from every object of it, while what the store still reads stays."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from pluralign.store import StoredPreference
from pluralign.store.tables import Store
from tests.s3 import S3Server
from tests.together import at_once

DIM = 8


@pytest.fixture(scope="module")
def s3():
    with S3Server("pluralign-versions38") as server:
        yield server


def objects(s3, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` of the bucket, by key."""
    client, found, token = s3.client(), {}, {}
    while True:
        page = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix, **token)
        for item in page.get("Contents", []):
            found[item["Key"]] = client.get_object(Bucket=s3.bucket, Key=item["Key"])["Body"].read()
        if not page.get("IsTruncated"):
            return found
        token = {"ContinuationToken": page["NextContinuationToken"]}


def versions_in_bucket(s3, prefix: str, table: str) -> int:
    return sum(1 for key in objects(s3, f"{prefix}/{table}.lance/_versions/") if key.endswith(".manifest"))


def rows(user: str, n: int = 3):
    marker = f"zq38{user}marker"  # one string per user, to look for in the bucket's bytes
    prefs = [StoredPreference(tenant="t", user_id=user, pref_id=f"t-{user}-{i}", prompt=f"{marker} question {i}",
                              chosen="yes", rejected="no", kind="comparison", created_at=time.time() + i * 1e-3)
             for i in range(n)]
    vecs = np.random.default_rng(len(user)).standard_normal((n, DIM)).astype(np.float32)
    return prefs, vecs, vecs, vecs


def holding(s3, prefix: str, needle: str) -> list[str]:
    return [key for key, data in objects(s3, prefix).items() if needle.encode() in data]


@pytest.mark.slow  # ~3.8 CPU-s; fast: a purge that clears the bucket of the user's text on its next turn (the refused delete
# below), and a purge's removal of old versions and the lease table's tidy on a folder (tests/service/test_store.py)
def test_a_stores_deletes_on_s3_remove_old_versions_and_the_users_text_from_the_bucket(s3, monkeypatch):
    """Alone on the store (no lease): each DELETE's purge rewrites the fragments with deletions and
    removes every older version (delete_unverified); every TIDY_EVERY clears the lease table's old
    versions go too. Counted as manifests in the bucket, not as LanceDB lists them."""
    import pluralign.store.lease as lease

    monkeypatch.setattr(lease, "TIDY_EVERY", 3)
    store = Store(s3.uri("alone"), "enc", DIM, storage_options=s3.options)
    for user in ("ann", "bob", "cy", "kept"):
        store.add_preferences(*rows(user))
    assert holding(s3, "alone/", "zq38annmarker")  # the search below can find a row's text
    assert versions_in_bucket(s3, "alone", "preferences") >= 4
    for user in ("ann", "bob", "cy"):
        assert store.delete_user("t", user)["preferences"] == 3
    assert versions_in_bucket(s3, "alone", "preferences") == 1
    assert versions_in_bucket(s3, "alone", lease.TABLE) <= 2
    assert [k for u in ("ann", "bob", "cy") for k in holding(s3, "alone/", f"zq38{u}marker")] == []
    again = Store(s3.uri("alone"), "enc", DIM, storage_options=s3.options)  # another process reads what is left
    assert again.count_preferences("t", "kept") == 3 and again.stats()["preferences"] == 3
    assert holding(s3, "alone/", "zq38keptmarker")


@pytest.mark.slow  # ~8 s: each purge waits sync_seconds + READ_MARGIN_S; fast: test_a_delete_whose_old_versions_the_bucket_...
def test_two_replicas_deleting_at_once_on_s3_leave_one_version_readable_and_no_deleted_text(s3):
    """Two replicas (`sync_seconds`: the lease, old versions kept `sync_seconds` + READ_MARGIN_S past
    the purge) each DELETE a user at the same moment: both answer, the kept user's rows read from a
    third process, and neither deleted user's text is left in any object of the bucket."""
    a = Store(s3.uri("twice"), "enc", DIM, storage_options=s3.options, sync_seconds=0.0)
    b = Store(s3.uri("twice"), "enc", DIM, storage_options=s3.options, sync_seconds=0.0)
    for user in ("dee", "eve", "kept"):
        a.add_preferences(*rows(user))
    b.refresh(*b.tables)
    assert holding(s3, "twice/", "zq38deemarker") and holding(s3, "twice/", "zq38evemarker")
    done = at_once(lambda: a.delete_user("t", "dee"), lambda: b.delete_user("t", "eve"))
    assert [d["preferences"] if isinstance(d, dict) else d for d in done] == [3, 3], done
    assert holding(s3, "twice/", "zq38deemarker") + holding(s3, "twice/", "zq38evemarker") == []
    reader = Store(s3.uri("twice"), "enc", DIM, storage_options=s3.options, sync_seconds=0.0)
    assert reader.count_preferences("t", "kept") == 3 and reader.stats()["preferences"] == 3
    assert versions_in_bucket(s3, "twice", "preferences") <= 3  # the purges' own, kept READ_MARGIN_S for readers


@pytest.mark.slow  # ~2.1 CPU-s; fast: tests/unit/test_replica_clocks.py's tidy on a folder, and its replicas on moto's S3
def test_a_replicas_clock_table_on_s3_keeps_only_its_newest_versions(s3, monkeypatch):
    """The clock table's tidy (`remove_old_versions`) every TIDY_EVERY beats, on S3: the versions older
    than KEEP_VERSIONS leave the bucket."""
    import lancedb

    import pluralign.store.clocks as clocks
    from pluralign.store.clocks import ReplicaClocks

    monkeypatch.setattr(clocks, "TIDY_EVERY", 4)
    monkeypatch.setattr(clocks, "KEEP_VERSIONS", timedelta(0))
    db = lancedb.connect(s3.uri("clocks"), storage_options=s3.options, read_consistency_interval=timedelta(0))
    replica = ReplicaClocks(db, 0, stale_after_s=60)
    for _ in range(12):
        replica.beat()
    assert versions_in_bucket(s3, "clocks", clocks.TABLE) <= 4


def test_a_delete_whose_old_versions_the_bucket_refuses_to_remove_says_so_and_is_finished_later(s3, monkeypatch):
    """A bucket that refuses deletes (a policy without s3:DeleteObject, a retention rule, a 5xx on
    DeleteObjects): Lance's cleanup counts the files it could not delete (`failed_deletes`) and raises
    nothing. Before: `delete_user` returned, its purge mark cleared, as if no file held the user's rows,
    while every old version, with their text, stayed in the bucket. Now: the store raises naming the table
    (StoreUnavailable, "cleared of its old versions"), `problems` shows it, the mark stays, and the next
    turn, once the bucket deletes again, removes them."""
    from pluralign.store.failures import OLD_VERSIONS, StoreUnavailable
    from tests.s3 import FaultyProxy

    with FaultyProxy(s3.endpoint) as proxy:
        store = Store(s3.uri("refused"), "enc", DIM, storage_options={**s3.options, "aws_endpoint": proxy.endpoint,
                                                                       "client_max_retries": "0"})
        for user in ("fay", "kept"):
            store.add_preferences(*rows(user))
        proxy.fault = lambda method, path, headers: (
            (403, "AccessDenied") if method == "DELETE" or (method == "POST" and path.endswith("?delete")) else None)
        with pytest.raises(StoreUnavailable) as refused:
            store.delete_user("t", "fay")
        assert (refused.value.name, refused.value.action, refused.value.problem) == ("table `preferences`", OLD_VERSIONS, "not-removed")
        assert "could not be deleted" in str(refused.value), str(refused.value)
        assert [p["action"] for p in store.problems.recent()] == [OLD_VERSIONS]
        assert store.marks.pending() == {"preferences"} and holding(s3, "refused/", "zq38faymarker")
        proxy.fault = lambda method, path, headers: None
        assert store.delete_user("t", "nobody")["preferences"] == 0  # the next turn finishes the purge
        assert holding(s3, "refused/", "zq38faymarker") == [] and not store.marks.pending()
        assert store.problems.recent() == [] and store.count_preferences("t", "kept") == 3


@pytest.mark.slow  # ~10 s: the service on S3 through a proxy; fast: test_a_delete_whose_old_versions_the_bucket_refuses_...
def test_over_http_a_delete_the_bucket_cannot_clear_is_a_503_and_health_names_the_table(serve, s3):
    """The same refused deletes as the service's client sees them: the DELETE is a 503 saying the old
    versions of `preferences` could not be removed and that the service finishes it, /health is degraded
    naming the table and `not-removed`, and both clear once the bucket deletes again (a DELETE sent again)."""
    from pluralign.store.failures import OLD_VERSIONS
    from tests.s3 import FaultyProxy

    with FaultyProxy(s3.endpoint) as proxy:
        data, server, svc = serve(**s3.settings("http", proxy.endpoint), store_retries=1)
        with server, svc.client("acme") as c:
            body = {"type": "comparison", "user": "gus", "prompt": "zq38gusmarker tea?", "chosen": "Yes.", "rejected": "No."}
            assert c.post("/v1/feedback", json=body).status_code == 201
            assert c.get("/v1/users/gus/preferences").json()["total"] == 1
            proxy.fault = lambda method, path, headers: (
                (403, "AccessDenied") if method == "DELETE" or (method == "POST" and path.endswith("?delete")) else None)
            r = c.delete("/v1/users/gus")
            assert r.status_code == 503, r.text
            message = r.json()["error"]["message"]
            assert "table `preferences` cannot be cleared of its old versions" in message and "recorded" in message, message
            health = c.get("/health").json()
            assert health["status"] == "degraded", health
            assert [(p["what"], p["action"], p["problem"]) for p in health["storage"]] == [("table `preferences`", OLD_VERSIONS, "not-removed")], health
            assert holding(s3, "http/", "zq38gusmarker")
            proxy.fault = lambda method, path, headers: None
            assert c.delete("/v1/users/gus").status_code in (200, 404)
            assert c.get("/health").json()["status"] == "ok"
            assert holding(s3, "http/", "zq38gusmarker") == []


def test_a_delete_whose_lease_table_tidy_meets_an_s3_error_is_still_answered(s3, monkeypatch, caplog):
    """Every TIDY_EVERY clears, a DELETE's last step removes the lease table's old versions (`PurgeMarks`),
    which "logs, and leaves them, when Lance cannot". Lance raises an object store's failure there as a
    ValueError ("LanceError(IO): ... Error performing GET ..."), which it did not catch: the DELETE, its
    user's rows and old versions already gone, raised it (a 500). Now it is logged and the DELETE returns."""
    import pluralign.store.lease as lease
    from tests.s3 import FaultyProxy

    monkeypatch.setattr(lease, "TIDY_EVERY", 1)
    with FaultyProxy(s3.endpoint) as proxy:
        store = Store(s3.uri("tidy"), "enc", DIM, storage_options={**s3.options, "aws_endpoint": proxy.endpoint,
                                                                    "client_max_retries": "0"})
        store.add_preferences(*rows("hal"))
        # only the removal reads the lease table's manifests back (a commit reads what it holds)
        proxy.fault = lambda method, path, headers: (
            (500, "InternalError") if method == "GET" and "/maintenance_lease.lance/_versions/" in path else None)
        with caplog.at_level("WARNING", logger="pluralign.store"):
            assert store.delete_user("t", "hal")["preferences"] == 3
        assert "old versions of the maintenance lease table not removed" in caplog.text, caplog.text
        assert not store.marks.pending() and holding(s3, "tidy/", "zq38halmarker") == []


def test_a_replica_on_s3_reads_the_commits_transactions_with_the_stores_credentials(s3):
    """Review of replicas44: a replica checks a cached history by a count while every commit since only added rows,
    which it reads from the commits' transactions (`Store._operation_of`, a dataset it opens itself): on an object
    store that dataset must reach the bucket with the store's storage options. Another replica's appends of other
    users' rows are then checked without reading the user's rows; its DELETE and an import of as many rows are seen."""
    import msgspec

    from pluralign.store.tables import owner_filter

    a = Store(s3.uri("commits44"), "enc", DIM, storage_options=s3.options, sync_seconds=0.0)
    b = Store(s3.uri("commits44"), "enc", DIM, storage_options=s3.options, sync_seconds=0.0)
    a.add_preferences(*rows("ann"))
    assert len(b.history("t", "ann")) == 3
    read_rows, row_keys = [], b._row_keys
    b._row_keys = lambda tenant, user_id: read_rows.append(user_id) or row_keys(tenant, user_id)
    a.add_preferences(*rows("bob"))
    assert b.count_preferences("t", "ann") == 3 and read_rows == []
    assert b._operation_of(b.preferences.version) == "Append"
    a.preferences.delete(owner_filter("t", "ann"))
    again = rows("ann")
    a.add_preferences([msgspec.structs.replace(r, pref_id=r.pref_id + "-again") for r in again[0]], *again[1:])
    assert sorted(b.history("t", "ann").meta.column("pref_id").to_pylist()) == [f"t-ann-{i}-again" for i in range(3)]
    assert read_rows == ["ann"]


@pytest.mark.slow  # ~1.4 CPU-s; fast: tests/service/test_store.py::test_a_purge_rewrites_a_fragment_the_deleted_user_shares_with_another
# (the same purge, `compact_with_deletions`, on a folder)
def test_a_purge_on_s3_rewrites_a_fragment_the_deleted_user_shares_with_another(s3):
    """gaps62: one `add` of two users' rows makes one fragment holding both. Deleting the one with
    a row in twenty leaves that fragment 5% deleted, under Lance's default threshold (10%) for rewriting
    it: only the purge's `materialize_deletions_threshold=0.0` (`compact_with_deletions`) takes the row
    out of the data file. Each other purge test here gives every user a fragment of their own, dropped
    whole, so it passed without the threshold."""
    (gone, gone_vecs, *_), (kept, kept_vecs, *_) = rows("ivy", 1), rows("joe", 19)
    vecs = np.concatenate([gone_vecs, kept_vecs])
    store = Store(s3.uri("shared"), "enc", DIM, storage_options=s3.options)
    store.add_preferences(gone + kept, vecs, vecs, vecs)  # one commit: one fragment
    assert len(store.preferences.to_lance().get_fragments()) == 1  # both users' rows in one fragment
    assert holding(s3, "shared/", "zq38ivymarker")  # the search below can find the row's text
    assert store.delete_user("t", "ivy")["preferences"] == 1
    assert holding(s3, "shared/", "zq38ivymarker") == []
    assert holding(s3, "shared/", "zq38joemarker")
    again = Store(s3.uri("shared"), "enc", DIM, storage_options=s3.options)  # another process reads what is left
    assert [p.prompt for p in again.preferences_for("t", "joe", 0, 100)[0]] == [f"zq38joemarker question {i}" for i in range(19)]
