"""Feedback over real HTTP, checked row by row: what survived mutation testing (session 39)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.service.tiny import field_named, fixed_answers, fixed_service

ANSWERS = ["Answer A.", "Answer B.", "Answer C.", "Answer D."]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fixed_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, fixed_answers(ANSWERS)) as service:
        yield service


def chat(client, user, n=4, candidates=None):
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "Which answer?"}], "user": user, "n": n,
            "pluralign": {"candidates": candidates or n, "shots": 0, "styles": False}}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stored_rows(client, user, receipt):
    rows = {p["pref_id"]: p for p in client.get(f"/v1/users/{user}/preferences", params={"limit": 500}).json()["data"]}
    return [rows[i] for i in receipt["stored"]]


def test_a_choice_among_the_shown_choices_beats_only_those(svc):
    """`shown` lists the choices the user saw side by side: the pick beats those, never a returned choice
    the user was not shown."""
    with svc.client() as c:
        body = chat(c, "sam")
        texts = [ch["message"]["content"] for ch in body["choices"]]
        assert texts == ANSWERS  # reranking off: returned in generated order
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": 2, "shown": [0, 2]})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "sam", r.json())] == [("Answer C.", "Answer A.")]
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": 3, "shown": [3, 1]})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "sam", r.json())] == [("Answer D.", "Answer B.")]


def test_a_shown_index_past_the_returned_choices_is_a_400_naming_shown(svc):
    """`shown` [0, 4] of a response that returned 4 choices (indices 0-3): a 400 naming `shown`, nothing stored."""
    with svc.client() as c:
        body = chat(c, "sid")
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": 0, "shown": [0, 4]})
        assert r.status_code == 400, r.text
        assert field_named(r) == "shown" and "below the number of returned choices (4)" in r.text
        assert c.get("/v1/users/sid/preferences").json()["total"] == 0


def counter(svc, name: str, **labels) -> float:
    """The value of counter sample `name` (its `_total` name) with `labels`, 0 when absent, as /metrics says."""
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(svc.url + "/metrics")
    assert r.status_code == 200
    return sum(s.value for f in text_string_to_metric_families(r.text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_feedback_counters_count_rows_and_replays(svc):
    """pluralign_chat_completions_total grows by one for a chat, pluralign_feedback_rows_total by the rows
    stored (a choice among 4: 3 rows), pluralign_feedback_replayed_total by one for a retry answered from
    what was stored."""
    rows, replayed = counter(svc, "pluralign_feedback_rows_total", kind="choice"), counter(svc, "pluralign_feedback_replayed_total")
    chats = counter(svc, "pluralign_chat_completions_total", stream="false")
    with svc.client() as c:
        body = chat(c, "max")
        assert counter(svc, "pluralign_chat_completions_total", stream="false") == chats + 1
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": 1})
        assert r.status_code == 201 and len(r.json()["stored"]) == 3, r.text
        assert counter(svc, "pluralign_feedback_rows_total", kind="choice") == rows + 3
        comparison = {"type": "comparison", "user": "max", "prompt": "Which?", "chosen": "This one.", "rejected": "That one."}
        first = c.post("/v1/feedback", json=comparison, headers={"Idempotency-Key": "max-1"})
        again = c.post("/v1/feedback", json=comparison, headers={"Idempotency-Key": "max-1"})
        assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["stored"] == first.json()["stored"]
    assert counter(svc, "pluralign_feedback_replayed_total") == replayed + 1


def test_a_tie_is_never_a_few_shot_example(svc):
    """A comparison sent as a tie (the user likes both alike) is kept but never put in the next chat's
    context as a preferred/dispreferred example; a strict one is."""
    with svc.client() as c:
        tie = {"type": "comparison", "user": "tia", "prompt": "Which answer?", "chosen": "Answer A.", "rejected": "Answer B.", "tie": True}
        r = c.post("/v1/feedback", json=tie)
        assert r.status_code == 201, r.text
        body = {"model": "pluralign", "messages": [{"role": "user", "content": "Which answer?"}], "user": "tia",
                "pluralign": {"shots": 4}}
        assert c.post("/v1/chat/completions", json=body).json()["pluralign"]["history"] == []
        r = c.post("/v1/feedback", json={**tie, "tie": False})
        assert r.status_code == 201, r.text
        assert c.post("/v1/chat/completions", json=body).json()["pluralign"]["history"] == r.json()["stored"]


def test_the_same_feedback_on_one_response_sent_again_is_stored_once(svc):
    """An app's "which do you prefer?" button clicked twice, or its request sent again without an
    `Idempotency-Key` (a timeout, two tabs), sends one `choice`, `rating` or `edit` on one response
    several times, some at once: the user decided once, so it is stored once and the copies are answered
    as a replay (201, the first receipt, `Idempotent-Replayed: true`). Before (trial45a), every copy
    stored its rows again: 8 clicks on one choice made "based on 8 comparisons", each counted as the
    user's evidence. A different pick on the same response (another `shown` pair) is new feedback."""
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    client = OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="pluralign", user="dot", n=4, messages=[{"role": "user", "content": "Which answer?"}],
                                           extra_body={"pluralign": {"candidates": 4, "shots": 0, "styles": False}})
    response_id = reply.model_extra["pluralign"]["response_id"]
    pick = {"type": "choice", "response_id": response_id, "chosen_index": 1, "shown": [0, 1]}
    with svc.client() as c:
        first = c.post("/v1/feedback", json=pick)
        assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers, first.text
        with ThreadPoolExecutor(4) as pool:  # the same click again, four at once
            copies = list(pool.map(lambda _: svc.client().post("/v1/feedback", json=pick), range(4)))
        assert [r.status_code for r in copies] == [201] * 4, [r.text for r in copies]
        assert all(r.json()["stored"] == first.json()["stored"] and r.headers["Idempotent-Replayed"] == "true" for r in copies)
        rating = {"type": "rating", "response_id": response_id, "rating": 5}
        rated = [c.post("/v1/feedback", json=rating) for _ in range(2)]
        assert rated[1].json()["stored"] == rated[0].json()["stored"] and rated[1].headers["Idempotent-Replayed"] == "true"
        other = c.post("/v1/feedback", json={**pick, "chosen_index": 3, "shown": [2, 3]})  # another pair shown: new
        assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers, other.text
        assert c.get("/v1/users/dot/preferences").json()["total"] == 1 + 3 + 1
        assert c.get("/v1/users/dot").json()["summary"]["comparisons"] == 5


