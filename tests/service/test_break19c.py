"""Server-side failures are 500s, not 400s: the app answered every `ValueError` with a 400 carrying
its message (msgspec's DecodeError and ValidationError are ValueErrors too). A damaged stored row, a
numerical failure inside a fit or a bug reached the client as "your request is bad", with internal
text (file paths, internal field names); clients, retries and monitoring take a 4xx for the
caller's fault. Now only request validation is a 400 naming the field; any other ValueError is a 500
`internal error` whose detail is in the server log only.

Float query parameters (`wait`, `since`) were lenient too: 5,000 zeros answered "Expected `float`,
got `str`" and 400 nines "Number out of range"; now a 400 names the parameter and its range."""

from __future__ import annotations

import logging
import sys

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

COMPARISON = {"type": "comparison", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
SECRET = "/srv/pluralign/data/lancedb/users.lance/secret_column"


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("break19c"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000)
    with server:
        yield service


def internal(r) -> None:
    """A 500 that says nothing of the server's insides."""
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error == {"message": "internal error", "type": "server_error", "param": None, "code": "internal_error",
                     "request_id": r.headers["X-Request-Id"]}, error  # obs30: the id the operator's log line carries


def logged(caplog, text: str) -> bool:
    return any(text in (rec.getMessage() + str(rec.exc_info and rec.exc_info[1])) for rec in caplog.records if rec.levelno >= logging.ERROR)


def test_a_value_error_inside_a_route_is_a_500_with_its_detail_in_the_log_only(svc, monkeypatch, caplog):
    """A ValueError from deep inside a route (here the encoder; a shape mismatch, a bug) was a 400
    whose message was the exception's text, file paths included."""
    def broken(texts):
        raise ValueError(f"shapes (3,384) and (512,) not aligned reading {SECRET}")

    monkeypatch.setattr(svc.runtime.encoder, "encode", broken)
    with svc.client() as c, caplog.at_level(logging.ERROR, logger="pluralign.service"):
        r = c.post("/v1/rewards/score", json={"user": "v19c-a", "prompt": "Tea?", "responses": ["Yes.", "No."]})
    internal(r)
    assert SECRET not in r.text
    assert logged(caplog, SECRET)


def test_a_msgspec_error_inside_a_route_is_a_500(svc, monkeypatch):
    """msgspec's ValidationError is a ValueError: one raised on the server's own data (not the
    request's body) named an internal field as if the client had sent it."""
    import msgspec

    def broken(*args, **kwargs):
        return msgspec.convert({"version": "x"}, type=dict[str, int])

    monkeypatch.setattr(svc.runtime.store, "stated_changes", broken)
    with svc.client() as c:
        assert c.patch("/v1/users/v19c-b/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
        internal(c.get("/v1/users/v19c-b/stated-preferences"))


def test_a_damaged_users_row_is_a_500_not_the_clients_fault(svc, caplog):
    """A users row whose `attributes` JSON is damaged: GET /v1/users/{id} answered 400 "Expecting
    value: line 1 column 1 (char 0)" (json's ValueError)."""
    rt = svc.runtime
    with svc.client() as c:
        assert c.post("/v1/feedback", json={**COMPARISON, "user": "v19c-c"}).status_code == 201
        assert c.get("/v1/users/v19c-c").status_code == 200
        rt.store.users.update(where="user_id = 'v19c-c'", values={"attributes": "{damaged"})
        try:
            with caplog.at_level(logging.ERROR, logger="pluralign.service"):
                r = c.get("/v1/users/v19c-c")
        finally:  # repaired: the module's later tests (an audit reads every users row) must not meet it
            rt.store.users.update(where="user_id = 'v19c-c'", values={"attributes": "{}"})
    internal(r)
    assert logged(caplog, "Expecting")


def test_a_damaged_stated_change_row_is_logged_and_left_out(svc, caplog):
    """A stated-preference change row the table holds damaged (a direction no version writes) made
    GET .../stated-preferences a 400 "Invalid enumeration value"; like an unreadable stated record
    (`stated_of`), it is now logged and left out: the rest of the history is served."""
    rt = svc.runtime
    with svc.client() as c:
        assert c.patch("/v1/users/v19c-d/stated-preferences", json={"preferences": {"length": "more"}}).status_code == 200
        assert c.patch("/v1/users/v19c-d/stated-preferences", json={"preferences": {"list_items": "less"}}).status_code == 200
        rt.store.tables["stated_changes"].update(where="user_id = 'v19c-d' AND version = 1", values={"direction": "sideways"})
        with caplog.at_level(logging.WARNING, logger="pluralign.service"):
            r = c.get("/v1/users/v19c-d/stated-preferences")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["version"] == 2 and page["preferences"] == {"length": "more", "list_items": "less"}
    assert 2 in [ch["version"] for ch in page["history"]]
    assert "sideways" not in r.text
    assert any("v19c-d" in rec.getMessage() and rec.levelno == logging.WARNING for rec in caplog.records)


def test_an_adapter_job_for_a_user_without_comparisons_stays_a_400_naming_the_user(svc):
    """A genuine client error the generic ValueError handler answered: it still is a 400, now naming
    `params.user` (its `param` was null)."""
    with svc.client("admin") as c:
        r = c.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "v19c-nobody"}})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "params.user" and "no stored comparisons" in error["message"], error


