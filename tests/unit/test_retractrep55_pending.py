"""Retractions recorded before their row is stored (with replicas: `pluralign.store.retractions`, PENDING): what the
store tells of a key, and that a pending record of a row that never came goes after PENDING_KEEP_S, while the record
of a row taken back from the table stays."""

from __future__ import annotations

import time

from pluralign.store import Store, StoredPreference
from pluralign.store.retractions import PENDING_KEEP_S


def row(pref_id: str, received_at: float) -> StoredPreference:
    return StoredPreference(tenant="acme", user_id="ria", pref_id=pref_id, prompt="p", chosen="c", rejected="r",
                            kind="comparison", created_at=received_at, received_at=received_at)


def test_a_pending_record_names_the_row_then_goes_after_its_keep_while_a_done_one_stays(tmp_path):
    store = Store(str(tmp_path / "db"), "enc", 8, sync_seconds=0)
    now = time.time()
    assert store.retraction_recorded("acme", "ria", "gone") is None
    store.record_retraction("acme", "ria", "gone", now - PENDING_KEEP_S - 60, 0)  # taken back from the table
    store.record_retraction("acme", "ria", "never", now - PENDING_KEEP_S - 60, 0, pending=True)  # never came
    store.record_retraction("acme", "globex-like", "other", now - PENDING_KEEP_S - 60, 0, pending=True)
    assert store.retraction_recorded("acme", "ria", "gone") == "done"
    assert store.retraction_recorded("acme", "ria", "never") == "pending"
    # the row still on its way when taken back: its mover's look drops it; sent again after, it is kept
    store.record_retraction("acme", "ria", "coming", now, 1, pending=True)
    assert store.retracted([row("coming", now - 1), row("coming", now + 5), row("kept", now - 1)]) == {("acme", "ria", "coming")}
    assert store.retracted_before([row("coming", now - 1)])[("acme", "ria", "coming")] == now
    assert store.retracted_before([row("coming", now + 5)]) == {}  # a record older than every row takes none back: not read
    # the tenant's pending records past their keep went at that record; the done one and the fresh one stay
    assert store.retraction_recorded("acme", "ria", "never") is None
    assert store.retraction_recorded("acme", "globex-like", "other") is None
    assert store.retraction_recorded("acme", "ria", "gone") == "done"
    assert store.retraction_recorded("acme", "ria", "coming") == "pending"
    assert store.retractions.count_rows() == 2
