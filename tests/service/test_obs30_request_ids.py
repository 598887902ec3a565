"""Following one request (docs/operations.md): every answer carries `X-Request-Id` (the client's own,
checked, or a fresh one), every error body carries it as `error.request_id` (an SSE error event too),
the log lines the request causes carry it (the background refit its feedback triggers included), and
the access log has one line per request with the route template, never a key, a path's user id, a
prompt or a feedback's text. The real app over HTTP; the openai client reads our id as OpenAI's."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from service.requestid import APP_FORMAT, JsonFormatter, RequestIdFilter, TextFormatter
from tests.service.test_stop_chats import CHAT, held, wait_until  # noqa: F401

# markers no log line may hold: a prompt, a feedback's texts, a user id (in paths and bodies)
PROMPT = "prompt-marker-q7Zx suggest a weekend plan"
CHOSEN, REJECTED = "chosen-marker-Kp2w a quiet hike", "rejected-marker-Vn8r a loud party"
USER = "user-marker-Hj4t"
FRESH = re.compile(r"req_[0-9a-f]{32}")


class Collected(logging.Handler):
    """Every record the root logger sees, with the request id put on it as the app's handler does."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect(monkeypatch):
    """`collect()` -> Collected, attached to the root logger from then on, the service's logger at DEBUG
    (called once the app is built: Litestar's logging configuration replaces the root's handlers)."""
    attached: list[Collected] = []

    def attach() -> Collected:
        attached.append(Collected())
        logging.getLogger().addHandler(attached[-1])
        monkeypatch.setattr(logging.getLogger("pluralign.service"), "level", logging.DEBUG)
        return attached[-1]

    yield attach
    for handler in attached:
        logging.getLogger().removeHandler(handler)


def lines_of(logs: Collected) -> list[str]:
    """Each record as the text and the JSON format write it (but the test's own httpx client's)."""
    text, js = TextFormatter(APP_FORMAT), JsonFormatter()
    return [f.format(r) for r in logs.records if not r.name.startswith(("httpx", "httpcore")) for f in (text, js)]


