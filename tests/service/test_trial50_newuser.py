"""Session trial50: a new user and a hostile client of the whole product, over real HTTP on the real app
(each test drives what that user did and saw go wrong)."""

from __future__ import annotations

import errno
import time

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service

CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "A weekend plan?"}], "max_tokens": 4,
        "pluralign": {"candidates": 1}}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    # no job worker: a queued adapter job stays queued (nothing trains); a job every 3 new comparisons of a user
    server, service = start_service(tmp_path_factory.mktemp("trial50-data"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=3, job_workers=0)
    with server:
        yield service


def test_feedback_on_a_deleted_users_response_says_the_user_was_deleted(svc):
    """A user chatted, was deleted (their DELETE removes their responses), and the app then sent the rating of
    that chat: the 404 named `response_id` but blamed an anonymous chat or `store: false`, neither of which
    this chat was, so the app's developer went looking for a missing `user` field."""
    with svc.client() as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "user": "gone50"})
        assert r.status_code == 200, r.text
        assert c.delete("/v1/users/gone50").status_code == 200
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": r.json()["id"], "rating": 5})
        assert r.status_code == 404 and field_named(r) == "response_id", r.text
        assert "DELETE removes their responses" in r.json()["error"]["message"], r.text


def _adapter_jobs(admin, user: str) -> list[dict]:
    r = admin.get("/admin/jobs", params={"kind": "adapter", "limit": 100})
    assert r.status_code == 200, r.text
    return [j for j in r.json()["jobs"] if j["params"].get("user") == user]


def test_an_adapter_job_whose_snapshot_moves_the_users_pending_feedback_is_queued_once(svc):
    """Found after `pluralign data import` of 1,500 comparisons a user: the user had two adapter jobs queued
    110 ms apart, on the same rows (`/admin/jobs`, the dashboard), each to train for minutes. The job's
    snapshot first moves the user's rows still waiting in the feedback log into the table; those rows reached
    `adapter_every`, so the trigger, called back from that move in the same thread (the user's lock is
    re-entrant), found no job queued yet and queued one; then the first job was queued as well. Here an
    admin queues the user's job while 3 of their comparisons wait in the log (the worker paused)."""
    with svc.client() as c, svc.client("admin") as admin:
        for i in range(2):  # stored: below adapter_every, no job
            r = c.post("/v1/feedback", json={"type": "comparison", "user": "twice50", "prompt": f"Q{i}?",
                                              "chosen": f"Yes {i}.", "rejected": f"No {i}."})
            assert r.status_code == 201, r.text
        assert c.get("/v1/users/twice50").status_code == 200  # moves them: the trigger has counted 2
        with svc.runtime.ingest.paused():
            for i in range(2, 5):  # acknowledged, still in the log: the trigger's count would reach 3 when moved
                r = c.post("/v1/feedback", json={"type": "comparison", "user": "twice50", "prompt": f"Q{i}?",
                                                  "chosen": f"Yes {i}.", "rejected": f"No {i}."})
                assert r.status_code == 201, r.text
            r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "twice50"}})
            assert r.status_code in (200, 201), r.text
        jobs = _adapter_jobs(admin, "twice50")
        assert [j["state"] for j in jobs] == ["queued"], jobs
        assert jobs[0]["id"] == r.json()["id"], (jobs, r.text)
        for job in jobs:
            admin.post(f"/admin/jobs/{job['id']}/cancel")


def test_if_match_with_an_entity_tag_this_service_never_gave_is_a_412_not_a_400(svc):
    """An `If-Match` tag is opaque (RFC 9110, 8.8.3): `"3-gzip"` (the tag Apache's mod_deflate hands a client for
    a compressed `"3"`), `"abc"`, a number past any version, or `""` is well-formed and names no current version,
    so the PATCH's precondition fails: a 412 with the current `ETag`, nothing written, as docs/api.md says of any tag
    whose quotes pair. It was a 400 'must be version tags', which a client takes for a bug in its request rather than
    a sign to read the preferences again."""
    url = "/v1/users/tagged50/stated-preferences"
    with svc.client() as c:
        first = c.patch(url, json={"preferences": {"length": "less"}})  # version 1
        assert first.status_code == 200
        given = first.headers["etag"]
        gzipped = f'{given[:-1]}-gzip"'
        for tag in (gzipped, '"abc"', '"99999999999999999999999"', '""', 'W/"abc"', '"abc", W/"x"'):
            r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-Match": tag})
            assert r.status_code == 412 and field_named(r) == "If-Match" and r.headers["etag"] == given, (tag, r.text)
        assert c.get(url).json()["version"] == 1  # none of them wrote
        r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-Match": f"{gzipped}, {given}"})
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        for bad in ('"1', 'abc', '"a"b"'):  # quotes without their pair, or none around a word: still malformed
            r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": bad})
            assert r.status_code == 400 and field_named(r) == "If-Match", (bad, r.text)