def test_a_pick_sent_again_after_another_pick_of_the_response_is_stored(svc):
    """A user who picks A, then B, then A again on one response (a rating of 5, then 1, then 5) changed
    their mind back: the last is their word now, new feedback, stored; a copy of it sent right after is
    still a replay. Before (review of trial45a) the derived key remembered the first A for as long as its
    rows were kept, so the third pick was answered `Idempotent-Replayed: true` with the first one's receipt
    and nothing stored: the user's history held A once and B once, a tie, where their last word was A.
    docs/api.md: pluralign_feedback_replayed_total counts each copy answered as a replay."""
    replayed = counter(svc, "pluralign_feedback_replayed_total")
    with svc.client() as c:
        response_id = chat(c, "ana")["id"]
        a = {"type": "choice", "response_id": response_id, "chosen_index": 0, "shown": [0, 1]}
        b = {**a, "chosen_index": 1}
        five, one = ({"type": "rating", "response_id": response_id, "rating": r} for r in (5, 1))
        for first, other in ((a, b), (five, one)):
            sent = [c.post("/v1/feedback", json=body) for body in (first, other, first, first)]
            assert [r.status_code for r in sent] == [201] * 4, [r.text for r in sent]
            assert [r.headers.get("Idempotent-Replayed") for r in sent] == [None, None, None, "true"]
            stored = [r.json()["stored"] for r in sent]
            assert stored[3] == stored[2] and not set(stored[2]) & set(stored[0]), stored
        assert c.get("/v1/users/ana/preferences").json()["total"] == 3 * 1 + 3 * 3  # a shown pair: 1 row; a rating of 4: 3
    assert counter(svc, "pluralign_feedback_replayed_total") == replayed + 2


