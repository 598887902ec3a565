"""Answers that differ only by characters that render as nothing, over real HTTP: a comparison of
two of them is refused as the same answer, a choice compares with each answer once, an edit that
only adds a soft hyphen is refused, and the next-comparison pool never offers two of them as a pair.
What is stored comes back as written (the key is for comparing only)."""

from __future__ import annotations

import pytest

from tests.service.tiny import fixed_answers, fixed_service, stated_length_order

COOP = "The co-op opens at nine."
SOFT = "The co-op o\u00adpens at nine."  # a soft hyphen a word processor left
ZWSP = "The co-op\u200b opens at nine."  # a zero-width space a web page's copy brought
BIDI = "\u200eThe co-op opens\u2060 at nine\ufe0e.\ufeff"  # LRM, word joiner, a variation selector, a BOM
NBSP = "The co-op opens\u00a0at nine."  # a no-break space a word processor or a web page put in
SPACED = "The co-op  opens at nine."  # two spaces
FINE = "Sure, I can help you find a long and detailed plan for that."
LOOKALIKES = [FINE, FINE.replace("find", "\ufb01nd"), FINE.replace(" ", "\u00a0", 3), FINE.replace(" long", "  long")]  # a ligature ﬁ


FixedGenerator = fixed_answers([COOP])


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fixed_service(tmp_path_factory.mktemp("text33"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator) as service:
        yield service


def chat(client, user: str, texts: list[str]) -> dict:
    FixedGenerator.texts = texts
    r = client.post("/v1/chat/completions", json={"model": "pluralign", "n": len(texts), "max_tokens": 3, "user": user,
                                                  "pluralign": {"styles": False}, "messages": [{"role": "user", "content": "When?"}]})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("rejected", [SOFT, ZWSP, BIDI, NBSP, SPACED])
def test_a_comparison_of_answers_differing_only_by_invisible_characters_is_refused(svc, rejected):
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv1", "prompt": "When?", "chosen": COOP, "rejected": rejected})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rejected", r.text
    assert "same answer" in r.json()["error"]["message"], r.text


def test_a_choice_compares_with_each_answer_once_whatever_invisible_characters_it_holds(svc):
    with svc.client("acme") as c:
        body = chat(c, "inv2", [COOP, SOFT, ZWSP, "Never."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        assert sorted(texts) == sorted([COOP, SOFT, ZWSP, "Never."])  # served as generated
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("Never.")})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/inv2/preferences").json()["data"]
    assert len(rows) == 1 and rows[0]["chosen"] == "Never." and rows[0]["rejected"] in (COOP, SOFT, ZWSP), rows


@pytest.mark.parametrize("edited", [SOFT, NBSP])  # NBSP: session spell62, stored before as an edit a person cannot see
def test_an_edit_that_only_adds_a_soft_hyphen_is_refused_as_identical(svc, edited):
    with svc.client("acme") as c:
        body = chat(c, "inv3", [COOP])
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": body["id"], "edited": edited})
    assert r.status_code == 400 and r.json()["error"]["param"] == "edited", r.text


def test_next_comparison_never_offers_two_spellings_of_one_answer_as_a_pair(svc):
    with svc.client("acme") as c:
        ask = lambda user, answers: c.post(f"/v1/users/{user}/next-comparison", json={"pool": [{"prompt": "When?", "answers": answers}]})  # noqa: E731
        r = ask("inv4", [COOP, SOFT, ZWSP, BIDI])
        assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text  # one answer four times: nothing to ask
        r = ask("inv4", [COOP, ZWSP, "Never."])
        assert r.status_code == 200, r.text
        body = r.json()
        # COOP and ZWSP are one candidate: one pair considered (not COOP/Never. and ZWSP/Never. twice)
        assert "Never." in body["answers"] and body["pairs"] == 1, body
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "inv5", "prompt": "When?", "chosen": SOFT, "rejected": "Never."})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/inv5/preferences").json()["data"]
        assert rows[0]["chosen"] == SOFT  # stored as written: the key is for comparing only
        r = ask("inv5", [ZWSP, "Never."])  # asked already, in another spelling
    assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text


