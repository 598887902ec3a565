"""Review rows43: a `created_at` in epoch milliseconds that a release before session rows42 stored (imports took any
finite number then) keeps its meaning, the seconds it meant, wherever the store compares it: with a row imported
again under its id, and as the stand-in for `received_at` in a table written before that column was kept."""

from __future__ import annotations

import time

from pluralign.store import Store, StoredPreference
from tests.stores import old_preferences_table

DIM = 8
MS = 1_700_000_000_123.0  # 2023-11-14 in milliseconds, as JavaScript's Date.now() gives it


def test_a_millisecond_time_of_an_old_table_counts_as_the_seconds_it_meant(tmp_path):
    """Before: the row counted as received in the year 55,847: `received_since(now)` held it as sent after any DELETE,
    and a DELETE finished after the user came back (`delete_feedback_before`) kept it; the same row imported again
    with its seconds (what the export writes now) differed in `created_at`."""
    old_preferences_table(tmp_path, (MS, 1_600_000_000.0))
    store = Store(str(tmp_path), "enc", DIM)
    (held, _), now = store.preferences_for("t", "ann"), time.time()
    assert sorted(p.received() for p in held) == [1_600_000_000.0, MS / 1000]
    again = StoredPreference(tenant="t", user_id="ann", pref_id="old0", prompt="q0", chosen="yes", rejected="no",
                             kind="comparison", created_at=MS / 1000, received_at=now)
    assert store.new_and_held([again]) == ([], [0])  # the same preference, held
    assert not store.received_since("t", "ann", now)
    assert store.received_since("t", "ann", MS / 1000)
    assert store.delete_feedback_before("t", "ann", now) == 2
    assert store.preferences_for("t", "ann")[0] == []


def test_an_audits_first_received_time_of_such_a_row_is_its_seconds(tmp_path):
    """Before: a user whose oldest row was stored in milliseconds counted as first received in the year 55,847, after
    any audit, so an audit listing them read as if they were deleted since and came back."""
    from pluralign.fairness.store_source import first_received_from_store

    old_preferences_table(tmp_path, (MS,))
    Store(str(tmp_path), "enc", DIM)  # opened by this release: the received_at column added (null)
    assert first_received_from_store(str(tmp_path)) == {"t/ann": MS / 1000}
