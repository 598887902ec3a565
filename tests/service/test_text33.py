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


@pytest.mark.parametrize("rejected", [SOFT, ZWSP, BIDI])
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


def test_an_edit_that_only_adds_a_soft_hyphen_is_refused_as_identical(svc):
    with svc.client("acme") as c:
        body = chat(c, "inv3", [COOP])
        r = c.post("/v1/feedback", json={"type": "edit", "response_id": body["id"], "edited": SOFT})
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
