"""`FeedbackLog.drop_moved`, which a retraction of one stored row runs before the row leaves the table: the user's
records already moved leave the log's files (a reopen does not replay them), while every record still pending, the
user's and others', stays (acknowledged feedback survives it and a crash after it)."""

from __future__ import annotations

from pluralign.store.feedback_log import FeedbackLog
from tests.service.test_feedback_log import feedback, log_bytes


def test_drop_moved_cuts_the_users_moved_records_and_keeps_every_pending_one(tmp_path):
    log = FeedbackLog(tmp_path)
    moved = log.append(feedback("ann", 0))
    log.append(feedback("bob", 0))  # another user's, pending
    kept = log.append(feedback("ann", 1))  # the user's, pending
    log.done([moved])  # in the table now; its segment (the one written) keeps it
    assert b"question 0 of ann" in log_bytes(tmp_path)

    assert log.drop_moved("t", "ann") == 1
    assert b"question 0 of ann" not in log_bytes(tmp_path)
    log.append(feedback("cy", 0))  # written after it, to a fresh segment
    assert log.drop_moved("t", "dan") == 0  # no record of theirs: nothing rewritten
    log.close()  # as after kill -9
    again = FeedbackLog(tmp_path)
    assert sorted(r.pref_id for e in again.pending.values() for r in e.rows) == ["t-ann-1-0", "t-bob-0-0", "t-cy-0-0"]
    assert kept.rows[0].pref_id == "t-ann-1-0"
