"""The bound on LanceDB's caches (`store_cache_mb`, `pluralign.store.location.cache_session`) checked on a store of its
own, without a service: the default suite's check of what tests/service/test_long29_growth.py's slow
`test_lance_caches_stay_under_store_cache_mb` checks through `pluralign serve`'s app (30 feedbacks and reads, ~4.7
CPU-s). Count-based: the caches' bytes after commits, not times."""

from __future__ import annotations

from types import SimpleNamespace

from pluralign.store import Store, tables
from service.runtime import open_store
from service.settings import Settings
from tests.service.test_store import DIM, prefs

BOUND = 100_000  # bytes; 10 commits and reads of one row each fill LanceDB's unbounded caches with ~400 kB here


def test_a_stores_lance_caches_stay_under_the_bytes_it_was_opened_with(tmp_path):
    """Each commit's manifest and index pages stayed in LanceDB's session caches (6 GiB and 1 GiB by default), ~0.1 MB
    a write in the service for the life of the process; the store opened with `cache_bytes` holds at most that."""
    store = Store(str(tmp_path), "enc", DIM, cache_bytes=BOUND)
    opened = store.cache_bytes
    for i in range(10):
        store.add_preferences(*prefs("t", f"cached{i}", 1))  # a commit each
        assert len(store.preferences_for("t", f"cached{i}")[0]) == 1  # read back
    # more than at opening: the session counted is the one LanceDB fills (review store61: a session made but not handed to
    # `lancedb.connect` stayed at ~150 bytes, under any bound, while LanceDB's own default caches grew unbounded)
    assert opened < store.cache_bytes <= BOUND, (opened, store.cache_bytes)


def test_the_service_opens_its_store_with_store_cache_mb(tmp_path, monkeypatch):
    """`open_store` (the service's, a job's) hands `store_cache_mb` to the store as bytes."""
    sessions = []
    real = tables.cache_session
    monkeypatch.setattr(tables, "cache_session", lambda cache_bytes: sessions.append(cache_bytes) or real(cache_bytes))
    open_store(Settings(data_dir=str(tmp_path), store_cache_mb=3), SimpleNamespace(encoder_id="enc", dim=DIM))
    assert sessions == [3 << 20]
