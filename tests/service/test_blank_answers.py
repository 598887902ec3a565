"""Blank generated answers over real HTTP: a choice or rating of a blank answer is refused, blank
other choices are left out of the pairs a choice stores, and blank rows an older version stored
neither break the preference export nor show up as a profile's example answers."""

from __future__ import annotations

import json

import pytest

from pluralign.store.tables import StoredPreference
from tests.service.tiny import fixed_answers, fixed_service

CHAT = {"model": "pluralign", "n": 4, "max_tokens": 3, "pluralign": {"styles": False},
        "messages": [{"role": "user", "content": "Say something."}]}


FixedGenerator = fixed_answers(["Sure,", "", "", ""])  # what a short `max_tokens` with a `stop` string can give


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fixed_service(tmp_path_factory.mktemp("blank"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator) as service:
        yield service


def chat(client, user: str, texts: list[str]) -> dict:
    FixedGenerator.texts = texts
    r = client.post("/v1/chat/completions", json={**CHAT, "user": user})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(c["message"]["content"] for c in body["choices"]) == sorted(texts)
    return body


def test_a_choice_of_a_blank_answer_is_refused_and_blank_rivals_are_left_out(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankgen", ["Sure,", "", "\u3164", "Yes."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        blank = next(i for i, t in enumerate(texts) if t == "")
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": blank})
        assert r.status_code == 400 and r.json()["error"]["param"] == "chosen_index", r.text
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Sure,")})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/blankgen/preferences").json()["data"]
    assert [(p["chosen"], p["rejected"]) for p in rows] == [("Sure,", "Yes.")]


def test_a_choice_among_blank_rivals_only_is_refused(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankgen2", ["Sure,", "", "", "Sure,\u200b"])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Sure,")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chosen_index", r.text


@pytest.mark.parametrize("rating", [1, 3, 5])
def test_a_rating_of_a_blank_answer_is_refused(svc, rating):
    with svc.client("acme") as c:
        body = chat(c, "blankrate", ["", "", "", ""])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": rating})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_id", r.text


def test_a_rating_leaves_blank_rivals_out(svc):
    with svc.client("acme") as c:
        body = chat(c, "blankrate2", ["Fine.", "", "\u2800", "Fine.\u3164"])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 1})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/blankrate2/preferences").json()["data"]
    assert [(p["chosen"], p["rejected"]) for p in rows] == [("Fine.", "")]  # no rival left: kept, not compared


def test_blank_rows_stored_by_an_older_version_are_skipped_by_the_export_and_the_summary(svc):
    rt = svc.runtime
    pairs = [("Say something.", "Sure,", ""), ("Say something.", "", "Sure,"), ("Say something.", "\u3164", "No."),
             ("Say something.", "Yes.", "Yes.\u3164"), ("Tea?", "Green tea.", "Black coffee.")]
    rows = [StoredPreference(tenant="acme", user_id="olduser", pref_id=f"old{i}", prompt=p, chosen=a, rejected=b, kind="choice",
                             created_at=1.0 + i) for i, (p, a, b) in enumerate(pairs)]
    vec = lambda texts: rt.encoder.encode(list(texts))  # noqa: E731
    rt.store.add_preferences(rows, vec(r.prompt for r in rows), vec(r.chosen for r in rows), vec(r.rejected for r in rows))
    with svc.client("acme") as c:
        r = c.get("/v1/users/olduser/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert [(x["chosen"], x["rejected"]) for x in lines] == [("Green tea.", "Black coffee.")]
        assert c.post("/v1/users/olduser/import", content=r.content, headers={"content-type": "application/x-ndjson"}).status_code == 201
        profile = c.get("/v1/users/olduser").json()
    nearest = profile["summary"]["nearest_prototype"]
    examples = [e["answer"] for e in nearest["highest"] + nearest["lowest"]]
    assert examples and all(e.strip("\u3164 ") for e in examples)
    assert "''" not in " ".join(profile["summary"]["sentences"])


def test_a_time_an_import_refuses_that_an_older_version_stored_is_exported_as_null(svc):
    """Session rows42: imports refuse a `created_at` outside [0, 9999-12-31] (before, -5 and 1e300 were stored).
    A row stored so is exported with a null time (stamped on receipt again), so the file still imports."""
    rt = svc.runtime
    rows = [StoredPreference(tenant="acme", user_id="oldtimes", pref_id=f"t{i}", prompt=f"Tea {i}?", chosen="Green tea.",
                             rejected="Black coffee.", kind="choice", created_at=t) for i, t in enumerate((-5.0, 1e300, 1_700_000_000.5))]
    vec = lambda texts: rt.encoder.encode(list(texts))  # noqa: E731
    rt.store.add_preferences(rows, vec(r.prompt for r in rows), vec(r.chosen for r in rows), vec(r.rejected for r in rows))
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldtimes/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
        assert [json.loads(line)["created_at"] for line in r.text.splitlines()] == [None, 1_700_000_000.5, None]  # sorted by the stored time
        imported = c.post("/v1/users/oldtimes/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text


def test_comparison_feedback_refuses_an_answer_of_invisible_characters(svc):
    with svc.client("acme") as c:
        for chosen in ["\u3164", "\uffa0", "\u115f\u1160", "\u2800", "\u034f", "\ufe0f", "\x00", "\x01\x02\x7f", "\u0301"]:
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv", "prompt": "Q", "chosen": chosen, "rejected": "No."})
            assert r.status_code == 400 and r.json()["error"]["param"] == "chosen", (repr(chosen), r.text)
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv", "prompt": "Q", "chosen": "Yes.", "rejected": "Yes.\u3164"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "rejected", r.text


def test_a_message_role_an_import_refuses_that_an_older_version_stored_is_exported_as_text(svc):
    """Review rw42. Since rows42 an imported message's role must be the chat route's (`bot` is a 400 naming
    `line N.chosen[1].role`); before, such a conversation was stored with its TRL form, which the preference export
    wrote back as it came, so the export of a user holding one did not import again. Such a row is exported in TRL's
    standard form, its stored text (`bot: ...` where the reader joined the messages), as an import stores it. (Into
    the same tenant's user, whose stored row keeps its TRL form, that row is a 409 naming its `pref_id`: left to a change of
    `differing_field`.)"""
    from pluralign.data.record import TrlRow

    rt = svc.runtime
    ask = {"role": "user", "content": "Tea or coffee?"}
    trl = TrlRow(chosen=[ask, {"role": "bot", "content": "Tea."}], rejected=[ask, {"role": "bot", "content": "Coffee."}])
    row = StoredPreference(tenant="acme", user_id="oldroles", pref_id="r0", prompt="Tea or coffee?", chosen="Tea.",
                           rejected="Coffee.", kind="comparison", created_at=1_700_000_000.0, trl=trl)
    vec = lambda texts: rt.encoder.encode(list(texts))  # noqa: E731
    rt.store.add_preferences([row], vec([row.prompt]), vec([row.chosen]), vec([row.rejected]))
    with svc.client("acme") as c:
        r = c.get("/v1/users/oldroles/export", params={"format": "preferences"})
        assert r.status_code == 200, r.text
    with svc.client("globex") as c:  # the file moved to another tenant (or service)
        imported = c.post("/v1/users/oldroles/import", content=r.content, headers={"content-type": "application/x-ndjson"})
        assert imported.status_code == 201, imported.text
    (line,) = [json.loads(text) for text in r.text.splitlines()]
    assert (line["prompt"], line["chosen"], line["rejected"]) == ("Tea or coffee?", "Tea.", "Coffee."), line
