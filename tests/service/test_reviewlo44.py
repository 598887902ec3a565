"""Review of lost44 (the FORGOTTEN note of the feedback log, a refit's conditional write of the users row)."""

from __future__ import annotations

from pluralign.store.failures import REWRITTEN, Problems
from pluralign.store.feedback_log import FeedbackLog
from tests.stores import forget_without_room


def test_a_start_rewrite_that_failed_is_cleared_by_the_deleted_users_retry_alone(tmp_path, monkeypatch):
    """A start whose rewrite of a forgotten user's segment failed (the disk still full) shows the log not REWRITTEN
    until that user's `forget_user` succeeds; the other users of the segment were never deleted, and nothing ever
    forgets them: counting them (until this review) kept the problem shown for good."""
    forget_without_room(tmp_path, monkeypatch).close()
    problems = Problems()
    log = FeedbackLog(tmp_path, problems=problems)  # still no room: the start's rewrite fails, the note stays
    assert [p["action"] for p in problems.recent()] == [REWRITTEN]
    monkeypatch.undo()
    assert log.forget_user("t", "ann") == 0  # the DELETE's retry, room again
    assert problems.recent() == []
    assert [r.pref_id for e in log.pending.values() for r in e.rows] == ["t-bob-0-0"]
    log.close()


def test_a_patch_whose_row_another_replicas_refit_replaced_meanwhile_is_kept(tmp_path, tiny_generator_dir, tiny_pal_dir,
                                                                           minilm, monkeypatch):
    """The reverse of lost44's lost update: a refit on another replica, begun after a PATCH stamped its time and
    committed before the PATCH's write, made that write (the older row) refused silently: 200 to the client, the new
    version in the changes table, and the row (what every read and ranking uses) at the old version."""
    from service.users import services
    from tests.service.tiny import start_replicas

    monkeypatch.setenv("PLURALIGN_CACHE_DIR", str(tmp_path / "cache"))
    first, a, second, b = start_replicas(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, sync_ms=200)
    with first, second, a.client("acme") as acme_a, b.client("acme") as acme_b:
        r = acme_a.patch("/v1/users/ann/stated-preferences", json={"preferences": {"length": "less"}})
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        a.runtime.wait_for_background()
        # a's PATCH of version 2 has read the row and stamped its time; it reads the changes table before its write
        stated_changes, refits = a.runtime.store.stated_changes, []

        def b_refits_first(*args, **kwargs):
            if not refits:
                refits.append(services.refit(b.runtime, "acme", "ann"))  # reads version 1, stamps a later time, writes
            return stated_changes(*args, **kwargs)

        monkeypatch.setattr(a.runtime.store, "stated_changes", b_refits_first)
        r = acme_a.patch("/v1/users/ann/stated-preferences", json={"preferences": {"exclamations": "less"}})
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        assert refits and refits[0].record is not None
        monkeypatch.undo()
        for replica in (a, b):
            replica.runtime.store.refresh("users", "stated_changes")
            stated = services.stated_of(replica.runtime.store.get_user("acme", "ann"))
            assert (stated.version, stated.preferences) == (2, {"length": "less", "exclamations": "less"})
        page = acme_b.get("/v1/users/ann/stated-preferences").json()
        assert page["version"] == 2 and [h["version"] for h in page["history"]] == [1, 2], page
