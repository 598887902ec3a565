"""Session jobs53: a resumed DELETE of a user who came back asks, in the store's maintenance turn, whether rows of
theirs received before it began are still stored (`service.users.services._stored_before`). It read every row of the
user (`Store.preferences_for`, ~3 s for 100,000 rows at load 8: benchmarks/stored_before.py) and now asks for one count
(`Store.holds_received_before`, 12-14 ms there). The answer must be the one `StoredPreference.received` gives, also for
the times older releases stored in other units, with no meaning, or not a number, and for rows with `received_at`."""

from __future__ import annotations

import math
import time

import numpy as np

from pluralign.store import Store, StoredPreference
from tests.stores import old_preferences_table

DIM = 8
S = 1_700_000_000.0
MS, US, NS = 1_700_000_100_123.0, 1_700_000_200_000_000.0, 1_700_000_300_000_000_000.0
ODD = (NS, US, MS, S, 1e300, math.inf, -5.0, math.nan)  # as test_rows44_times stores them


def test_the_count_of_rows_received_before_a_delete_answers_as_every_row_read_did(tmp_path):
    old_preferences_table(tmp_path, ODD)
    store = Store(str(tmp_path), "enc", DIM)
    later = time.time()
    vec = np.zeros((1, DIM), dtype=np.float32)
    store.add_preferences([StoredPreference(tenant="t", user_id="ann", pref_id="new", prompt="Tea?", chosen="Yes.", rejected="No.",
                                            kind="comparison", created_at=S, received_at=later)], vec, vec, vec)
    rows = store.preferences_for("t", "ann")[0]
    times = sorted({p.received() for p in rows})
    assert len(rows) == len(ODD) + 1 and len(times) >= 5, times
    for before in [-1.0, *times, *(t + 1e-3 for t in times), later + 60]:
        every_row = any(p.received() < before for p in rows)  # what `_stored_before` read until session jobs53
        assert store.holds_received_before("t", "ann", before) is every_row, before
        # and the texts `_forget_vectors` forgets from the embedding caches: read alone, the same
        texts = sorted(t for p in rows if p.received() < before for t in (p.prompt, p.chosen, p.rejected))
        assert sorted(store.texts_of("t", ["ann"], before)) == texts, before
    assert not store.holds_received_before("t", "bob", later + 60)  # no rows: none from before it
