"""Review session 36: a DELETE finished from the journal for a user who had not come back when it looked
(`came_back`) keeps what they send while it runs (0ae5ffa): their rows received after it began stay in the
feedback log (`forget_user(before=began)`). But the ingest worker moved such a row into the table while the
DELETE's steps ran (after the log's rows were judged, before `Store.delete_user`), and the store's step
then deleted every row of the user, this one too: feedback acknowledged (201) long after the DELETE began,
lost without a word."""

from __future__ import annotations

import time

from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_data36_journal import stopped_delete
from tests.service.test_delete_journal import wait_until

LATER = {"type": "comparison", "user": GONE, "prompt": "Back again: tea or coffee?", "chosen": "Tea, please.", "rejected": "Coffee."}


def test_feedback_moved_into_the_table_while_the_journal_finishes_a_delete_is_kept(serve):
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        stopped_delete(rt)
        later: list = []

        def feedback_meanwhile(texts):
            """Called by the DELETE's steps (`_forget_vectors`): their log rows judged, the table not yet cleared.
            The user sends feedback now; the worker is free to move it (at most 3 s is waited for it)."""
            if later:
                return
            answer = acme.post("/v1/feedback", json=LATER, timeout=10)
            assert answer.status_code == 201, answer.text
            later.extend(answer.json()["stored"])
            deadline = time.monotonic() + 3
            while rt.ingest.log.pending_for("acme", GONE) and time.monotonic() < deadline:
                time.sleep(0.02)

        rt.vector_hooks.append(feedback_meanwhile)
        try:
            assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
            assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))
        finally:
            rt.vector_hooks.remove(feedback_meanwhile)
        assert later
        page = acme.get(f"/v1/users/{GONE}/preferences")
        assert page.status_code == 200, page.text
        assert [p["pref_id"] for p in page.json()["data"]] == later, page.json()  # kept; the two from before went