# Session reviewtrial50: what breaking the above found (each test failed before its fix).


def test_if_match_tags_are_compared_as_opaque_strings_commas_and_leading_zeros_included(svc):
    """An entity-tag may hold a comma (RFC 9110, 8.8.3: etagc is any visible character but `"`): `"a,b"` is one
    well-formed tag that names no version, a 412; it was split at the comma into `"a` and `b"`, a 400 'must be
    version tags'. And tags compare as strings (13.1.1): `"01"` is not the service's `"1"`; it was read as the
    number 1 and matched, so a PATCH went through on a tag the service never gave."""
    url = "/v1/users/commas50/stated-preferences"
    with svc.client() as c:
        first = c.patch(url, json={"preferences": {"length": "less"}})  # version 1
        assert first.status_code == 200
        given = first.headers["etag"]
        epoch, version = given.strip('"').split(".")
        for tag in ('"a,b"', f'"{epoch},{version}"', 'W/"1,x", "a,,b"', f'"{epoch}.01"', f'"0{epoch}.1", "{epoch}.001"'):
            r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-Match": tag})
            assert r.status_code == 412 and field_named(r) == "If-Match" and r.headers["etag"] == given, (tag, r.text)
        assert c.get(url).json()["version"] == 1  # none of them wrote
        r = c.patch(url, json={"preferences": {"length": "more"}}, headers={"If-Match": f'"x,1", {given}'})
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        for bad in ('"1,', '"2" "2"', '"a,b" junk', ', "a,b'):  # a quote still needs its pair; tags need commas between
            r = c.patch(url, json={"preferences": {"length": "less"}}, headers={"If-Match": bad})
            assert r.status_code == 400 and field_named(r) == "If-Match", (bad, r.text)


def test_a_triggered_adapter_job_records_the_comparisons_its_snapshot_holds(svc):
    """The trigger counts the user's comparisons when a batch of the feedback worker reaches `adapter_every`, then the
    job's snapshot moves the user's rows still waiting in the log (trial50: they no longer queue a job of their own):
    the job trains on them, but `params.comparisons`, the count the next job is measured from (docs/admin.md,
    "Automatic trigger"), was the count from before, so the user's next job came that many comparisons early (an
    import's: hundreds). Here the worker moves one record a batch: the trigger fires at 3, a fourth still waits."""
    user, ingest = "late50", svc.runtime.ingest
    with svc.client() as c, svc.client("admin") as admin:
        with ingest.paused():
            for i in range(4):
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Q{i}?",
                                                  "chosen": f"Yes {i}.", "rejected": f"No {i}."})
                assert r.status_code == 201, r.text
            batch, ingest.batch = ingest.batch, 1
        try:
            deadline = time.monotonic() + 30
            while not (jobs := _adapter_jobs(admin, user)) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            ingest.batch = batch
        assert len(jobs) == 1, jobs
        rows = (svc.runtime.settings.data_path / jobs[0]["params"]["data"]).read_text().splitlines()  # shown relative to it
        assert len(rows) == 4 and jobs[0]["params"]["comparisons"] == 4, (len(rows), jobs[0]["params"])
        admin.post(f"/admin/jobs/{jobs[0]['id']}/cancel")