def test_the_last_pick_is_found_once_its_rows_left_the_feedback_log(svc):
    """What a keyless pick is a copy of is the last feedback on its response wherever its rows are: still in the
    feedback log, or moved into the table (the worker moves them within moments, a restart replays the log and moves
    them too). Each move here is made at once (`flush`), so the copy and the pick after it look in the table only.
    Until review rt45 no test looked there: dropping the table's half of `_turns_on_response` passed every test,
    while it stored a copy sent a second after its first (turn 0 again) and answered A, B, A (after the moves) as a
    replay of the first A."""
    ingest = svc.runtime.ingest
    with svc.client() as c:
        response_id = chat(c, "moe")["id"]
        a = {"type": "choice", "response_id": response_id, "chosen_index": 0, "shown": [0, 1]}
        b = {**a, "chosen_index": 1}
        sent = []
        for body in (a, a, b, a, a):
            sent.append(c.post("/v1/feedback", json=body))
            assert sent[-1].status_code == 201, sent[-1].text
            ingest.flush()
            assert not ingest.log.pending_for("acme", "moe")
        assert [r.headers.get("Idempotent-Replayed") for r in sent] == [None, "true", None, None, "true"]
        stored = [r.json()["stored"] for r in sent]
        assert stored[1] == stored[0] and stored[4] == stored[3] and len({*stored[0], *stored[2], *stored[3]}) == 3, stored
        assert c.get("/v1/users/moe/preferences").json()["total"] == 3


def test_a_pick_sent_again_after_a_keyed_pick_of_the_response_is_stored(svc):
    """A without a key, B with an `Idempotency-Key`, then A again without: the user changed their mind back, and the last
    A is their word, stored (a copy of it right after is a replay). Until session older49 a keyed feedback took no turn
    of its response: the last A was answered as a replay of the first, nothing stored, and the user's last word was B.
    Checked with the rows still in the feedback log and once they are in the table."""
    ingest = svc.runtime.ingest
    with svc.client() as c:
        for user, flush in (("kai", False), ("kim", True)):
            response_id = chat(c, user)["id"]
            a = {"type": "choice", "response_id": response_id, "chosen_index": 0, "shown": [0, 1]}
            sent = []
            for body, key in ((a, None), ({**a, "chosen_index": 1}, f"{user}-b"), (a, None), (a, None)):
                sent.append(c.post("/v1/feedback", json=body, headers={"Idempotency-Key": key} if key else {}))
                assert sent[-1].status_code == 201, sent[-1].text
                if flush:
                    ingest.flush()
            assert [r.headers.get("Idempotent-Replayed") for r in sent] == [None, None, None, "true"], user
            stored = [r.json()["stored"] for r in sent]
            assert stored[3] == stored[2] and not set(stored[2]) & set(stored[0]), stored
            rows = [(p["chosen"], p["rejected"]) for p in c.get(f"/v1/users/{user}/preferences").json()["data"]]
            assert sorted(rows) == sorted([("Answer A.", "Answer B."), ("Answer B.", "Answer A."), ("Answer A.", "Answer B.")]), rows


