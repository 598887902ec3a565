"""A third hostile pass on session 17's fixes, over real HTTP: a chat question of invisible
characters, a preference export of a user whose rows the file leaves out, emoji tag-sequence flags,
blank attribute names in feedback, the import's UTF-8 position, and the prefill bound on a single
candidate."""

from __future__ import annotations

import pytest

from pluralign.data.text import visible
from tests.service.test_blank_answers import FixedGenerator, chat
from tests.service.tiny import fixed_service, start_service

ENGLAND = "It is \U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"
SCOTLAND = "It is \U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with fixed_service(tmp_path_factory.mktemp("break17"), tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator) as service:
        yield service


@pytest.mark.parametrize("question", ["\u3164", "\u200b", "\x00", "\U000E0041", "\u2800\u0301"])
def test_a_chat_question_of_invisible_characters_is_refused(svc, question):
    with svc.client("acme") as c:
        r = c.post("/v1/chat/completions", json={"model": "pluralign", "user": "u1", "max_tokens": 2,
                                                 "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content", r.text


def test_a_user_whose_rows_the_preference_file_leaves_out_exports_an_empty_file(svc):
    with svc.client("acme") as c:
        # a rating with no visible rival is kept (a row with a blank side) and is no line of the preference file (an
        # edit of a blank served answer, which made such a row too, is refused: a 400 naming `response_id`)
        body = chat(c, "unrivalled", ["Hello there.", "", "", ""])
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": body["id"], "rating": 5})
        assert r.status_code == 201, r.text
        assert c.get("/v1/users/unrivalled/preferences").json()["total"] == 1
        r = c.get("/v1/users/unrivalled/export", params={"format": "preferences"})
        assert r.status_code == 200 and r.text == "", r.text  # was 404 "no user"
        assert c.get("/v1/users/nobody-at-all/export", params={"format": "preferences"}).status_code == 404


def test_emoji_tag_sequence_flags_stay_distinct(svc):
    assert visible(ENGLAND) == ENGLAND and visible(ENGLAND) != visible(SCOTLAND)
    with svc.client("acme") as c:
        r = c.post("/v1/feedback", json={"type": "comparison", "user": "flags", "prompt": "Which flag is England's?",
                                         "chosen": ENGLAND, "rejected": SCOTLAND})
    assert r.status_code == 201, r.text


def test_feedback_refuses_an_attribute_name_import_refuses(svc):
    with svc.client("acme") as c:
        for name in ("\u200b", "\u3164"):
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "attr", "prompt": "Q?", "chosen": "A", "rejected": "B",
                                             "attributes": {name: "v"}})
            assert r.status_code == 400 and r.json()["error"]["param"] == "attributes", r.text


def test_the_import_names_the_first_bad_byte_of_a_line(svc):
    body = b'{"prompt":"Q","chosen":"a","rejected":"b"}\n{"prompt":"Q","chosen":"ab\xff","rejected":"x"}\n'
    with svc.client("acme") as c:
        r = c.post("/v1/users/utf/import", content=body, headers={"Content-Type": "application/x-ndjson"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "line 2.chosen", r.text
    assert "byte 0xff at byte 27 of the line" in error["message"], error


def test_the_prefill_bound_holds_for_a_single_candidate(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm):
    server, svc = start_service(tmp_path, tiny_generator_dir, tiny_pal_dir, minilm, rerank=False, max_prefill_tokens=100)
    prompt = [{"role": "user", "content": "hello " * 200}]
    with server, svc.client("acme") as c:
        for options in ({"candidates": 1}, {"rerank": False}, {}):
            r = c.post("/v1/chat/completions", json={"model": "pluralign", "max_tokens": 1, "messages": prompt, "pluralign": options})
            assert r.status_code == 400 and "`max_prefill_tokens`" in r.text, (options, r.text)
