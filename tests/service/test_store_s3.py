"""The tables on an S3-compatible server (moto on loopback): what the service and an audit worker read."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from pluralign.fairness.store_source import comparisons_from_store
from pluralign.store import Store, StoredPreference
from pluralign.store.location import options_from_env, options_to_env
from tests.s3 import S3Server
from tests.together import at_once
from tests.unit.test_review_scale62 import indexes, without_the_version_index

pytestmark = pytest.mark.usefixtures("short_read_margin")  # a replica DELETE's wait for readers: tests/service/conftest.py

DIM = 8


@pytest.fixture(scope="module")
def s3():
    with S3Server("pluralign-unit") as server:
        yield server


def test_an_audit_worker_reads_the_bucket_with_the_settings_it_was_handed(s3, monkeypatch):
    store = Store(s3.uri("audit"), "enc", DIM, storage_options=s3.options)
    rows = [
        StoredPreference(tenant="t", user_id=f"u{i % 3}", pref_id=f"p{i}", prompt=f"q{i}", chosen="yes", rejected="no",
                         kind="comparison", created_at=float(i), attributes={"segment": "a" if i % 2 else "b"})
        for i in range(6)
    ]
    vectors = np.random.default_rng(0).standard_normal((6, DIM)).astype(np.float32)
    store.add_preferences(rows, vectors, vectors, -vectors)
    # the job runner hands a worker the store's settings as variables; the worker turns them back into options
    env = options_to_env(s3.options)
    assert options_from_env(env) == s3.options
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = comparisons_from_store(s3.uri("audit"), "segment")
    assert len(found.diff) == 6 and sorted(found.groups) == ["a", "b"]


@pytest.mark.slow  # ~2.5 CPU-s; fast: tests/service/test_store_replicas.py::test_replicas_take_turns_at_maintenance (a folder), the
# lease on S3's failures in tests/service/test_ops39_lease_s3.py
def test_two_replicas_on_a_bucket_take_turns_at_maintenance(s3):
    """The maintenance lease (`pluralign.store.lease`) on an object store: a second replica's DELETE
    waits while the first holds the lease, then runs."""
    import threading

    from tests.service.test_store import prefs

    a = Store(s3.uri("lease"), "enc", 8, storage_options=s3.options, sync_seconds=0)
    b = Store(s3.uri("lease"), "enc", 8, storage_options=s3.options, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    done = threading.Event()
    with a.lease:
        worker = threading.Thread(target=lambda: (b.delete_user("t", "u"), done.set()))
        worker.start()
        assert not done.wait(0.5)
    assert done.wait(30)
    worker.join()
    assert a.count_preferences("t", "u") == 0 and a.lease.holder == ""


def test_tables_an_earlier_release_marked_are_marked_again_on_the_bucket(s3):
    """The upgrade's mark (docs/operations.md, 'Upgrading and rolling back') on object storage: a table
    marked schema_version=1 by an earlier release is marked with this one's when the store opens,
    through the store's own storage options; and the index on `stated_changes.version` is made then (review scale62)."""
    import lancedb

    from pluralign.store import SCHEMA_VERSION

    without_the_version_index(Store(s3.uri("upgrade"), "enc", DIM, storage_options=s3.options))  # nor an index on it
    db = lancedb.connect(s3.uri("upgrade"), storage_options=s3.options)
    for name in ("preferences", "users"):
        db.open_table(name).to_lance().update_schema_metadata({"schema_version": "1"})
    assert db.open_table("users").schema.metadata[b"schema_version"] == b"1"
    store = Store(s3.uri("upgrade"), "enc", DIM, storage_options=s3.options)
    for name in ("preferences", "users"):
        assert store.tables[name].schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
        assert db.open_table(name).schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert ("version", "BTree") in indexes(db.open_table("stated_changes"))  # made at the open (review scale62)


def test_a_replicas_store_on_a_bucket_claims_an_imports_ids_on_the_bucket(s3):
    """A replica's store on S3 (`sync_seconds` set) claims each id an import carries on the bucket itself
    (`claims_for`: `S3Claims`, put-if-absent), where another replica's claims meet it: other content under the id is
    taken (the 409 of tests/service/test_replica40_id_race.py's slow race over HTTP on moto), the same preference,
    stamped on receipt or not, is held. Without claims a store on S3 would answer both imports 201 and its mover
    drop one."""
    from pluralign.store.claims import S3Claims, claim_of

    def claim(chosen: str, stamped: bool = False):
        row = StoredPreference(tenant="acme", user_id="u", pref_id="p-1", prompt="Tea?", chosen=chosen, rejected="No.",
                               kind="comparison", created_at=1.0, received_at=2.0)
        return {"p-1": claim_of(row, stamped=stamped)}

    store = Store(s3.uri("claims"), "enc", DIM, storage_options=s3.options, sync_seconds=1.0)
    assert store.claims.claim("acme", "u", claim("Tea.")) == (["p-1"], {})
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="claims/").get("Contents", [])]
    assert [k for k in keys if "/pref_id_claims/" in k], keys  # on the bucket, beside the tables
    other = S3Claims(s3.uri("claims"), s3.options)  # another replica's
    assert list(other.claim("acme", "u", claim("Coffee."))[1]) == ["p-1"]
    assert other.claim("acme", "u", claim("Tea.", stamped=True)) == ([], {})


@pytest.mark.slow  # ~4.9 CPU-s (three trials); fast: the mark on the bucket just above, and replicas started together on an
# earlier release's folder (tests/service/test_upgrade29.py::test_replicas_started_together_on_an_older_releases_store_all_start)
def test_replicas_started_together_on_an_earlier_releases_bucket_both_mark_it(s3):
    """Two replicas of the new release started at once on a bucket whose tables an earlier release
    marked schema_version=1 (tests/service/test_upgrade29.py has the local folder): both start, and each
    table ends with this release's mark."""
    import lancedb

    from pluralign.store import SCHEMA_VERSION

    for trial in range(3):
        uri = s3.uri(f"together{trial}")
        Store(uri, "enc", DIM, storage_options=s3.options)
        db = lancedb.connect(uri, storage_options=s3.options)
        for name in ("preferences", "interactions", "users", "stated_changes", "deletions"):
            db.open_table(name).to_lance().update_schema_metadata({"schema_version": "1"})
        started = at_once(*[partial(Store, uri, "enc", DIM, storage_options=s3.options, sync_seconds=1.0)] * 2)
        assert [s for s in started if isinstance(s, BaseException)] == []
        for name in ("preferences", "users"):
            assert db.open_table(name).schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
