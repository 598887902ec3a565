"""Session 58 (hints58): hints over HTTP name only a field, parameter or value close to the one sent, and a value
outside a field's choices is read back from msgspec's error without compiling it (`ast.literal_eval` warned of a
bad escape, `\\s`, and could not read a feedback kind holding a quote)."""

from __future__ import annotations

import pytest

from tests.service.tiny import field_named, serving_a_comparison

COMPARISON = {"type": "comparison", "user": "hints58", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
KINDS = "`choice`, `comparison`, `rating`, `edit`"


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with serving_a_comparison(tmp_path_factory.mktemp("hints58-data"), tiny_generator_dir, tiny_pal_dir, minilm, COMPARISON) as service:
        yield service


def _said(svc, path: str, body: dict, who: str = "acme") -> tuple[str | None, str]:
    with svc.client(who) as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, (r.status_code, r.text)
    return field_named(r), r.json()["error"]["message"]


@pytest.mark.filterwarnings("error::DeprecationWarning")
@pytest.mark.parametrize("kind, got, hint", [
    ("compar\\son", "'compar\\\\son'", " (did you mean `comparison`?)"),  # before: no hint (literal_eval: invalid escape)
    ("comparison's", "\"comparison's\"", " (did you mean `comparison`?)"),  # before: no hint, got 'comparison's'
    ("back\\slash", "'back\\\\slash'", ""),
    ("\\N{BULLET}", "'\\\\N{BULLET}'", ""),  # before: got '•' (the escape compiled: not what was sent)
])
def test_a_feedback_kind_outside_the_kinds_is_told_as_sent_without_a_warning(svc, kind, got, hint):
    """msgspec writes a tag it refused as its text in quotes (not a repr): `'compar\\son'` read back with
    `ast.literal_eval` raised Python 3.11's DeprecationWarning (invalid escape sequence), a SyntaxError under
    `-W error`, and read `\\N{BULLET}` as a bullet; `comparison's` could not be read at all."""
    field, message = _said(svc, "/v1/feedback", {**COMPARISON, "type": kind})
    assert field == "type"
    assert message == f"`type`: must be one of {KINDS}; got {got}{hint}", message


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_a_role_outside_the_roles_is_told_as_sent(svc):
    """A Literal field's refused value is msgspec's repr of it: read back exactly, escapes and quotes too."""
    roles = "`system`, `developer`, `user`, `assistant`, `tool`, `function`"
    for role, got, hint in (("usr", "'usr'", " (did you mean `user`?)"), ("us\\er", "'us\\\\er'", " (did you mean `user`?)"),
                            ("it's \"x\"", "'it\\'s \"x\"'", "")):
        field, message = _said(svc, "/v1/chat/completions", {"model": "pluralign", "messages": [{"role": role, "content": "Hi"}]})
        assert field == "messages[0].role"
        assert message == f"`messages[0].role`: must be one of {roles}; got {got}{hint}", message


def test_an_imported_created_at_written_as_a_date_in_digits_is_a_400_naming_it(svc):
    """Before: 201, the row stored with created_at 20260101: 1970-08-23 as seconds, first in the user's history."""
    import json

    good = {"prompt": "Milk?", "chosen": "Yes.", "rejected": "No.", "created_at": 1_767_225_600}
    with svc.client("acme") as c:
        r = c.post("/v1/users/dated58/import", content=json.dumps(good) + "\n" + json.dumps({**good, "created_at": 20260101}))
        assert r.status_code == 400 and field_named(r) == "line 2.created_at", (r.status_code, r.text)
        assert r.json()["error"]["message"] == (
            "`line 2.created_at`: must be a Unix time in seconds, not a date written in digits: 20260101 as seconds is "
            "1970-08-23T11:48:21 UTC (the date 2026-01-01 written YYYYMMDD? give its Unix time, 1767225600.0 for this one "
            "read as UTC)"), r.text
        assert c.get("/v1/users/dated58/preferences").json().get("total", 0) == 0  # nothing of the body was stored


CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize("path, body, named, hint", [
    # far from every field: none (difflib, ratio 0.6, named `stream` for `temp`)
    ("/v1/chat/completions", {**CHAT, "temp": 0.5}, "temp", ""),
    # a slip: the field meant (letters swapped, dropped)
    ("/v1/chat/completions", {**CHAT, "max_tokesn": 5}, "max_tokesn", " (did you mean `max_tokens`?)"),
    ("/v1/chat/completions", {**CHAT, "temperatur": 0.5}, "temperatur", " (did you mean `temperature`?)"),
    # the body gives the close one already: none (before: `max_tokens` beside `max_tokens`, `chosen` beside `chosen`)
    ("/v1/chat/completions", {**CHAT, "max_tokens": 2, "max_token": 5}, "max_token", ""),
    ("/v1/feedback", {**COMPARISON, "chosne": "Tea."}, "chosne", ""),
    # a null is no value given: the one meant is named
    ("/v1/chat/completions", {**CHAT, "max_tokens": None, "max_token": 5}, "max_token", " (did you mean `max_tokens`?)"),
])
def test_an_unknown_body_field_is_hinted_only_with_a_close_field_not_given(svc, path, body, named, hint):
    field, message = _said(svc, path, body)
    assert field == named
    assert message.startswith(f"`{named}`: unknown field{hint} ("), message
    assert hint or "did you mean" not in message, message


@pytest.mark.parametrize("query, named, hint", [
    ("/v1/users/hints58/export?sort=asc", "sort", ""),  # before: (did you mean `format`?)
    ("/v1/users/hints58/preferences?state=new", "state", ""),  # before: (did you mean `after`?)
    ("/v1/users/hints58/export?form=preferences", "form", " (did you mean `format`?)"),
    ("/v1/users/hints58/preferences?lmiit=2", "lmiit", " (did you mean `limit`?)"),
    ("/v1/users/hints58/preferences?limit=1&limt=2", "limt", ""),  # before: (did you mean `limit`?), given already
])
def test_an_unknown_query_parameter_is_hinted_only_with_a_close_one_not_given(svc, query, named, hint):
    with svc.client("acme") as c:
        r = c.get(query)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter", r.text
    message = r.json()["error"]["message"]
    assert field_named(r) == named and message.startswith(f"`{named}`: unknown query parameter{hint}; this route takes "), message


@pytest.mark.parametrize("params, named, hint", [
    ({"kk": 4}, "kk", " (did you mean `k`?)"),
    ({"k": 4, "kk": 4}, "kk", ""),  # before: (did you mean `k`?), given already
    ({"k": None, "kk": 4}, "kk", " (did you mean `k`?)"),  # a null is not given (review hints58: was no hint)
    ({"epcohs": 1}, "epcohs", " (did you mean `epochs`?)"),
    ({"users": 1}, "users", ""),  # before: (did you mean `lr_user`?)
])
def test_an_unknown_job_parameter_is_hinted_only_with_a_close_one_not_given(svc, params, named, hint):
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "pal", "params": params})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter", r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"`params.{named}`: unknown parameter of a `pal` job{hint}; it takes "), message


@pytest.mark.parametrize("body, named", [
    ({**CHAT, "frequency_penalty": 0.5, "frequency_penaltys": 0.1}, "frequency_penaltys"),  # was: `presence_penalty`
    ({**CHAT, "stop": "x", "sto": "y"}, "sto"),  # was: `store`
])
def test_a_slip_of_a_field_given_is_no_hint_of_another(svc, body, named):
    """review hints58: the field given was left out before matching, and the next closest, another field, named."""
    field, message = _said(svc, "/v1/chat/completions", body)
    assert field == named and message.startswith(f"`{named}`: unknown field (docs/api.md"), message
