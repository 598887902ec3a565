"""Data session 36: a DELETE finished from the journal (`UnfinishedDeletes`, at start-up and every
`deletion_sweep_s`) for a user who came back: it tells what they sent since by when each row was
received, reading their feedback still in the log where it is (never storing it first: a large import's
backlog embedded inside the DELETE, under the store's maintenance turn and the user's lock), and keeps
what was acknowledged after the DELETE began, even while it runs."""

from __future__ import annotations

import time

from pluralign.data.record import Preference
from service.users import services
from service.users.journal import JOURNAL_FOLDER
from tests.service.test_break20_delete import GONE, MARKER, give_comparisons
from tests.service.test_delete_journal import wait_until
from tests.service.test_delete_stopped import Stopped


def stopped_delete(rt) -> float:
    """A DELETE of GONE stopped at its first step (the process killed): its journal entry stays. Returns
    when it began."""
    def killed(forget):
        raise Stopped

    rt.delete_hooks.insert(0, killed)
    try:
        services.delete(rt, "acme", GONE)
    except Stopped:
        pass
    finally:
        rt.delete_hooks.remove(killed)
    (entry,) = rt.delete_journal.pending()
    return entry.started_at


def acknowledged_import(rt, n: int) -> list[str]:
    """An import of GONE's acknowledged (durable in the feedback log), as the import route stores one."""
    records = [Preference(user_id=GONE, prompt=f"Back question {i}?", chosen=f"Back yes {i}.", rejected=f"Back no {i}.",
                          created_at=1_700_000_000.0 + i) for i in range(n)]
    rows = services.import_rows("acme", GONE, records)
    rt.ingest.submit(rows)
    return [r.pref_id for r in rows]


def test_finishing_a_delete_leaves_a_returning_users_backlog_in_the_log(serve):
    """Before: `came_back` moved every row of theirs still in the log into the table first (embedding
    each text, inside the DELETE), here 600 rows (1,800 texts): the pass returned with none pending."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        assert acme.get(f"/v1/users/{GONE}/preferences").json()["total"] == 2
        began = stopped_delete(rt)
        with rt.ingest.paused():  # the worker is busy elsewhere: the import waits in the log
            acknowledged_import(rt, services.READ_INLINE_ROWS + 100)
            started = time.monotonic()
            assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
            assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir())), list((data / JOURNAL_FOLDER).iterdir())
            took = time.monotonic() - started
            pending = [r for e in rt.ingest.log.pending_for("acme", GONE) for r in e.rows]
            assert len(pending) == services.READ_INLINE_ROWS + 100, (len(pending), took)  # not stored by the DELETE
            assert all(r.received() >= began for r in pending)
            assert rt.store.count_preferences("acme", GONE) == 0  # what they sent before it went
            rt.ingest.stop()  # and the import stays there: let go, the worker embedded its 1,800 texts at the shutdown (~6 s)
        assert took < 10, took


def test_feedback_acknowledged_while_the_journal_finishes_a_delete_is_kept(serve, monkeypatch):
    """The user had not come back when the pass looked (`came_back`); their feedback is acknowledged right
    after, before the DELETE's steps drop their pending rows. Before: every pending row went, this one
    too (acknowledged long after the DELETE began: the user's again, as docs/api.md says)."""
    data, server, svc = serve()
    rt = svc.runtime
    with server, svc.client("acme") as acme:
        give_comparisons(acme, GONE, "tea", MARKER, n=2)
        stopped_delete(rt)
        looked, later = services.came_back, []

        def came_back_then_feedback(*args):
            answer = looked(*args)
            if not later:
                later.extend(acknowledged_import(rt, 1))
            return answer

        monkeypatch.setattr(services, "came_back", came_back_then_feedback)
        with rt.ingest.paused():
            assert services.UnfinishedDeletes(rt, 3600).run_once() == 1
            assert wait_until(lambda: not any((data / JOURNAL_FOLDER).iterdir()))
        assert later
        page = acme.get(f"/v1/users/{GONE}/preferences")
        assert page.status_code == 200, page.text
        assert [p["pref_id"] for p in page.json()["data"]] == later, page.json()  # kept; the two from before went
