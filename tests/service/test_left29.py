"""Leftovers of the upgrade and uptime work: a process that only reads an older release's store
changes none of its tables, every command that opens a store refuses a newer release's folder, ..."""

from __future__ import annotations

import shutil
from pathlib import Path

import lancedb
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"


def tables_as_they_are(store: Path) -> dict[str, tuple[int, list[str], dict]]:
    """Each table's version, column names and schema metadata."""
    db = lancedb.connect(str(store))
    out = {}
    for name in db.list_tables().tables:
        table = db.open_table(name)
        out[name] = (table.version, table.schema.names, dict(table.schema.metadata or {}))
    return out


@pytest.mark.parametrize("commit", ["b7168d1", "2a4712d"])
def test_a_process_that_only_reads_an_older_releases_store_changes_none_of_its_tables(tmp_path, commit):
    """`pluralign train adapter --store` beside an older release's serve (`finish_purges=False`): it
    added this release's columns (`received_at`, ...) to that release's tables, commits that can clash
    with the serve's own writes. Now it reads the tables as they are (the columns they lack read as
    null) and commits nothing to them; a write through it is refused, naming the table."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import Store, StoreError
    from pluralign.store.tables import StoredPreference

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / commit / "data" / "lancedb", data)
    before = tables_as_they_are(data)
    reader = Store(str(data), MINILM_ID, 384, finish_purges=False)
    rows, total = reader.preferences_for("default", "alice")
    assert total == len(rows) >= 10 and all(r.received_at is None and r.received() == r.created_at for r in rows)
    history = reader.history("default", "alice")
    assert len(history) == total and len(history.comparison_set()[3]) > 0
    reader.histories.invalidate([("default", "alice")])  # a search without the cached history: LanceDB's
    nearest = reader.search("default", "alice", history.prompt_vec[0], 3)
    assert len(nearest) == 3 and nearest[0][1] == pytest.approx(0.0, abs=1e-5)
    assert {(p.user_id, p.received_at) for p in reader.all_comparisons() if p.tenant == "default"} >= {("alice", None)}
    assert len(reader.interactions_for("default", "alice")) == reader.count_interactions("default", "alice") > 0
    assert reader.get_user("default", "alice").user_id == "alice"
    assert isinstance(reader.fitted_users("default", 10), list)
    one = StoredPreference(tenant="default", user_id="zed", pref_id="p-new", prompt="q", chosen="a", rejected="b", kind="comparison", created_at=1.0)
    vec = np.ones((1, 384), np.float32)
    with pytest.raises(StoreError) as refused:
        reader.add_preferences([one], vec, vec, vec)
    assert "`preferences`" in str(refused.value) and "only reads" in str(refused.value)
    after = tables_as_they_are(data)
    assert {name: after[name] for name in before} == before  # not a commit to any of its tables


def marked_by_a_newer_release(tmp_path: Path, table: str) -> Path:
    """A copy of the b7168d1 data folder that today's code has opened and a later release then marked
    (`table` only: a newer release marks table by table too)."""
    from pluralign.embed.encoders import MINILM_ID
    from pluralign.store import SCHEMA_VERSION, Store

    data = tmp_path / "data"
    shutil.copytree(FIXTURES / "b7168d1" / "data", data)
    Store(str(data / "lancedb"), MINILM_ID, 384)
    lancedb.connect(str(data / "lancedb")).open_table(table).to_lance().update_schema_metadata({"schema_version": str(SCHEMA_VERSION + 1)})
    return data


@pytest.mark.parametrize("table", ["preferences", "users"])
def test_audit_of_a_store_a_newer_release_marked_is_refused_as_serve_refuses_it(tmp_path, capsys, table):
    """`pluralign audit --store` read such a folder's tables straight from LanceDB and reported on
    them (its rows may not read back under this release). Now it refuses as `serve` does: one line,
    exit 2, naming the table, both versions and what to do, and nothing is written."""
    from pluralign.store import SCHEMA_VERSION
    from tests.unit.clitools import cli

    data = marked_by_a_newer_release(tmp_path, table)
    before = tables_as_they_are(data / "lancedb")
    code, out, err = cli(capsys, "audit", "--store", str(data / "lancedb"), "--group-by", "segment", "--json")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith(f"pluralign: error: table `{table}` at {data / 'lancedb'} has schema_version={SCHEMA_VERSION + 1}: a newer pluralign release")
    assert f"this one writes {SCHEMA_VERSION}" in err and "run that release" in err
    assert tables_as_they_are(data / "lancedb") == before


def test_train_adapter_of_a_store_a_newer_release_marked_is_refused_the_same_way(tmp_path, capsys, monkeypatch, minilm):
    """The other command that opens a store (`Store`, as `serve` does): the same line, exit 2, before any training."""
    from pluralign.store import SCHEMA_VERSION
    from tests.unit.clitools import cli

    monkeypatch.delenv("PLURALIGN_ADAPTERS_DIR", raising=False)
    data = marked_by_a_newer_release(tmp_path, "users")
    before = tables_as_they_are(data / "lancedb")
    adapters = lambda: sorted(p.relative_to(data) for p in (data / "adapters").rglob("*"))  # noqa: E731
    had = adapters()
    code, out, err = cli(capsys, "train", "adapter", "--user", "alice", "--store", str(data), "--steps", "1")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
    assert err.startswith(f"pluralign: error: table `users` at {data / 'lancedb'} has schema_version={SCHEMA_VERSION + 1}: a newer pluralign release")
    assert tables_as_they_are(data / "lancedb") == before and adapters() == had


def test_a_file_gone_from_a_bucket_still_there_is_still_an_unreadable_file(tmp_path):
    """The bucket is looked for only when a read fails, and only a bucket that is gone is said to be
    (test_break28_object_store's deleted bucket): a table file removed from a bucket that is still there
    is a damaged table, as before."""
    from pluralign.store import Store
    from pluralign.store.failures import StoreUnavailable
    from pluralign.store.tables import StoredPreference
    from tests.s3 import S3Server

    with S3Server("pluralign-left29") as s3:
        store = Store(s3.uri("p"), "enc", 4, storage_options=s3.options)
        rows = [StoredPreference(tenant="t", user_id="u", pref_id=f"p{i}", prompt="q", chosen="a", rejected="b", kind="comparison",
                                 created_at=1.0) for i in range(3)]
        vec = np.ones((3, 4), np.float32)
        store.add_preferences(rows, vec, vec, vec)
        client = s3.client()
        for item in client.list_objects_v2(Bucket=s3.bucket, Prefix="p/preferences.lance/").get("Contents", []):
            if "/data/" in item["Key"] or "/_indices/" in item["Key"]:
                client.delete_object(Bucket=s3.bucket, Key=item["Key"])
        with pytest.raises(StoreUnavailable) as failed:
            store.history("t", "u")
        assert failed.value.problem == "unreadable" and failed.value.action == "read", failed.value
