"""Review session 36: a DELETE that rewrites the feedback log's segments while another user's round has
been written (fdatasync'd) but not yet registered as pending. The writer let go of the log's lock
(`_io`) after the write and only then registered the round's records: `forget_user` (another user's
DELETE, under `_io`) in that gap rewrote the segment keeping only the records then pending, dropping the
round's bytes from the file while the round was acknowledged (201) from memory: a kill -9 before the
worker moved it lost it (the restart replays the files). When the segment held only the deleted user's
records, it was removed, and the writer's registration then failed (KeyError): the request never
answered and the writer thread was dead, so every later feedback waited for good.

The gap is a few microseconds; here the writer is held in it (the store's `problems.succeeded`, called
between the write and the registration) while the DELETE runs over HTTP."""

from __future__ import annotations

import shutil
import threading

import pytest

from pluralign.store.feedback_log import FeedbackLog
from tests.service.tiny import start_service


@pytest.fixture
def svc(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path / "data"
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, deletion_sweep_s=3600)
    service.data_dir = data
    with server:
        yield service


def comparison(user: str, text: str) -> dict:
    return {"type": "comparison", "user": user, "prompt": f"Tea or coffee, {text}?", "chosen": f"Tea {text}.", "rejected": "Coffee."}


def held_between_write_and_registration(rt, monkeypatch):
    """(written, release): `written` is set once the next round of the log is durable and the writer is
    held, with the log's lock let go, until `release` is set (10 s at most)."""
    written, release, armed = threading.Event(), threading.Event(), [True]
    problems = rt.ingest.log.problems
    succeeded = problems.succeeded

    def held(name, action):
        if armed[0] and (name, action) == ("the feedback log", "written"):
            armed[0] = False
            written.set()
            release.wait(10)
        return succeeded(name, action)

    monkeypatch.setattr(problems, "succeeded", held)
    return written, release


def send_during_a_delete(svc, monkeypatch, others: list[str]):
    """Feedback of `stays`, acknowledged while a DELETE of `gone` (whose record shares the segment with
    `others`' records) runs: (its answer, the DELETE's answer)."""
    rt = svc.runtime
    answers: dict = {}
    with svc.client("acme") as c, rt.ingest.paused():  # the worker moves nothing: the rows wait in the log
        assert c.post("/v1/feedback", json=comparison("gone", "first")).status_code == 201
        for other in others:
            assert c.post("/v1/feedback", json=comparison(other, "other")).status_code == 201
        written, release = held_between_write_and_registration(rt, monkeypatch)
        sender = threading.Thread(target=lambda: answers.setdefault("stays", c.post("/v1/feedback", json=comparison("stays", "kept"))))
        sender.start()
        assert written.wait(10)
        deleter = threading.Thread(target=lambda: answers.setdefault("delete", c.delete("/v1/users/gone")))
        deleter.start()
        deleter.join(2)  # it rewrites the segment now, or (once fixed) it waits for the round to be registered
        release.set()
        sender.join(15)
        deleter.join(15)
        # what a kill -9 now leaves on disk, as the next start replays it
        crashed = svc.data_dir.parent / "crashed-log"
        shutil.copytree(svc.data_dir / "feedback-log", crashed)
    return answers, crashed


def test_feedback_acknowledged_while_another_users_delete_rewrites_the_log_survives_a_crash(svc, monkeypatch):
    answers, crashed = send_during_a_delete(svc, monkeypatch, others=["other"])
    assert answers["delete"].status_code == 200, answers["delete"].text
    assert answers["stays"].status_code == 201, answers["stays"].text
    replayed = FeedbackLog(crashed)
    try:
        assert [r.chosen for e in replayed.pending_for("acme", "stays") for r in e.rows] == ["Tea kept."]
        assert replayed.pending_for("acme", "gone") == []
        assert len(replayed.pending_for("acme", "other")) == 1
    finally:
        replayed.close()


def test_feedback_written_while_a_delete_removes_its_segment_is_answered_and_the_log_writes_on(svc, monkeypatch):
    """The segment held only the deleted user's record: the DELETE removed it in the gap. Before: the
    writer's registration raised KeyError, the feedback was never answered (client timeout), and the
    writer thread was gone."""
    answers, crashed = send_during_a_delete(svc, monkeypatch, others=[])
    assert answers["delete"].status_code == 200, answers["delete"].text
    assert "stays" in answers and answers["stays"].status_code == 201, answers.get("stays")
    replayed = FeedbackLog(crashed)
    try:
        assert [r.chosen for e in replayed.pending_for("acme", "stays") for r in e.rows] == ["Tea kept."]
    finally:
        replayed.close()
    with svc.client("acme") as c:
        after = c.post("/v1/feedback", json=comparison("later", "after"), timeout=15)
        assert after.status_code == 201, after.text
        page = c.get("/v1/users/stays/preferences")
        assert page.status_code == 200 and page.json()["total"] == 1, page.text
