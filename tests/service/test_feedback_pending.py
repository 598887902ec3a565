"""Feedback acknowledged but not yet embedded (still in the log) over real HTTP: reads see it,
the next chat uses it, a delete clears it."""

from __future__ import annotations

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm)
    service.data_dir = data
    with server:
        yield service


def comparison(user, text="curry"):
    return {"type": "comparison", "user": user, "prompt": f"What should I cook for dinner? {text}",
            "chosen": f"A spicy vegetable {text}.", "rejected": "A plain steak.", "attributes": {"group": "spicy"}}


def chat(client, user):
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "What should I cook tonight?"}], "user": user, "seed": 7}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()["pluralign"]


def test_pending_feedback_is_used_by_the_very_next_chat(svc):
    ingest = svc.runtime.ingest
    with svc.client() as c, ingest.paused():  # the worker moves nothing: the rows stay in the log
        r = c.post("/v1/feedback", json=comparison("dora"))
        assert r.status_code == 201, r.text
        assert [e.rows[0].pref_id for e in ingest.log.pending_for("acme", "dora")] == r.json()["stored"]
        info = chat(c, "dora")
        assert info["history"] == r.json()["stored"]  # retrieved: moved into the table by the read
        assert info["prior"] is False  # and the reward weights were refitted with it
        assert ingest.log.pending_for("acme", "dora") == []


def test_pending_feedback_shows_in_profile_pages_and_export(svc):
    with svc.client() as c, svc.runtime.ingest.paused():
        stored = [c.post("/v1/feedback", json=comparison("ivan", str(i))).json()["stored"][0] for i in range(3)]
        page = c.get("/v1/users/ivan/preferences").json()
        assert page["total"] == 3 and [p["pref_id"] for p in page["data"]] == stored
        profile = c.get("/v1/users/ivan").json()
        assert profile["counts"]["preferences"] == 3 and profile["attributes"] == {"group": "spicy"}
        assert sum('"type":"preference"' in line for line in c.get("/v1/users/ivan/export").text.splitlines()) == 3


def test_an_export_as_the_first_read_holds_the_pending_feedback(svc):
    """No page or profile read moves the rows first: the export itself must (a GDPR export that left
    out what the user sent a moment ago would be incomplete)."""
    import json

    with svc.client() as c, svc.runtime.ingest.paused():
        stored = [c.post("/v1/feedback", json=comparison("otto", str(i))).json()["stored"][0] for i in range(2)]
        assert len(svc.runtime.ingest.log.pending_for("acme", "otto")) == 2
        r = c.get("/v1/users/otto/export")
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines()]
    assert [x["pref_id"] for x in lines if x["type"] == "preference"] == stored
    assert {x["chosen"] for x in lines if x["type"] == "preference"} == {"A spicy vegetable 0.", "A spicy vegetable 1."}


def test_delete_clears_pending_feedback_everywhere(svc):
    marker = "zq9pending"
    log_dir = svc.data_dir / "feedback-log"
    with svc.client() as c:
        with svc.runtime.ingest.paused():
            assert c.post("/v1/feedback", json=comparison("vera", marker)).status_code == 201
            assert any(marker.encode() in p.read_bytes() for p in log_dir.iterdir())
            r = c.delete("/v1/users/vera")
            assert r.status_code == 200, r.text
            assert r.json()["deleted"]["preferences"] == 1
            assert not any(marker.encode() in p.read_bytes() for p in log_dir.iterdir())
        svc.runtime.wait_for_background()  # the worker runs again: nothing of vera comes back
        assert c.get("/v1/users/vera").status_code == 404
        assert c.get("/v1/users/vera/preferences").status_code == 404
        assert svc.runtime.store.preferences.count_rows("user_id = 'vera'") == 0


def test_the_worker_catches_up_and_refits_when_idle(svc):
    with svc.client() as c:
        assert c.post("/v1/feedback", json=comparison("walt")).status_code == 201
    svc.runtime.wait_for_background()
    assert svc.runtime.ingest.log.backlog() == (0, 0)
    record = svc.runtime.store.get_user("acme", "walt")  # written by the background refit, no read needed
    assert record is not None and record.n_preferences == 1 and record.pal_logits is not None
