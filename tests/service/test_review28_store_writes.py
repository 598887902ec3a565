"""Review of session 28's write retry on Lance's "Not found" (`Store._commit`): a batch is one commit,
but it can hold rows of several writers (the ingest worker moves many feedbacks at once, a group
commit joins concurrent appends), and its first row can be in the table for another reason than this
commit: another replica moved the same idempotent feedback retry (same pref_id) from its own log. Only
the rows the table lacks are appended again; none is lost and none stored twice."""

from __future__ import annotations

from pluralign.store import Store
from tests.service.test_left28_store_writes import meets_not_found
from tests.service.test_store import DIM, prefs


def test_a_retried_append_whose_first_row_another_replica_stored_keeps_the_rest(tmp_path, monkeypatch):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    b = Store(str(tmp_path), "enc", DIM, sync_seconds=0)  # another replica on the same folder
    rows, p, c, r = prefs("t", "u", 3)
    b.add_preferences(rows[:1], p[:1], c[:1], r[:1])  # the retry's row, moved by the other replica
    meets_not_found(monkeypatch, a.preferences, "add", committed=False)
    a.add_preferences(rows, p, c, r)  # that row first, then two other feedbacks' rows
    ids = sorted(a.preferences.to_arrow().column("pref_id").to_pylist())
    assert ids == ["t-u-0", "t-u-1", "t-u-2"]  # was ["t-u-0"]: t-u-1 and t-u-2 acknowledged, then lost


def test_a_retried_append_after_its_commit_adds_nothing(tmp_path, monkeypatch):
    a = Store(str(tmp_path), "enc", DIM, sync_seconds=0)
    a.add_preferences(*prefs("t", "u", 2))
    calls = meets_not_found(monkeypatch, a.preferences, "add", committed=True)
    a.add_preferences(*prefs("t", "u", 3, start=2))
    assert len(calls) == 1
    assert sorted(a.preferences.to_arrow().column("pref_id").to_pylist()) == [f"t-u-{i}" for i in range(5)]