def test_answers_a_person_cannot_tell_apart_are_never_offered_as_a_pair(svc):
    """Session spell62. Answers that differ only by a no-break space, a run of spaces or a ligature (\ufb01 for "fi")
    were told apart (`answer_key`), so next-comparison offered two of them as a pair from a supplied pool (200 for a
    pool of nothing else, 6 pairs of 4 answers with one other) and from the tenant's stored pairs, and a pool of one
    question answered was not over. Now they are one answer (`look_key`), as a `choice` compares them."""
    from pluralign.store.tables import StoredPreference

    svc.keys.setdefault("look62", svc.runtime.keys.issue("look62"))  # a tenant of its own: its stored pairs are these
    ask = lambda c, user, body: c.post(f"/v1/users/{user}/next-comparison", json=body)  # noqa: E731
    with svc.client("look62") as c:
        for answers in ([COOP, NBSP], [COOP, SPACED, NBSP], LOOKALIKES):
            r = ask(c, "look1", {"pool": [{"prompt": "When?", "answers": answers}]})
            assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text  # nothing a person can pick between
            assert "spacing" in r.json()["error"]["message"], r.text
        r = ask(c, "look1", {"pool": [{"prompt": "When?", "answers": [COOP, NBSP, SPACED, "Never."]}]})
        assert r.status_code == 200 and r.json()["pairs"] == 1, r.text
        assert "Never." in r.json()["answers"], r.text
        # review spell62: one question in two items of one prompt is one candidate pair (it counted twice)
        two = [{"prompt": "When?", "answers": [COOP, "Never."]}, {"prompt": "When?", "answers": [NBSP, "Never."]}]
        r = ask(c, "look1", {"pool": two})
        assert r.status_code == 200 and r.json()["pairs"] == 1, r.text
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "look1", "prompt": "When?", "chosen": "Never.", "rejected": SPACED})
        assert r.status_code == 201, r.text
        r = ask(c, "look1", {"pool": [{"prompt": "When?", "answers": [NBSP, "Never.", COOP]}]})  # asked already: over
        assert r.status_code == 400 and "answered every question" in r.json()["error"]["message"], r.text
    # a pair stored before comparisons of such answers were refused is never offered from the stored pairs (a tenant
    # whose only stored pair it is)
    svc.keys.setdefault("look62s", svc.runtime.keys.issue("look62s"))
    with svc.client("look62s") as c:
        rt = svc.runtime
        rows = [StoredPreference(tenant="look62s", user_id="oldlook", pref_id="look0", prompt="When?", chosen=COOP, rejected=NBSP,
                                 kind="comparison", created_at=1.0)]
        embedded = lambda texts: rt.encoder.encode(list(texts))  # noqa: E731
        rt.store.add_preferences(rows, embedded([r.prompt for r in rows]), embedded([r.chosen for r in rows]), embedded([r.rejected for r in rows]))
        r = ask(c, "look2", {})
        assert r.status_code == 400 and r.json()["error"]["param"] == "pool", r.text


def test_chats_compare_never_names_two_choices_a_person_cannot_tell_apart(svc):
    """Session spell62. Chat's `pluralign.compare` weighed every returned choice that `answer_key` told apart, so of
    "fine." and "\ufb01ne." (a ligature) it named both ([0, 1]: a pair the user cannot answer), and a `choice` of
    another compared it with each of three that differ only by a ligature, no-break spaces or two spaces. Now they
    are one choice (`pickable`)."""
    svc.keys.setdefault("look62", svc.runtime.keys.issue("look62"))
    with svc.client("look62") as c:
        for texts in (["fine.", "\ufb01ne."], LOOKALIKES):
            body = chat(c, "look3", texts)
            assert body["pluralign"]["compare"] is None, body["pluralign"]
        body = chat(c, "look3", [*LOOKALIKES[:3], "No."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        pair = body["pluralign"]["compare"]
        assert pair is None or "No." in [texts[i] for i in pair], (texts, pair)
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": texts.index("No.")})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/look3/preferences").json()["data"]
    assert len(rows) == 1 and rows[0]["rejected"] in LOOKALIKES, rows
    # review spell62: a choice of a look-alike of an earlier choice beats "No." only, never the answer it looks like
    with svc.client("look62") as c:
        body = chat(c, "look4", [*LOOKALIKES[:3], "No."])
        texts = [ch["message"]["content"] for ch in body["choices"]]
        picked = next(i for i, t in enumerate(texts) if t in LOOKALIKES[1:3] and LOOKALIKES[0] in texts)
        r = c.post("/v1/feedback", json={"type": "choice", "response_id": body["id"], "chosen_index": picked})
        assert r.status_code == 201, r.text
        rows = c.get("/v1/users/look4/preferences").json()["data"]
    assert [(row["chosen"], row["rejected"]) for row in rows] == [(texts[picked], "No.")], rows


def test_a_stated_length_preference_acts_on_thai_answers(svc):
    """Thai writes no spaces between words: "Sure" and "Tomorrow morning we will go for a walk in the
    park together" are each one unspaced run. Before text-features-4 each was one word, of equal
    `length`, and a stated "shorter" or "longer" did nothing between them."""
    short, long = "ได้ครับ", "พรุ่งนี้เช้าเราจะไปเดินเล่นที่สวนสาธารณะด้วยกัน"
    with svc.client("acme") as c:
        order = stated_length_order(c, "len-th", "พรุ่งนี้ทำอะไรดี", short, long)
    assert order == {"less": True, "more": False}, order


def test_an_imported_implicit_prompt_keeps_an_emoji_whole_and_an_nfd_prompt_shared(svc):
    """TRL's implicit-prompt form over POST /v1/users/{id}/import: the prompt two conversations share
    is found by grapheme clusters in NFC (character by character, "man ZWJ woman ZWJ" of two family
    emoji was the prompt, and an NFD question on one side shared only "Un caf")."""
    import json
    import unicodedata

    family = "Ours: \U0001F468\u200d\U0001F469\u200d\U0001F467"
    turn = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    rows = [
        {"chosen": family + " or not?", "rejected": family[:-1] + "\U0001F466 or not?"},
        {"chosen": turn("Un café ?") + [{"role": "assistant", "content": "Oui."}],
         "rejected": turn(unicodedata.normalize("NFD", "Un café ?")) + [{"role": "assistant", "content": "Non."}]},
    ]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    with svc.client("acme") as c:
        r = c.post("/v1/users/imp33/import", content=body, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 201, r.text
        stored = {row["prompt"]: (row["chosen"], row["rejected"]) for row in c.get("/v1/users/imp33/preferences").json()["data"]}
    assert set(stored) == {"Ours:", "Un café ?"}, stored
    assert stored["Ours:"][0].startswith(" \U0001F468\u200d\U0001F469") and stored["Un café ?"] == ("Oui.", "Non."), stored