def test_a_no_preference_sent_again_naming_the_other_choice_is_stored_once(svc):
    """Trial 49: a "no preference" between the two shown choices (`tie`, compare49) may name either of them as
    `chosen_index` (docs/api.md). Sent again naming the other one (an app's second click, its retry from another screen
    that names the other side) it states the same tie of the same two answers: a replay, as any copy. Before, it was a
    new turn with its own rows: the user's model counted the one "no preference" twice (`ties` 2). Failed before (seen)."""
    with svc.client() as c:
        response_id = chat(c, "noa")["id"]
        tie = {"type": "choice", "response_id": response_id, "chosen_index": 0, "shown": [0, 1], "tie": True}
        first = c.post("/v1/feedback", json=tie)
        again = c.post("/v1/feedback", json={**tie, "chosen_index": 1})
        assert first.status_code == again.status_code == 201, (first.text, again.text)
        assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["stored"] == first.json()["stored"], again.text
        assert c.get("/v1/users/noa").json()["user_model"]["ties"] == 1
        # a tie of another pair, or a pick with a winner, is new feedback
        other = c.post("/v1/feedback", json={**tie, "chosen_index": 2, "shown": [1, 2]})
        assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers, other.text
        assert c.get("/v1/users/noa").json()["user_model"]["ties"] == 2


def streamed_choices(client, user: str, n: int = 2) -> tuple[str, list[str]]:
    """(response id, the texts of its `choices` by `index`) of a streamed chat, rebuilt from its chunks as a client does."""
    body = {"model": "pluralign", "messages": [{"role": "user", "content": "Which answer?"}], "user": user, "n": n,
            "stream": True, "pluralign": {"candidates": n, "shots": 0, "styles": False}}
    texts = [""] * n
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    return chunks[0]["id"], texts


def test_a_rating_or_an_edit_of_the_second_choice_is_stored_against_it(svc):
    """An app that shows a response's n choices and lets the user rate or edit choice 1 sends `index` 1 (OpenAI's
    `choices[1].index`): the rows are about that answer, streamed or not. Before (index62), a rating or edit had no
    way to name a choice (`index` was an unknown field, a 400) and was always stored against `choices[0]`, the wrong
    answer for such an app."""
    with svc.client() as c:
        body = chat(c, "rho", n=2)
        first, second = (ch["message"]["content"] for ch in body["choices"])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5, "index": 1})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "rho", r.json())] == [(second, first)]
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": body["id"], "edited": "Answer B, shorter.", "index": 1})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "rho", r.json())] == [("Answer B, shorter.", second)]
        response_id, texts = streamed_choices(c, "rho")
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": response_id, "rating": 1, "index": 1})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "rho", r.json())] == [(texts[0], texts[1])]


def test_an_index_past_the_returned_choices_is_a_400_naming_index(svc):
    """`index` 2 of a response that returned 2 of its 4 candidates, and `index` 1 of a response an older release stored
    (it kept no count of the choices it returned: only its served answer is known), are a 400 naming `index`, nothing
    stored; such a response's `index` 0 is its served answer. (review index62: with 4 candidates, an `index` read
    among the candidates rather than the returned choices is caught here too, not only on the older row.)"""
    from pluralign.store import Interaction

    with svc.client() as c:
        body = chat(c, "ria", n=2, candidates=4)
        for kind, field in (("rating", {"rating": 4}), ("edit", {"edited": "Another answer."})):
            r = c.post("/v1/feedback", json={"type": kind, "response_id": body["id"], "index": 2, **field})
            assert r.status_code == 400 and field_named(r) == "index", r.text
            assert "below the number of returned choices (2)" in r.text, r.text
        old = Interaction(tenant="acme", user_id="ria", response_id="chatcmpl-" + "7" * 32, created_at=1.0, prompt="Which answer?",
                          messages=[{"role": "user", "content": "Which answer?"}], candidates=ANSWERS[:3], scores=[0.0] * 3,
                          chosen_index=1, history=[], model="m")  # `returned` None: an older release's row
        svc.runtime.store.add_interaction(old)
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": old.response_id, "rating": 4, "index": 1})
        assert r.status_code == 400 and field_named(r) == "index" and "(1)" in r.text, r.text
        assert c.get("/v1/users/ria/preferences").json()["total"] == 0
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": old.response_id, "rating": 4, "index": 0})
        assert r.status_code == 201, r.text
        assert {row["chosen"] for row in stored_rows(c, "ria", r.json())} == {"Answer B."}


