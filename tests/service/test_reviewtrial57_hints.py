"""review trial57: a misspelt value of a closed set is answered with a value close to it, in any case, and a value far
from every one with none (the real app over HTTP); a client's key repeated in an import's hint is escaped."""

from __future__ import annotations

import json

import pytest

from tests.service.tiny import start_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("reviewtrial57"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


@pytest.mark.parametrize(("method", "path", "kwargs", "param", "meant"), [
    # far from every choice: difflib's ratio (0.6) named `predictive` and `contractions`
    ("POST", "/v1/users/rt57/next-comparison", {"json": {"target": "edited"}}, "target", None),
    ("PATCH", "/v1/users/rt57/stated-preferences", {"json": {"preferences": {"ratings": "less"}}}, "preferences.ratings", None),
    # the value in capitals: difflib compares case, and named none
    ("POST", "/v1/chat/completions", {"json": {"model": "pluralign", "messages": [{"role": "USER", "content": "Hi"}]}},
     "messages[0].role", "user"),
    ("POST", "/v1/users/rt57/next-comparison", {"json": {"target": "POPULATION"}}, "target", "population"),
    ("PATCH", "/v1/users/rt57/stated-preferences", {"json": {"preferences": {"LENGTH": "less"}}}, "preferences.LENGTH", "length"),
])
def test_a_value_outside_a_closed_set_is_hinted_only_with_one_close_to_it(svc, method, path, kwargs, param, meant):
    with svc.client("acme") as c:
        r = c.request(method, path, **kwargs)
        assert c.get("/v1/users/rt57").status_code == 404  # nothing stored
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    message = r.json()["error"]["message"]
    assert (f"(did you mean `{meant}`?)" in message) if meant else ("did you mean" not in message), message


def test_a_key_repeated_in_an_import_hint_has_its_bidi_override_escaped(svc):
    """`cho\u202esen` beside a missing `chosen`: the hint repeated the key as sent, an override that reverses what
    an app shows after it; it is written as its escape, as the error's `param` is."""
    row = {"prompt": "Tea?", "cho\u202esen": "Yes.", "rejected": "No."}
    with svc.client("acme") as c:
        r = c.post("/v1/users/rt57b/import", content=json.dumps(row, ensure_ascii=False).encode())
        assert c.get("/v1/users/rt57b").status_code == 404  # nothing stored
    assert r.status_code == 400 and r.json()["error"]["param"] == "line 1.chosen", r.text
    message = r.json()["error"]["message"]
    assert "the row has `cho\\u202esen` (did you mean `chosen`?)" in message and "\u202e" not in message, message