def test_a_user_whose_adapter_job_could_not_be_queued_is_checked_again_at_their_next_comparison(svc, monkeypatch):
    """trial50 leaves the trigger of the rows a job's snapshot moves to that job. When the job then cannot be queued
    (its record not written: a full disk's 507), no job covers them, and the trigger had set the user's count back to
    0: their next job came only `adapter_every` comparisons later, as if that job had been queued. Now they are due
    again at their next comparison, as a user the tenant's quota held back is."""
    user = "disk50"
    runner = svc.server.server.config.app.state.admin.runner
    with svc.client() as c, svc.client("admin") as admin:
        with svc.runtime.ingest.paused():
            for i in range(3):  # adapter_every: still in the log, moved by the job's snapshot
                r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": f"Q{i}?",
                                                  "chosen": f"Yes {i}.", "rejected": f"No {i}."})
                assert r.status_code == 201, r.text
            with monkeypatch.context() as patched:
                patched.setattr(runner, "submit", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
                r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": user}})
            assert r.status_code == 507, r.text
            assert _adapter_jobs(admin, user) == []
            r = c.post("/v1/feedback", json={"type": "comparison", "user": user, "prompt": "Q3?", "chosen": "Yes 3.", "rejected": "No 3."})
            assert r.status_code == 201, r.text
            assert c.get(f"/v1/users/{user}").status_code == 200  # moves it: the trigger checks the user
        jobs = _adapter_jobs(admin, user)
        assert [(j["state"], j["params"]["comparisons"]) for j in jobs] == [("queued", 4)], jobs
        admin.post(f"/admin/jobs/{jobs[0]['id']}/cancel")


# Session trial51: a header sent as several field lines (RFC 9110, 5.3: a recipient may join a list-based field's lines
# with commas, and a proxy in front may do so) means what the one line would; a singleton field twice is refused, as
# two `Authorization` or `Idempotency-Key` headers are (each test failed before its fix).


def test_if_match_sent_as_two_field_lines_is_the_list_of_both(svc):
    """`If-Match: "5"` then `If-Match: "0"` is the list `"5", "0"` (If-Match is a list; a proxy may join the lines):
    the service read only the first line, so a PATCH at version 0 was a 412 that the same list on one line passes;
    and `"9"` then `*` (a list mixing `*` with tags, a 400 on one line) was a 412 as well."""
    url = "/v1/users/lines51/stated-preferences"
    body = b'{"preferences": {"length": "less"}}'
    with svc.client() as c:
        r = c.patch(url, content=body, headers=[("Content-Type", "application/json"), ("If-Match", '"5"'), ("If-Match", '"0"')])
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        r = c.patch(url, content=body, headers=[("Content-Type", "application/json"), ("If-Match", '"9"'), ("If-Match", "*")])
        assert r.status_code == 400 and field_named(r) == "If-Match", r.text
        r = c.patch(url, content=body, headers=[("Content-Type", "application/json"), ("If-Match", '"7"'), ("If-Match", '"8"')])
        assert r.status_code == 412 and r.headers["etag"] == c.get(url).headers["etag"], r.text
        assert '"7", "8"' in r.json()["error"]["message"], r.text  # both lines named, as the one line would be
        assert c.get(url).json()["version"] == 1


def test_a_content_coding_on_a_second_field_line_is_refused_as_on_one(svc):
    """`Content-Encoding: identity` then `Content-Encoding: gzip` says the body was gzipped (the codings in the order
    applied, RFC 9110 8.4): one line `identity, gzip` is the 415 naming `Content-Encoding`, but the service read only
    the first line, so the gzipped body was parsed as JSON: a 400 'not valid JSON' naming `body` (an import's: `line 1`),
    sending the client after its JSON rather than its compression."""
    import gzip
    import json

    row = {"prompt": "Q?", "chosen": "Yes.", "rejected": "No."}
    with svc.client() as c:
        for url, body, kind in (("/v1/feedback", {"type": "comparison", "user": "gz51", **row}, "application/json"),
                                ("/v1/users/gz51/import", row, "application/x-ndjson")):
            r = c.post(url, content=gzip.compress(json.dumps(body).encode()),
                       headers=[("Content-Type", kind), ("Content-Encoding", "identity"), ("Content-Encoding", "gzip")])
            assert r.status_code == 415 and field_named(r) == "Content-Encoding", (url, r.text)
            assert r.headers["accept-encoding"] == "identity", r.headers
        # identity on every line is no coding: served
        r = c.post("/v1/feedback", content=json.dumps({"type": "comparison", "user": "gz51", **row}).encode(),
                   headers=[("Content-Type", "application/json"), ("Content-Encoding", "identity"), ("Content-Encoding", "identity")])
        assert r.status_code == 201, r.text


def test_two_content_type_headers_are_a_400_naming_content_type_and_store_nothing(svc):
    """Content-Type is one value (RFC 9110, 8.3), and two of them leave the body's type to each reader's guess: the
    service read the first (`application/json` then `text/plain` stored the feedback; the other order was a 415;
    `application/json; charset=utf-16` first decoded the body as UTF-16), where a proxy in front may read the last.
    Refused as two `Authorization` headers are: a 400 naming `Content-Type`, nothing stored."""
    import json

    body = json.dumps({"type": "comparison", "user": "twotypes51", "prompt": "Q?", "chosen": "Yes.", "rejected": "No."}).encode()
    with svc.client() as c:
        for types in (("application/json", "text/plain"), ("text/plain", "application/json"),
                      ("application/json", "application/json")):
            r = c.post("/v1/feedback", content=body, headers=[("Content-Type", t) for t in types])
            assert r.status_code == 400 and field_named(r) == "Content-Type", (types, r.text)
            assert "2 `Content-Type` headers" in r.json()["error"]["message"], r.text
        r = c.post("/v1/users/twotypes51/import", content=b'{"prompt": "Q?", "chosen": "Yes.", "rejected": "No."}',
                   headers=[("Content-Type", "application/x-ndjson"), ("Content-Type", "application/json")])
        assert r.status_code == 400 and field_named(r) == "Content-Type", r.text
        assert c.get("/v1/users/twotypes51").status_code == 404  # nothing of either was stored


def test_a_dashboard_session_is_found_among_several_admin_cookies(svc):
    """A browser holding two `pluralign_admin` cookies (one of another path: a `Path=/` one a proxy in front or an
    app beside the service set, or a stale one) sends both, the more specific path's first (RFC 6265, 5.4), in one
    `Cookie` line, or in two (HTTP/2 splits cookies; a proxy passes the lines on): the service read only the last
    value of a line, or only the first line, so a signed-in operator got a 401 'sign in again' and signing in again
    changed nothing (the new cookie replaces the /admin one, the other stays). A session is any value that is one."""
    import httpx

    login = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]})
    token = login.cookies["pluralign_admin"]
    page = svc.url + "/admin/dashboard"
    for headers in ([("Cookie", f"pluralign_admin={token}; pluralign_admin=stale51")],
                    [("Cookie", "pluralign_admin=stale51; theme=dark"), ("Cookie", f"pluralign_admin={token}")],
                    [("Cookie", f"pluralign_admin={token}"), ("Cookie", "pluralign_admin=stale51")]):
        r = httpx.get(page, headers=headers)
        assert r.status_code == 200 and "<html" in r.text, (headers, r.status_code, r.text[:200])
    r = httpx.get(page, headers=[("Cookie", "pluralign_admin=stale51; pluralign_admin=other51")])
    assert r.status_code == 401, r.text[:200]  # no value is a session
    # "Sign out" in the order a browser sends them, the service's /admin cookie first (review reviewtrial51: the
    # other order alone was tested, which the old reading of the last value passed as well; this one it left signed in)
    for service_first in (True, False):
        token = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]}).cookies["pluralign_admin"]
        pair = [f"pluralign_admin={token}", "pluralign_admin=stale51"]
        cookie = "; ".join(pair if service_first else pair[::-1])
        r = httpx.post(svc.url + "/admin/logout", headers=[("Cookie", cookie)])
        assert r.status_code == 303, r.text[:200]
        assert httpx.get(page, headers=[("Cookie", f"pluralign_admin={token}")]).status_code == 401, cookie  # signed out


