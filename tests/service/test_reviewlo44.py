"""Review of lost44 (the FORGOTTEN note of the feedback log, a refit's conditional write of the users row)."""

from __future__ import annotations

import pytest

from pluralign.store.failures import REWRITTEN, Problems, StoreUnavailable
from pluralign.store.feedback_log import FeedbackLog
from tests.service.test_feedback_log import feedback
from tests.service.test_lost44_forget_rewrite import _no_room_for_rewrites


def test_a_start_rewrite_that_failed_is_cleared_by_the_deleted_users_retry_alone(tmp_path, monkeypatch):
    """A start whose rewrite of a forgotten user's segment failed (the disk still full) shows the log not REWRITTEN
    until that user's `forget_user` succeeds; the other users of the segment were never deleted, and nothing ever
    forgets them: counting them (until this review) kept the problem shown for good."""
    log = FeedbackLog(tmp_path)
    log.append(feedback("ann", 0))
    log.append(feedback("bob", 0))
    _no_room_for_rewrites(monkeypatch)
    with pytest.raises(StoreUnavailable):
        log.forget_user("t", "ann")
    log.close()
    problems = Problems()
    log = FeedbackLog(tmp_path, problems=problems)  # still no room: the start's rewrite fails, the note stays
    assert [p["action"] for p in problems.recent()] == [REWRITTEN]
    monkeypatch.undo()
    assert log.forget_user("t", "ann") == 0  # the DELETE's retry, room again
    assert problems.recent() == []
    assert [r.pref_id for e in log.pending.values() for r in e.rows] == ["t-bob-0-0"]
    log.close()
