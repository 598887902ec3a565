"""Review 27b: storage failures of derived writes must not make an answer say nothing was stored, nor
a failure be hidden behind another write's success."""

from __future__ import annotations

from tests.service.test_break20_delete import give_comparisons
from tests.service.test_break27_storage import LANCE_FULL


def test_a_stated_change_stored_is_not_refused_when_only_its_refit_row_cannot_be_written(serve, monkeypatch):
    """A PATCH writes the user's row with the new version, then refits them and writes the row again
    (a cache of their fit: reads fit again while it is stale). No room for the second write: the
    change is stored all the same, so not 507 "nothing this request sent was acknowledged"."""
    _, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        merge_insert, calls = rt.store.users.merge_insert, []

        def room_once(*args, **kwargs):  # the new version's row is written; the refit's row finds no room
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError(LANCE_FULL)
            return merge_insert(*args, **kwargs)

        with monkeypatch.context() as disk:
            disk.setattr(rt.store.users, "merge_insert", room_once)
            r = acme.patch("/v1/users/ann/stated-preferences", json={"preferences": {"length": "less"}})
            assert len(calls) >= 2, calls  # the refit's write was refused
            assert r.status_code == 200 and r.json()["version"] == 1, r.text
            assert acme.get("/health").json()["status"] == "degraded"  # the operator still learns of it
        page = acme.get("/v1/users/ann/stated-preferences").json()
        assert page["version"] == 1 and page["preferences"] == {"length": "less"}, page
        assert acme.get("/v1/users/ann").status_code == 200


VANISHED = "lance error: LanceError(IO): Generic N/A error: Wrapped error: Not found: Wrapped error: Not found: /d/t.lance/data/1.lance"


def test_a_request_read_meeting_a_file_another_replica_removed_is_read_again_not_a_damaged_table(serve, monkeypatch):
    """With replicas, another one's cleanup removes old versions' files; a read still on such a version
    meets "Not found". It is read again on the newest version (as maintenance steps are), not answered
    503 "a file of it is damaged" with /health degraded for 10 minutes. Found again: reported."""
    _, server, svc = serve(store_sync_ms=1000)
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, "ann", "tea", n=2)
        assert acme.get("/v1/users/ann").status_code == 200
        rt.wait_for_background()
        count_rows, calls = rt.store.interactions.count_rows, []

        def vanished_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError(VANISHED)
            return count_rows(*args, **kwargs)

        with monkeypatch.context() as race:
            race.setattr(rt.store.interactions, "count_rows", vanished_once)
            r = acme.get("/v1/users/ann")
            assert len(calls) >= 2, calls
            assert r.status_code == 200, r.text
            health = acme.get("/health").json()
        assert health["status"] == "ok", health

        def vanished(*args, **kwargs):
            raise RuntimeError(VANISHED)

        with monkeypatch.context() as damaged:  # gone from the newest version too: a damaged table, said so
            damaged.setattr(rt.store.interactions, "count_rows", vanished)
            assert acme.get("/v1/users/ann").status_code == 503
            assert acme.get("/health").json()["status"] == "degraded"


def test_a_feedback_log_rewrite_that_failed_stays_on_health_until_it_is_done_not_until_any_write(serve, monkeypatch):
    """A DELETE that could not rewrite the feedback log's segments without the user leaves their text in
    those files until the journal's pass does it. Before: noted as the log's failed "write", which the
    next feedback written cleared: /health said ok while the deleted user's text was still on disk."""
    import errno

    import pluralign.store.feedback_log as feedback_log
    from service.users import services
    from service.users.journal import JOURNAL_FOLDER
    from tests.service.test_break27_storage import comparison
    from tests.service.test_delete_journal import wait_until

    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        with rt.ingest.paused():  # ann's and bo's feedback stay in the log's segment (bo's is written again without ann's)
            assert acme.post("/v1/feedback", json=comparison("ann", 0)).status_code == 201
            assert acme.post("/v1/feedback", json=comparison("bo", 0)).status_code == 201

            def full(fd, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            with monkeypatch.context() as disk:
                disk.setattr(feedback_log, "_write_all", full)
                assert acme.delete("/v1/users/ann").status_code == 507
            assert acme.post("/v1/feedback", json=comparison("bo", 1)).status_code == 201  # room again: the log is written
            health = acme.get("/health").json()
            assert health["status"] == "degraded", health  # ann's text is still in a segment file
            assert [(s["what"], s["action"]) for s in health["storage"]] == [("the feedback log", "rewritten without a deleted user")], health
            assert services.UnfinishedDeletes(rt, 3600).run_once() == 1  # the journal's pass rewrites it
            assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))
        health = acme.get("/health").json()
        assert health["status"] == "ok", health
