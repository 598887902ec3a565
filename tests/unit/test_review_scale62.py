"""review scale62: a user's texts read a batch of rows at a time (`Store.texts_in_batches`), and the whole list of them
(`Store.texts_of`, a tenant's removal's read of a batch of users before its turn) read again when it met a DELETE's removal
of old versions, as every `_uses` read is (`Store._read`), with nothing noted for /health when the read again succeeds."""

from __future__ import annotations

import pyarrow as pa
import pytest
from lancedb.query import LanceEmptyQueryBuilder

from pluralign.store import Store
from tests.service.test_store import DIM, prefs

REMOVED = "LanceError(IO): Not found: preferences.lance/data/x.lance"  # a file a removal of old versions took


@pytest.fixture
def store(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("acme", "bob", 3))
    return store


def removed_once(monkeypatch, where: str) -> list[int]:
    """The next read of the preferences table's texts meets a file removed meanwhile (`where`: "start", when the read
    begins, or "batch", at its first batch); the reads made, as [1, ...]."""
    real, reads = LanceEmptyQueryBuilder.to_batches, []

    def read(self, *args, **kwargs):
        if self._table.name != "preferences" or "prompt" not in (self._columns or []):
            return real(self, *args, **kwargs)
        reads.append(1)
        if len(reads) == 1 and where == "start":
            raise OSError(REMOVED)
        reader = real(self, *args, **kwargs)
        if len(reads) > 1:
            return reader

        def batches():
            raise OSError(REMOVED)
            yield

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    monkeypatch.setattr(LanceEmptyQueryBuilder, "to_batches", read)
    return reads


@pytest.mark.parametrize("where", ["start", "batch"])
def test_the_texts_read_whole_that_meet_a_removal_of_old_versions_are_read_again_and_leave_health_alone(store, monkeypatch, where):
    reads = removed_once(monkeypatch, where)
    assert sorted(store.texts_of("acme", ["bob"])) == sorted(["no"] * 3 + ["yes"] * 3 + ["q0", "q1", "q2"])
    assert len(reads) == 2
    assert store.problems.recent() == [], "a read that was read again, whole, noted as a damaged table"


def without_the_version_index(store: Store) -> None:
    """The user's stated changes as an earlier release left them: BITMAPs on the owner, no index on `version`."""
    store.add_stated_changes("acme", "bob", [{"version": v, "at": float(v), "feature": "length", "direction": "more"} for v in (1, 2, 3)])
    table = store.tables["stated_changes"]
    for index in table.list_indices():
        if index.columns == ["version"]:
            table.drop_index(index.name)


def indexes(table) -> set[tuple[str, str]]:
    return {(i.columns[0], i.index_type) for i in table.list_indices()}


def test_a_store_an_earlier_release_made_gains_the_index_on_version_when_it_opens(store, tmp_path):
    """The index a PATCH finds its current version by (scale62, `RANGE_INDEXED`) is made on a store an earlier release
    made, when this release opens it; a PATCH before that (read by the owner's BITMAPs alone) reads the same rows."""
    without_the_version_index(store)
    assert ("version", "BTree") not in indexes(store.tables["stated_changes"])
    assert [r["version"] for r in store.stated_changes("acme", "bob", 2)] == [2, 3]
    opened = Store(str(tmp_path), "enc", DIM)
    assert ("version", "BTree") in indexes(opened.tables["stated_changes"])
    assert [r["version"] for r in opened.stated_changes("acme", "bob", 2)] == [2, 3]


def test_a_process_that_only_reads_the_previous_releases_store_commits_no_index_to_it(store, tmp_path):
    """`pluralign train adapter --store` of this release beside the previous release's serve, whose tables carry this
    release's schema version (scale62 added an index, no column): it reads the tables as they are and commits nothing
    to them, not even the index on `version` (docs/operations.md, 'Upgrading and rolling back': "neither columns, mark
    nor index", so none of its commits can clash with that serve's writes); the serve's next start makes it."""
    from tests.service.test_left29 import tables_as_they_are

    without_the_version_index(store)
    before = tables_as_they_are(tmp_path)
    reader = Store(str(tmp_path), "enc", DIM, finish_purges=False)
    assert [r["version"] for r in reader.stated_changes("acme", "bob", 2)] == [2, 3]
    assert tables_as_they_are(tmp_path) == before, "a process that only reads committed to the tables"
    assert ("version", "BTree") in indexes(Store(str(tmp_path), "enc", DIM).tables["stated_changes"])


def test_a_users_longest_texts_are_read_a_bounded_size_at_a_time(store, monkeypatch):
    """A list of `texts_in_batches` is bounded in size as well as in rows: a row's three texts may be 20,000 characters
    each (240 KB in UTF-8 outside the Latin script), so TEXT_ROWS_PER_READ (4,096) such rows, one list and one read of
    Lance, were ~1 GB held at once by one DELETE. Here 4 rows of the longest texts, 120 KB of text a list at most."""
    import numpy as np

    from pluralign.store import StoredPreference, tables

    monkeypatch.setattr(tables, "TEXT_BYTES_PER_READ", 120_000, raising=False)
    long = [StoredPreference(tenant="acme", user_id="wordy", pref_id=f"w{i}", prompt=f"{i}" + "詞" * 19_999, chosen=f"{i}" + "a" * 19_999,
                             rejected=f"{i}" + "b" * 19_999, kind="comparison", created_at=1.0 + i) for i in range(4)]
    vecs = np.zeros((4, DIM), np.float32)
    store.add_preferences(long, vecs, vecs, vecs)
    lists = list(store.texts_in_batches("acme", ["wordy"]))
    assert sorted(t for texts in lists for t in texts) == sorted(t for p in long for t in (p.prompt, p.chosen, p.rejected))
    sizes = [sum(len(t.encode()) for t in texts) for texts in lists]
    assert max(sizes) <= 120_000, f"bytes of text in one list: {sizes}"