def test_ids_go_on_every_answer_error_body_and_the_log_lines_a_request_causes(serve, collect):
    _, server, svc = serve()
    logs = collect()
    key = svc.keys["acme"]
    with server, svc.client() as c:
        # a fresh id on an answer that sent none, routed or not, with or without a key
        health = c.get("/health")
        assert FRESH.fullmatch(health.headers["X-Request-Id"]), health.headers
        assert c.head("/health").headers["X-Request-Id"] != health.headers["X-Request-Id"]
        unrouted = httpx.get(svc.url + "/v1/nope")
        assert unrouted.status_code == 404
        assert unrouted.json()["error"]["request_id"] == unrouted.headers["X-Request-Id"]
        assert unrouted.json()["error"]["code"] == "not_found"  # the existing fields stay
        # the client's own id comes back, in the header and the error body (a 401 here: no key)
        keyless = httpx.get(svc.url + "/v1/models", headers={"X-Request-Id": "gw-0001"})
        assert keyless.status_code == 401 and keyless.headers["X-Request-Id"] == "gw-0001"
        assert keyless.json()["error"]["request_id"] == "gw-0001"
        bad_user = c.get("/v1/users/bad%20id", headers={"X-Request-Id": "gw-0002"})
        assert bad_user.status_code == 400 and bad_user.json()["error"]["request_id"] == "gw-0002", bad_user.text
        assert set(bad_user.json()["error"]) == {"message", "type", "param", "code", "request_id"}

        # a malformed id: 400 naming the header, answered under a fresh id
        for sent in (["has space"], ["x" * 129], ["é"], ["a", "b"]):
            headers = [("X-Request-Id", value.encode() if value != "é" else "é".encode("latin-1")) for value in sent]
            r = c.get("/v1/models", headers=headers)
            assert r.status_code == 400, (sent, r.text)
            error = r.json()["error"]
            assert error["param"] == "X-Request-Id" and "`X-Request-Id`" in error["message"], error
            assert FRESH.fullmatch(r.headers["X-Request-Id"]) and error["request_id"] == r.headers["X-Request-Id"]
        assert c.get("/v1/models", headers={"X-Request-Id": "x" * 128}).status_code == 200

        # feedback: its id is on the refit its move into the table triggers, on a thread of the service
        fb = {"type": "comparison", "user": USER, "prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED}
        assert c.post("/v1/feedback", json=fb, headers={"X-Request-Id": "fb-trace-1"}).status_code == 201
        svc.runtime.ingest.flush()  # moved (by the worker, or here), then the refit it queued has run
        svc.runtime.wait_for_background()
        profile = c.get(f"/v1/users/{USER}", headers={"X-Request-Id": "profile-1"})
        assert profile.status_code == 200

    refits = [r for r in logs.records if r.getMessage().startswith("background refit of a user of tenant acme done")]
    assert refits and all(r.request_id == "fb-trace-1" for r in refits), [(r.getMessage(), r.request_id) for r in refits]
    assert refits[0].threadName != "MainThread"
    access = [r for r in logs.records if r.name == "pluralign.access"]
    by_id = {r.request_id: r for r in access}
    assert by_id["fb-trace-1"].access == {"method": "POST", "route": "/v1/feedback", "status": 201,
                                          "duration_ms": by_id["fb-trace-1"].access["duration_ms"], "tenant": "acme"}
    assert by_id["profile-1"].access["route"] == "/v1/users/{user_id}"  # the template, not the user's id
    assert by_id["gw-0001"].access["status"] == 401 and by_id["gw-0001"].access["tenant"] is None
    assert by_id[unrouted.headers["X-Request-Id"]].access["route"] == "unmatched"
    assert any(r.access["method"] == "HEAD" and r.access["route"] == "/health" for r in access)
    written = "\n".join(lines_of(logs))
    assert "fb-trace-1" in written and '"route":"/v1/users/{user_id}"' in written
    for secret in (key, PROMPT, CHOSEN, REJECTED, USER, "prompt-marker", "chosen-marker", "rejected-marker"):
        assert secret not in written, secret


def test_the_access_log_is_off_when_the_setting_says_so(serve, collect):
    _, server, svc = serve(access_log=False)
    logs = collect()
    with server, svc.client() as c:
        assert c.get("/v1/models").headers["X-Request-Id"]
    assert not [r for r in logs.records if r.name == "pluralign.access"]


def test_the_openai_client_sees_our_request_id(serve):
    import openai

    _, server, svc = serve()
    with server:
        client = openai.OpenAI(base_url=svc.url + "/v1", api_key=svc.keys["acme"], max_retries=0)
        chat = client.chat.completions.with_raw_response.create(model="pluralign", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        assert FRESH.fullmatch(chat.parse()._request_id) and chat.parse()._request_id == chat.headers["x-request-id"]
        mine = client.chat.completions.create(model="pluralign", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                              extra_headers={"X-Request-Id": "client-chosen-7"})
        assert mine._request_id == "client-chosen-7"
        with pytest.raises(openai.NotFoundError) as missing:
            client.models.retrieve("no-such-model", extra_headers={"X-Request-Id": "client-chosen-8"})
        assert missing.value.request_id == "client-chosen-8"
        assert missing.value.body["request_id"] == "client-chosen-8", missing.value.body


def test_a_streams_error_event_carries_the_request_id(held):  # noqa: F811
    from service.app import cut_running

    app = held.server.server.config.app
    with httpx.stream("POST", held.url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=60,
                      headers={"Authorization": f"Bearer {held.keys['acme']}", "X-Request-Id": "stream-trace-3"}) as r:
        assert r.headers["X-Request-Id"] == "stream-trace-3"
        events = r.iter_lines()
        seen = []
        for line in events:
            seen.append(line)
            if '" more"' in line:
                break
        assert cut_running(app) == 1
        seen += list(events)
    errors = [json.loads(line.removeprefix("data: ")) for line in seen if line.startswith("data: {\"error\"")]
    assert errors and errors[0]["error"]["request_id"] == "stream-trace-3", seen
    wait_until(lambda: held.runtime.scheduler.stats()["running"] == 0)


def test_a_job_queued_by_a_request_is_logged_under_its_id(serve, collect):
    from service.admin.controllers import ADMIN_HANDLERS

    _, server, svc = serve(admin_handlers=ADMIN_HANDLERS)
    logs = collect()
    with server, svc.client("admin") as admin:
        r = admin.post("/admin/jobs", json={"kind": "audit", "params": {"group_by": "segment", "tenant": "nobody-here"}},
                       headers={"X-Request-Id": "job-trace-5"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        assert admin.post(f"/admin/jobs/{job}/cancel").status_code == 200
    queued = [rec for rec in logs.records if rec.getMessage() == f"queued audit job {job}"]
    assert [rec.request_id for rec in queued] == ["job-trace-5"]


def test_scheduled_work_runs_under_the_id_of_the_request_that_queued_it():
    """Generation and DELETEs run on the schedulers' own threads: the request's id goes with them."""
    from service.requestid import REQUEST_ID
    from service.scheduler import FairScheduler

    scheduler = FairScheduler(workers=1, per_tenant=2, max_waiting=2, what="deletes")
    token = REQUEST_ID.set("delete-trace-6")
    try:
        future = scheduler.submit("acme", REQUEST_ID.get)
    finally:
        REQUEST_ID.reset(token)
    assert future.result(timeout=30) == "delete-trace-6"
    assert scheduler.submit("acme", REQUEST_ID.get).result(timeout=30) is None  # no request: none
    scheduler.shutdown()