@pytest.mark.parametrize(("query", "name"), [
    ("wait=" + "0" * 5000, "wait"),
    ("wait=1e400", "wait"),
    ("wait=nan", "wait"),
    ("wait=soon", "wait"),
    ("since=" + "9" * 400, "since"),
    ("since=inf", "since"),
    ("since=-1e999", "since"),
    ("since=253402300800", "since"),  # past the end of year 9999, the last time an import takes (MAX_CREATED_AT)
])
def test_a_float_query_parameter_out_of_its_range_is_a_400_naming_it(svc, query, name):
    """`wait=` with 5,000 zeros answered "Expected `float`, got `str`" and 400 nines "Number out of
    range", naming nothing readable; an infinite or NaN value went through Litestar's conversion."""
    with svc.client("admin") as c:
        r = c.get(f"/admin/audits/fairness?group_by=segment&{query}")
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == name, error
    wanted = {"wait": "a number from 0 to 600", "since": "a number from 0 to 253402300799"}[name]
    assert error["message"].startswith(f"`{name}`: must be {wanted}") and len(error["message"]) < 300, error


def test_a_float_query_parameter_within_range_still_works(svc):
    with svc.client("admin") as c:
        r = c.get("/admin/audits/fairness?group_by=segment&wait=0.0&since=1.5e9")
    assert r.status_code in (200, 202, 400, 422), r.text
    if r.status_code == 400:
        assert r.json()["error"]["param"] == "group_by", r.text


def test_the_embeddings_server_answers_an_encoder_value_error_with_a_500():
    """`pluralign serve-embeddings` had the same handler: an encoder's ValueError was a 400 carrying
    its text. A request it refuses is still a 400 naming the field."""
    import numpy as np
    from litestar.testing import TestClient

    from service.embeddings.app import create_embeddings_app

    class Broken:
        encoder_id, dim = "broken-encoder", 4

        def encode(self, texts):
            if texts == ["boom"]:
                raise ValueError(f"cannot reshape array of size 7 into shape (4,) reading {SECRET}")
            return np.zeros((len(texts), 4), np.float32)

    class Kept(logging.Handler):  # on the logger itself: the app's startup reconfigures the root's handlers
        records: list[logging.LogRecord] = []

        def emit(self, record):
            self.records.append(record)

    kept = Kept(logging.ERROR)
    logging.getLogger("pluralign.embeddings").addHandler(kept)
    try:
        with TestClient(create_embeddings_app(Broken())) as client:
            r = client.post("/v1/embeddings", json={"model": "broken-encoder", "input": "boom"})
            assert r.status_code == 500, r.text
            assert r.json()["error"]["message"] == "internal error" and SECRET not in r.text
            assert any(SECRET in str(rec.exc_info[1]) for rec in kept.records if rec.exc_info)
            r = client.post("/v1/embeddings", json={"model": "broken-encoder", "input": []})
            assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text
            assert client.post("/v1/embeddings", json={"model": "broken-encoder", "input": "fine"}).status_code == 200
    finally:
        logging.getLogger("pluralign.embeddings").removeHandler(kept)


