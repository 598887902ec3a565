"""Session ids39: a `pref_id` names one preference of its user. Before, `Store.add_preferences` appended
whatever it was given: a replayed import or a retried feedback under the same ids was stored twice (a
comparison counted twice in fits, exports and pages), and a different row under a stored id stood beside
it. Now an identical row (received_at aside) is not stored again, a row repeated within one call is stored
once, and a different row under a held id is a PrefIdConflict naming the row and the field (nothing
written). Real LanceDB in a temp folder."""

from __future__ import annotations

import threading

import msgspec
import numpy as np
import pytest

from pluralign.store import Store
from pluralign.store.tables import PrefIdConflict
from tests.service.test_store import DIM, prefs


def ids_held(store: Store) -> list[str]:
    return sorted(store.preferences.to_arrow().column("pref_id").to_pylist())


def test_the_same_rows_added_again_are_stored_once(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, p, c, r = prefs("t", "u", 4)
    assert store.add_preferences(rows[:3], p[:3], c[:3], r[:3]) == 3
    later = [msgspec.structs.replace(x, received_at=x.created_at + 60) for x in rows]  # a replay, received later
    assert store.add_preferences(later[:3], p[:3], c[:3], r[:3]) == 0
    assert ids_held(store) == ["t-u-0", "t-u-1", "t-u-2"]  # was each id twice
    assert store.count_comparisons("t", "u") == 3
    # with a new row beside them: only that one is stored
    assert store.add_preferences(later, p, c, r) == 1
    assert ids_held(store) == ["t-u-0", "t-u-1", "t-u-2", "t-u-3"]


def test_the_same_id_of_another_user_is_another_preference(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, p, c, r = prefs("t", "u", 2)
    store.add_preferences(rows, p, c, r)
    copied = [msgspec.structs.replace(x, user_id="v") for x in rows]  # u's file imported as v: ids kept
    assert store.add_preferences(copied, p, c, r) == 2
    assert store.count_preferences("t", "v") == 2 and store.count_preferences("t", "u") == 2


def test_a_row_repeated_in_one_call_is_stored_once(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, p, c, r = prefs("t", "u", 2)
    twice = [rows[0], rows[1], rows[0]]
    assert store.add_preferences(twice, np.vstack([p, p[:1]]), np.vstack([c, c[:1]]), np.vstack([r, r[:1]])) == 2
    assert ids_held(store) == ["t-u-0", "t-u-1"]


def test_another_row_under_a_held_id_is_refused_naming_the_field(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, p, c, r = prefs("t", "u", 2)
    store.add_preferences(rows, p, c, r)
    other = [*prefs("t", "u", 1, start=5)[0], msgspec.structs.replace(rows[1], chosen="maybe")]
    with pytest.raises(PrefIdConflict, match=r"row 1: `pref_id` 't-u-1' of user 'u' is already stored with another `chosen`") as caught:
        store.add_preferences(other, p, c, r)
    assert (caught.value.pref_id, caught.value.index, caught.value.field) == ("t-u-1", 1, "chosen")
    assert ids_held(store) == ["t-u-0", "t-u-1"]  # nothing of the call written (t-u-5 neither)
    # and in one call
    clash = [rows[0], msgspec.structs.replace(rows[0], margin=0.5)]
    with pytest.raises(PrefIdConflict, match=r"rows 0 and 1 share `pref_id` 't-u-0' of user 'u' but differ in `margin`"):
        store.add_preferences(clash, p, c, r)


def test_a_margin_read_back_as_float32_is_the_same_row(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    rows, p, c, r = prefs("t", "u", 1)
    rows = [msgspec.structs.replace(rows[0], margin=0.1, attributes={"group": "a"})]
    store.add_preferences(rows, p, c, r)
    store.histories.invalidate([("t", "u")])  # looked up in the table, not the cache
    assert store.add_preferences(rows, p, c, r) == 0
    store.history("t", "u")  # and in the cached history
    assert store.add_preferences(rows, p, c, r) == 0
    assert ids_held(store) == ["t-u-0"]


def test_two_calls_adding_one_row_at_once_store_it_once(tmp_path):
    store = Store(str(tmp_path), "enc", DIM)
    store.add_preferences(*prefs("t", "u", 1, start=9))  # the table and its indexes exist
    batch = prefs("t", "u", 4)
    start = threading.Barrier(6)
    added = []

    def add() -> None:
        start.wait()
        added.append(store.add_preferences(*batch))

    threads = [threading.Thread(target=add) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(added) == [0, 0, 0, 0, 0, 4]
    assert ids_held(store) == ["t-u-0", "t-u-1", "t-u-2", "t-u-3", "t-u-9"]


def test_the_mover_leaves_out_a_request_whose_id_is_held_with_other_content_and_moves_the_rest(tmp_path):
    """Two requests that passed the routes' check at once can reach the mover with one id and two contents:
    the one moved second is left out (logged), not retried for ever in front of every later batch."""
    from tests.service.test_feedback_log import feedback, make

    store, _, ingest = make(tmp_path)
    with ingest.paused():
        first = feedback("u", 0)
        ingest.submit(first)
        ingest.submit([msgspec.structs.replace(first[0], chosen="another answer")])  # the same id, other content
        ingest.submit(feedback("u", 1, n=2))
        assert ingest.flush_user("t", "u") == 3  # in one batch
    assert ingest.log.backlog() == (0, 0)
    assert sorted(p.chosen for p in store.preferences_for("t", "u")[0]) == ["good answer 0.0", "good answer 1.0", "good answer 1.1"]
    ingest.close()


def test_a_large_batch_of_many_users_is_checked_the_same_way(tmp_path):
    """More ids than FEW_IDS are looked up by their users' keys first (`Store._read_held`)."""
    from pluralign.store.tables import FEW_IDS

    store = Store(str(tmp_path), "enc", DIM)
    batch = [prefs("t", f"u{k}", 30, start=100 * k) for k in range(4)]  # 120 rows of 4 users
    rows = [r for part in batch for r in part[0]]
    vecs = np.vstack([part[1] for part in batch])
    assert len(rows) > FEW_IDS
    assert store.add_preferences(rows[:50], vecs[:50], vecs[:50], vecs[:50]) == 50
    assert store.add_preferences(rows, vecs, vecs, vecs) == 70  # the first 50 held: not stored again
    assert store.preferences.count_rows() == 120
    changed = [*rows[:-1], msgspec.structs.replace(rows[-1], tie=True)]
    with pytest.raises(PrefIdConflict, match="another `tie`"):
        store.add_preferences(changed, vecs, vecs, vecs)


def test_a_retried_commit_keeps_rows_whose_ids_another_user_holds(tmp_path, monkeypatch):
    """Ids are per user (an export imported as another user keeps them): a commit made again after Lance's
    "Not found" appends the rows the table lacks by (tenant, user_id, pref_id), not by pref_id alone, which
    dropped v's rows as u's."""
    from tests.service.test_left28_store_writes import meets_not_found

    store = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    rows, p, c, r = prefs("t", "u", 2)
    store.add_preferences(rows, p, c, r)
    meets_not_found(monkeypatch, store.preferences, "add", committed=False)  # the first attempt did not commit
    assert store.add_preferences([msgspec.structs.replace(x, user_id="v") for x in rows], p, c, r) == 2
    assert store.count_preferences("t", "v") == 2 and store.preferences.count_rows() == 4


def test_the_log_replayed_at_start_keeps_rows_whose_ids_another_user_holds(tmp_path):
    """At start, replayed log records whose rows are stored are dropped: stored for their user, not under
    their ids for anyone."""
    from pluralign.store.feedback_log import FeedbackLog
    from pluralign.store.ingest import Ingestor
    from tests.service.test_feedback_log import HashEncoder, feedback

    store = Store(str(tmp_path / "db"), "hash", DIM)
    rows = feedback("u", 0, n=2)
    vecs = HashEncoder().encode(["x", "y"])
    store.add_preferences(rows, vecs, vecs, vecs)
    log = FeedbackLog(tmp_path / "log")
    log.append([msgspec.structs.replace(x, user_id="v") for x in rows])  # acknowledged, not moved before a crash
    log.close()
    ingest = Ingestor(FeedbackLog(tmp_path / "log"), store, HashEncoder())
    try:
        ingest.flush()
        assert store.count_preferences("t", "v") == 2  # was 0: dropped as already moved
    finally:
        ingest.close()
