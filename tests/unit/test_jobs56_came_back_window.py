"""Session jobs56: with replicas, a DELETE's record takes what another replica received within PLURALIGN_STORE_SYNC_MS of
the DELETE's beginning, and what it made within that of the user's old rows leaving the store (`Deletion.made`): the
replicas' clocks and reads may be that far apart (docs/api.md, "sent to another replica, it stays if it was received
more than PLURALIGN_STORE_SYNC_MS after the DELETE began"; deploy/README.md, "plus store_sync_ms each"). A user who comes
back once the DELETE could have answered (twice that after it began) keeps everything.

tests/e2e/test_jobs53_replica_delete_killed.py (slow) sent the returning user's rows the moment it had killed the
answering replica: on a quiet machine 0.2-0.3 s after the DELETE began, inside this window, so replica 1's sweep took
some of them, or all (then their adapter's promotion found no rows: "deleted while job ran"). Here the same record
(finished from the journal: `made_until`, the old rows gone 30 ms after it began) goes through the steps the sweep and
the promotion take (`service.deletions._forget_of`, `_forget_rows_before`; `Runtime.recorded_deletion_reaches`) on a
real store."""

from __future__ import annotations

import numpy as np

from pluralign.store import Store, StoredPreference
from pluralign.store.deletions import Forget, new_deletion, user_hash

DIM = 8
SYNC_S = 0.3  # PLURALIGN_STORE_SYNC_MS, in seconds
BEGAN = 1_796_621_040.0  # the DELETE began (the answering replica's clock)
LEFT = BEGAN + 0.03  # its store's step had deleted the user's old rows


def row(pref_id: str, received_at: float) -> StoredPreference:
    return StoredPreference(tenant="t", user_id="zed", pref_id=pref_id, prompt=f"Question {pref_id}?", chosen="Good.",
                            rejected="Bad.", kind="comparison", created_at=received_at, received_at=received_at)


def test_a_user_back_once_the_delete_could_answer_keeps_what_another_replica_took_and_made(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    # what replica 1 received: at once after the kill on a quiet machine, and once the DELETE could have answered
    rows = [row("soon", BEGAN + 0.25), row("after", BEGAN + 2 * SYNC_S + 0.01)]
    vec = np.zeros((len(rows), DIM), dtype=np.float32)
    store.add_preferences(rows, vec, vec, vec)
    # the journal's finish for a user who came back, recorded 80 s later
    record = new_deletion("t", "zed", BEGAN + 80.0, 0, began_at=BEGAN, made_until=LEFT)
    store.record_deletion(record)

    forget = Forget.of([record], stale_s=SYNC_S)  # as replica 1's sweep reads it (`_forget_of`)
    assert store.delete_feedback_before("t", "zed", forget.until_of("t/zed")) == 1  # its `_forget_rows_before`
    assert [p.pref_id for p in store.preferences_for("t", "zed")[0]] == ["after"]

    # an adapter job queued from the rows: within PLURALIGN_STORE_SYNC_MS of the old rows leaving it may have read them
    # (purged, not promoted); queued later it holds none (kept, promoted)
    for queued, theirs in ((LEFT + 0.25, False), (LEFT + SYNC_S + 0.01, True)):
        assert forget.made_at(queued)("t/zed") is not theirs, queued  # the sweep's purge of jobs
        assert store.deletion_reaches(user_hash("t", "zed"), queued - SYNC_S) is not theirs, queued  # the promotion's check