def test_the_answer_for_an_audit_whose_report_cannot_be_read_is_the_servers_error(svc):
    """The keeper of the test below (a real audit through GET /admin/audits/fairness, `make test-cli`) without running
    one: a succeeded audit job whose report file is damaged is answered as the server's error (a RuntimeError: the route's
    500 `internal error`, as the ValueError above), not the 422 `audit_failed` of parameters that cannot be served."""
    import time

    from service.admin.controllers import _audit_response
    from training.jobs.record import Job

    admin = svc.server.server.config.app.state.admin
    job = Job(id="audit-damaged-19c", kind="audit", params={"group_by": "segment", "min_comparisons": 1}, state="succeeded",
              created_at=time.time(), result_path="result.json")
    admin.runner.store.path(job.id, "result.json").write_bytes(b'{"schema_version": 2, "group_by": "' + SECRET.encode())
    with pytest.raises(RuntimeError, match="succeeded but its report cannot be read"):
        _audit_response(admin, job)


@pytest.mark.slow  # a real audit job (~6 CPU-s): `make test-cli`; the answer for an unreadable report: the test above
def test_an_unreadable_audit_report_is_a_500_not_a_422(svc, monkeypatch, caplog):
    """An audit job that succeeded but whose report file cannot be read (damaged, removed) was a 422
    `audit_failed` "audit job ... succeeded: None", as if the request's parameters could not be
    served; it is the server's data: a 500, its detail in the log."""
    import service.admin.services as admin_services

    with svc.client("acme") as c:
        for i in range(3):
            body = {**COMPARISON, "user": f"v19c-audit{i}", "attributes": {"segment": "east" if i else "west"}}
            assert c.post("/v1/feedback", json=body).status_code == 201

    real = admin_services.decode_report

    def damaged(raw):
        if sys._getframe(1).f_code.co_name != "report":  # the job's own check of its result (keep_audit_members) reads it whole
            return real(raw)
        raise ValueError(f"Expected `object`, got `str` reading {SECRET}")  # reading it back to serve it

    monkeypatch.setattr(admin_services, "decode_report", damaged)
    with svc.client("admin") as admin, caplog.at_level(logging.ERROR, logger="pluralign.service"):
        r = admin.get("/admin/audits/fairness", params={"group_by": "segment", "tenant": "acme", "min_comparisons": 1, "wait": 120},
                      timeout=240)
    internal(r)
    assert logged(caplog, "cannot be read")


def test_the_embeddings_server_repeats_a_path_with_control_and_bidi_characters_escaped():
    """Review of newsvc55: as the API service's errors (test_i18n30), `pluralign serve-embeddings` repeated a path no
    route has raw in its 404 (`/v1/\u202eembeddings`), so a client printing its error showed the text reordered by the
    override, or obeyed a terminal escape. Written as escapes now."""
    import numpy as np
    from litestar.testing import TestClient

    from service.embeddings.app import create_embeddings_app

    class Zeros:  # the encoder is not what is checked: the error of a request no route takes
        encoder_id, dim = "zeros", 4

        def encode(self, texts):
            return np.zeros((len(texts), 4), np.float32)

    with TestClient(create_embeddings_app(Zeros())) as client:
        error = client.get("/v1/%E2%80%AEembeddings%1B").json()["error"]  # U+202E, ESC
    assert "`GET /v1/\\u202eembeddings\\x1b`" in error["message"] and "\u202e" not in error["message"], error
