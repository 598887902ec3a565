"""A fourth hostile pass, on the wire: identifiers with a trailing newline, integer query parameters
written as floats or repeated, query parameters named by their Python argument, the `[...]` of a
dict's value in an error's `param`, and the import's malformed JSON lines named `body`."""

from __future__ import annotations

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service

COMPARISON = {"type": "comparison", "user": "wire18", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
CHAT = {"model": "pluralign", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("break18"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000)
    with server:
        yield service


def error(r) -> dict:
    return r.json()["error"]


def test_an_id_with_a_trailing_newline_is_refused(svc):
    """`$` also matches before a final newline: "alice\\n" was a user of its own (stored, profiled),
    whose export then broke the connection (a newline in `Content-Disposition`), and an adapter job
    for "alice\\n" was queued with a newline in its data file's name."""
    with svc.client() as c:
        for user in ("alice\n", "alice\r\n"):
            r = c.post("/v1/feedback", json={**COMPARISON, "user": user})
            assert r.status_code == 400 and field_named(r) == "user", r.text
            r = c.post("/v1/chat/completions", json={**CHAT, "user": user})
            assert r.status_code == 400 and field_named(r) == "user", r.text
            r = c.post("/v1/rewards/score", json={"user": user, "prompt": "Q?", "responses": ["a"]})
            assert r.status_code == 400 and field_named(r) == "user", r.text
        for path in ("/v1/users/alice%0A", "/v1/users/alice%0A/export", "/v1/users/alice%0A/preferences"):
            r = c.get(path)
            assert r.status_code == 400 and field_named(r) == "user_id", (path, r.text)
        r = c.post("/v1/feedback", json={"type": "rating", "response_id": "chatcmpl-" + "0" * 32 + "\n", "rating": 5})
        assert r.status_code == 400 and field_named(r) == "response_id", r.text
    with svc.client("admin") as admin:
        for params in ({"user": "alice\n", "tenant": "acme"}, {"user": "alice", "tenant": "acme\n"}):
            r = admin.post("/admin/jobs", json={"kind": "adapter", "params": params})
            assert r.status_code == 400 and field_named(r) in ("params.user", "params.tenant"), r.text
        assert admin.get("/admin/jobs").json()["jobs"] == []

