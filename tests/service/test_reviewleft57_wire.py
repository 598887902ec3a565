"""review left57: a path parameter whose bytes are no UTF-8 or hold NUL is a 400 naming it on every route, in every
one of its parameters (not only the first) and after an encoded `/` in it (`a%2F%FF`). left57's check found each
parameter's bytes by splitting the path once decoded at the template's places: a `%2F` under /v1/users/ (kept in its
segment) or in a `:path` parameter (`/v1/models/{model_id:path}`, the docs' assets), which Litestar's template does not
mark, moved the places, so `/v1/models/a%2F%FF` was the 404 `no model 'a/\ufffd'`, a retraction's pref_id `a%2F%FF` a
400 repeating U+FFFD, and `/schema/assets/a%2F%00` a 500."""

from __future__ import annotations

import pytest

from tests.service.test_left57_wire import parameter_paths, sent_to, wire_service


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with wire_service(tmp_path_factory.mktemp("reviewleft57"), tiny_generator_dir, tiny_pal_dir, minilm) as service:
        yield service


@pytest.mark.parametrize("sent, said", [("%FF", "is no UTF-8 text: byte 0xff"), ("%00", "holds NUL (`%00`"),
                                        ("a%2F%FF", "is no UTF-8 text: byte 0xff at byte 3"),
                                        ("a%2F%00", "holds NUL (`%00`, at byte 3")])
def test_each_path_parameter_not_utf_8_or_holding_nul_is_a_400_naming_it_after_an_encoded_slash_too(svc, sent, said):
    """Every parameter of every route: a 400 naming it and the byte; where an encoded `/` makes the path one no route
    has (`/admin/jobs/a%2F%FF`), the 404 or 405 of that path. Never a 500, a handler's 404, nor U+FFFD or NUL echoed."""
    cases = parameter_paths(svc, sent)
    assert len(cases) >= 22 and {"pref_id", "model_id", "file_path", "job_id", "name"} <= {name for *_, name in cases}, cases
    wrong = []
    for method, path, name in cases:
        r, error = sent_to(svc, method, path)
        message = error.get("message", "")
        refused = r.status_code == 400 and error.get("param") == name and said in message
        unrouted = "/" in sent.replace("%2F", "/") and (message.startswith("no route `") or r.status_code == 405)
        if not (refused or unrouted) or "\ufffd" in r.text or "\x00" in r.text:
            wrong.append((method, path, r.status_code, r.text[:200]))
    assert not wrong, wrong


@pytest.mark.parametrize("path, name", [("/v1/models/a%2F%FF", "model_id"), ("/schema/assets/a%2F%00", "file_path"),
                                        ("/v1/models/org%2Fm%2Fcaf%E9", "model_id")])
def test_a_path_parameter_bad_past_its_first_segment_is_a_400_naming_it(svc, path, name):
    """A `:path` parameter's bytes past an encoded `/`: before, `no model 'a/\ufffd'` and a 500."""
    with svc.client("acme") as c:
        r = c.get(path)
    assert r.status_code == 400 and r.json()["error"]["param"] == name, r.text


@pytest.mark.parametrize("since", ["20260101", "20260101123000", " 20260101"])
def test_an_audit_jobs_since_a_date_in_digits_in_quotes_is_told_its_seconds_not_to_drop_the_quotes(svc, since):
    """`params.since` "20260101" was told to give it as a number, without quotes: 20260101, which is then refused as a
    date written in digits (left57). Now it is told the date's seconds, as 20260101 is, and nothing is queued."""
    with svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": since}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "params.since" and "the date 2026-01-01" in error["message"], error
    assert "without quotes" not in error["message"] and "divide by" not in error["message"], error