def test_a_rating_of_another_choice_is_new_feedback_and_a_key_is_for_one_choice(svc):
    """A rating of choice 1 after the same rating of choice 0 (no `Idempotency-Key`) is the user's word on another
    answer, stored, not answered as a copy of the first; sent again, it is. Under one `Idempotency-Key` a rating of
    another choice is another request: the 422 of a reused key, nothing stored."""
    with svc.client() as c:
        response_id = chat(c, "roy", n=2)["id"]
        rating = {"type": "rating", "response_id": response_id, "rating": 5}
        sent = [c.post("/v1/feedback", json={**rating, "index": i}) for i in (0, 1, 1)]
        assert [r.status_code for r in sent] == [201] * 3, [r.text for r in sent]
        assert [r.headers.get("Idempotent-Replayed") for r in sent] == [None, None, "true"]
        keyed = [c.post("/v1/feedback", json={**rating, "index": i}, headers={"Idempotency-Key": "roy-1"}) for i in (0, 1)]
        assert [r.status_code for r in keyed] == [201, 422], [r.text for r in keyed]
        assert c.get("/v1/users/roy/preferences").json()["total"] == 3


@pytest.mark.slow  # two service starts (~0.8 CPU-s warm): `make test-crash`; fast: the in-process tests above
def test_after_a_restart_a_rating_or_an_edit_names_the_choice_of_a_stored_response(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    """A response served before a restart is read back from the store: `index` 1 still names its `choices[1]`, for a
    response streamed and one not, and `index` 2 of its 2 choices is still a 400 naming `index`."""
    answers = fixed_answers(ANSWERS[:2])
    with fixed_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, answers) as service, service.client() as c:
        body = chat(c, "rex", n=2)
        texts = [ch["message"]["content"] for ch in body["choices"]]
        streamed = streamed_choices(c, "rex")
    with fixed_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, answers) as service, service.client() as c:
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5, "index": 1})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "rex", r.json())] == [(texts[1], texts[0])]
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": streamed[0], "edited": "Answer B, shorter.", "index": 1})
        assert r.status_code == 201, r.text
        assert [(row["chosen"], row["rejected"]) for row in stored_rows(c, "rex", r.json())] == [("Answer B, shorter.", streamed[1][1])]
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5, "index": 2})
        assert r.status_code == 400 and field_named(r) == "index", r.text


def test_an_edit_identical_to_the_choice_it_rewrites_says_which_choice(svc):
    """An `edit` of `choices[1]` (`index` 1) whose text is that choice's is refused naming `edited` and that choice, not
    "the served answer" (`choices[0]`, which it differs from). Before (review index62), the 400 said "identical to the
    served answer" for an edit of any choice."""
    with svc.client() as c:
        body = chat(c, "ida", n=2)
        second = body["choices"][1]["message"]["content"]
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": body["id"], "edited": second, "index": 1})
        assert r.status_code == 400 and field_named(r) == "edited", r.text
        assert "identical to choices[1]" in r.text and "served answer" not in r.text, r.text


@pytest.mark.parametrize(("kind", "field", "other"), [("choice", "index", "chosen_index"), ("rating", "chosen_index", "index"),
                                                      ("edit", "chosen_index", "index")])
def test_the_other_kinds_name_for_a_choice_is_refused_naming_the_right_one(svc, kind, field, other):
    """A `choice` names its pick by `chosen_index`, a `rating` or `edit` its choice by `index`: one sent with the other's
    name is a 400 naming the field sent that says which name that kind takes (a client that learnt one kind's name
    would otherwise be told only of an unknown field). Before (review index62): "unknown field", no word of the other."""
    body = {"type": kind, "response_id": "chatcmpl-" + "0" * 32, field: 1, **{"choice": {"chosen_index": 0}, "rating": {"rating": 4},
                                                                           "edit": {"edited": "Shorter."}}[kind]}
    with svc.client() as c:
        r = c.post("/v1/feedback", json=body)
    assert r.status_code == 400 and field_named(r) == field, r.text
    assert f"`{other}`" in r.json()["error"]["message"], r.text
