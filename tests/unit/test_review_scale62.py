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
