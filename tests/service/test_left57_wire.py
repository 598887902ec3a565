"""left57: bad input over HTTP, each a 400 naming its field: an audit's `since` written as a date in digits
(20260101), which was read as Unix seconds (1970-08-23) and audited every comparison; a path parameter whose bytes are
no UTF-8 or hold NUL, which Litestar read as U+FFFD and a 404 repeated (`no job '\ufffd'`), or a 500 (NUL on the
docs' assets); a user id sent as a JSON number, told of pandas (an import) or nothing (feedback) where it is JSON."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.service.tiny import fixed_answers, fixed_service

FixedGenerator = fixed_answers(["Tea."])


def wire_service(folder, tiny_generator_dir, tiny_pal_dir, minilm):
    """The service these tests (and test_reviewleft57_wire's) send bad input to: a fixed answer, the admin's routes."""
    from service.admin.controllers import ADMIN_HANDLERS

    return fixed_service(folder, tiny_generator_dir, tiny_pal_dir, minilm, FixedGenerator, admin_handlers=ADMIN_HANDLERS)


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    with wire_service(tmp_path_factory.mktemp("left57"), tiny_generator_dir, tiny_pal_dir, minilm) as service:
        yield service


def jobs(admin) -> int:
    r = admin.get("/admin/jobs", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["jobs"])


@pytest.mark.parametrize("since, shown, seconds", [
    (20260101, "the date 2026-01-01 written YYYYMMDD", "1767225600.0"),  # `date +%Y%m%d`: 1970-08-23 as seconds
    (202601011230, "the date 2026-01-01 12:30:00 written YYYYMMDDhhmm", "1767270600.0"),  # the year 8390 as seconds
    (20260101123000, "the date 2026-01-01 12:30:00 written YYYYMMDDhhmmss", "1767270600.0"),  # was "milliseconds?"
])
def test_an_audit_since_written_as_a_date_in_digits_is_a_400_with_its_seconds_nothing_queued(svc, since, shown, seconds):
    """The audit route's `since` and an audit job's `params.since` (a JSON number, also given as a float)."""
    with svc.client("admin") as admin:
        before = jobs(admin)
        answers = {"since": admin.get(f"/admin/audits/fairness?group_by=segment&since={since}&wait=0")}
        for sent in (since, float(since)):
            answers["params.since"] = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "since": sent}})
            for param, r in answers.items():
                assert r.status_code == 400, (param, r.text)
                error = r.json()["error"]
                assert error["param"] == param and shown in error["message"], error
                assert f"give its Unix time, {seconds} for this one read as UTC" in error["message"], error
                assert "divide by" not in error["message"], error
        assert jobs(admin) == before


def test_an_audit_since_a_time_in_seconds_is_queued_as_before(svc):
    with svc.client("admin") as admin:
        r = admin.get("/admin/audits/fairness?group_by=segment&since=1767225600&wait=0")
    assert r.status_code in (200, 202), r.text


# bytes no path parameter may hold once percent-decoded: 0xFF (never in UTF-8), an overlong `/` (0xC0 0xAF), an
# overlong 3-byte form, a lone surrogate (U+D800 encoded), a Latin-1 `é`, NUL alone and inside a name
NOT_UTF8 = ["%FF", "%C0%AF", "%E0%80%AF", "%ED%A0%80", "caf%E9"]
NUL = ["%00", "a%00b"]


def parameter_paths(svc, sent: str, first_only: bool = False) -> list[tuple[str, str, str]]:
    """(method, path, parameter) for each parameter of each route of the app (HEAD and OPTIONS aside), or each route's
    first one only (`first_only`): `sent` in that parameter, `x` in the others."""
    found = []
    for route in svc.server.server.config.app.routes:
        pieces = re.split(r"\{([^:}]+)[^}]*\}", route.path)  # text, name, text, name, ..., text
        names = pieces[1::2]
        for k, name in enumerate(names[:1] if first_only else names):
            values = ["x"] * k + [sent] + ["x"] * (len(names) - k - 1)
            path = "".join(piece if i % 2 == 0 else values[i // 2] for i, piece in enumerate(pieces))
            found += [(method, path, name) for method in sorted(getattr(route, "methods", ())) if method not in ("HEAD", "OPTIONS")]
    return found


def sent_to(svc, method: str, path: str) -> tuple[httpx.Response, dict]:
    """`method` `path` with the key its route takes (the admin's under /admin, acme's elsewhere) and a body `{}` where
    it takes one: the answer and its JSON `error` ({} when it has none)."""
    with svc.client("admin" if path.startswith("/admin") else "acme") as c:
        r = c.request(method, path, json={} if method in ("POST", "PUT", "PATCH") else None)
    return r, r.json().get("error", {}) if r.headers.get("content-type", "").startswith("application/json") else {}


def test_every_path_parameter_that_is_no_utf_8_or_holds_nul_is_a_400_naming_it(svc):
    """Each route with a path parameter (the users', the admin's jobs, dead letters and tenants, /v1/models, the docs'
    pages and assets), sent each of NOT_UTF8 and NUL in its first one: a 400 naming that parameter, saying which byte,
    never a 404 repeating U+FFFD (`no job '\ufffd'`, `no model '\ufffd'`) nor a 500 (`%00` in /schema/assets/)."""
    wrong = []
    for sent in NOT_UTF8 + NUL:
        routes = parameter_paths(svc, sent, first_only=True)
        assert len(routes) >= 20 and any(path.startswith("/admin/jobs/") for _, path, _ in routes), routes
        said = "is no UTF-8 text: byte 0x" if sent in NOT_UTF8 else "holds NUL (`%00`"
        for method, path, name in routes:
            r, error = sent_to(svc, method, path)
            if r.status_code != 400 or error.get("param") != name or said not in error.get("message", "") \
                    or "\ufffd" in r.text or "\x00" in r.text:
                wrong.append((method, path, r.status_code, r.text[:200]))
    assert not wrong, wrong


@pytest.mark.parametrize("method, path, sent", [("GET", "/v1/nope/caf%E9", "/v1/nope/caf%E9"),
                                                ("GET", "/admin/jobz/%FF", "/admin/jobz/%FF"),
                                                ("PUT", "/admin/jobs/%FF", "/admin/jobs/%FF")])
def test_a_path_no_route_has_that_is_no_utf_8_is_shown_as_sent(svc, method, path, sent):
    """A 404 (or 405) of a path whose bytes are no UTF-8 shows the path percent-encoded as sent, not as U+FFFD."""
    with svc.client("admin") as c:
        r = c.request(method, path)
    assert r.status_code in (404, 405), r.text
    message = r.json()["error"]["message"]
    assert f"`{method} {sent}`" in message and "\ufffd" not in r.text, message


COMPARISON = {"prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}


@pytest.mark.parametrize("user", [3.0, 3])
def test_a_user_id_sent_as_a_json_number_is_told_to_send_a_json_string(svc, user):
    """Feedback's, /v1/rewards/score's and a chat's `user` said only "Expected `str`, got `float`"; an import's `user_id` of 3.0
    was told of pandas' int columns and `df['user_id'].astype('Int64')`, though the body is JSON a client wrote. Now
    each says to send a JSON string (an import's int `user_id` is read as that string, as before)."""
    with svc.client("acme") as c:
        answers = {"user": c.post("/v1/feedback", json={"type": "comparison", "user": user, **COMPARISON}),
                   "user ": c.post("/v1/rewards/score", json={"user": user, "prompt": "Tea?", "responses": ["Yes.", "No."]}),
                   "user  ": c.post("/v1/chat/completions", json={"model": "pluralign", "user": user,
                                                                   "messages": [{"role": "user", "content": "Tea?"}]})}
        if isinstance(user, float):
            answers["line 1.user_id"] = c.post("/v1/users/3/import", content=json.dumps({"user_id": user, **COMPARISON}),
                                               headers={"content-type": "application/x-ndjson"})
        else:  # read as "3": this import's user
            r = c.post("/v1/users/3/import", content=json.dumps({"user_id": user, **COMPARISON}), headers={"content-type": "application/x-ndjson"})
            assert r.status_code == 201, r.text
    for param, r in answers.items():
        assert r.status_code == 400, (param, r.text)
        error = r.json()["error"]
        assert error["param"] == param.strip() and "JSON string" in error["message"] and '"3"' in error["message"], error
        assert "pandas" not in error["message"] and "astype" not in error["message"], error
