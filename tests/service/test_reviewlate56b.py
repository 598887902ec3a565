"""Review (late56b) of review tenant56's history cache: the bytes its bound counts against what a cached history holds,
on the real store in a temp folder."""

from __future__ import annotations

import gc

import pyarrow as pa

from pluralign.store import Store
from pluralign.store.history import HISTORY_ENTRY_BYTES
from tests.service.test_store import DIM, prefs


def test_a_cached_history_grown_one_feedback_at_a_time_holds_about_the_bytes_the_cache_counts(tmp_path):
    """A cached user's history takes each write's rows (write-through: `HistoryCache.extend`), one or a few at a time
    as feedback comes in. Each write's rows were added as chunks of their own to the history's Arrow table: a user who
    sent 40 comparisons one by one held 40 chunks of every column, each buffer of a row or two rounded up by Arrow's
    allocator (18x the bytes of the rows here, 3x what the cache counts with `HISTORY_ENTRY_BYTES`; with the chunks' objects, ~3x
    in resident memory for 300 rows of 384-d vectors),
    beyond `PLURALIGN_HISTORY_CACHE_MB`, and every read of it walked them all. Measured in Arrow's memory pool: what
    dropping the history gives back. 20 writes here (chat61: 40 cost ~4 CPU-s): with the chunks kept they hold 1.9x what
    the cache counts."""
    store = Store(str(tmp_path / "store"), "enc", DIM, history_bytes=1 << 30)
    store.add_preferences(*prefs("acme", "ann", 1))
    assert len(store.history("acme", "ann")) == 1  # cached: the writes below grow it
    misses = store.histories.misses
    for i in range(1, 20):
        store.add_preferences(*prefs("acme", "ann", 1, start=i))
    history = store.histories.peek(("acme", "ann"))
    assert history is not None and len(history) == 20
    assert len(store.history("acme", "ann")) == 20 and store.histories.misses == misses  # never read from the table again
    counted = history.meta.nbytes + HISTORY_ENTRY_BYTES  # what it counts beside its vectors (numpy's, not Arrow's)
    gc.collect()
    before = pa.total_allocated_bytes()
    store.histories.invalidate([("acme", "ann")])
    del history
    gc.collect()
    held = before - pa.total_allocated_bytes()
    assert held < counted, f"the history held {held} bytes of Arrow buffers; its bound counts {counted}"