def test_a_refusal_part_outside_an_assistant_message_is_a_400_naming_the_part(svc):
    """docs/api.md: `content` is a string or text parts, `{"type": "refusal"}` in assistant history. A refusal part in a
    user (system, developer, tool) message (`[{"type": "text", ...}, {"type": "refusal", "refusal": "..."}]`, which OpenAI refuses: a user's
    parts are text, image, audio or file) was read into the user's turn as their own words and generated from,
    while a `refusal` field on that message was a 400. Through the openai client, as an app sends it."""
    import openai

    client = openai.OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0, timeout=60)
    for role in ("user", "system", "developer", "tool"):
        messages = [{"role": role, "content": [{"type": "text", "text": "Hi. "}, {"type": "refusal", "refusal": "I won't."}]}]
        if role == "tool":
            messages[0]["tool_call_id"] = "call_1"
        if role != "user":
            messages.append({"role": "user", "content": "A weekend plan?"})
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="pluralign", user="refusal51", messages=messages, max_tokens=2)
        assert caught.value.param == "messages[0].content[1].type", (role, caught.value.message)
        assert "assistant" in caught.value.message, caught.value.message
    # in assistant history it is what OpenAI sends back, and is served
    reply = client.chat.completions.create(
        model="pluralign", user="refusal51", max_tokens=2, extra_body={"pluralign": {"candidates": 1}},
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                  {"role": "user", "content": "A weekend plan?"}])
    assert reply.choices[0].message.content is not None
