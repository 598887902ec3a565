"""Keys, tenants, deletion and bad input, over real HTTP: every bad request is a clear 4xx."""

from __future__ import annotations

import json

import httpx
import pytest
from litestar import get

from tests.files import files_holding
from tests.service.tiny import start_service


@get("/jobs", sync_to_thread=False)
def list_jobs() -> dict:
    return {"jobs": []}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    data = tmp_path_factory.mktemp("data")
    server, service = start_service(data, tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=[list_jobs], max_body_bytes=20_000)
    service.data_dir = data
    with server:
        yield service


def comparison(user, marker="", **extra):
    return {"type": "comparison", "user": user, "prompt": f"Which pet? {marker}", "chosen": f"A cat {marker}", "rejected": "A dog", **extra}


def test_keys_are_required_and_stored_hashed(svc):
    assert httpx.get(svc.url + "/v1/models").status_code == 401
    bad = httpx.get(svc.url + "/v1/models", headers={"Authorization": "Bearer pk-nope"})
    assert bad.status_code == 401 and "unknown API key" in bad.json()["error"]["message"]
    assert httpx.get(svc.url + "/v1/models", headers={"Authorization": "Basic abc"}).status_code == 401
    stored = (svc.data_dir / "api_keys.json").read_text()
    assert all(key not in stored for key in svc.keys.values())
    assert len(json.loads(stored)) == 3


def test_admin_keys_and_tenant_keys_are_separate(svc):
    with svc.client("admin") as admin, svc.client("acme") as acme:
        assert admin.get("/admin/jobs").json() == {"jobs": []}
        assert acme.get("/admin/jobs").status_code == 403
        assert admin.get("/v1/models").status_code == 403
        assert admin.post("/v1/feedback", json=comparison("zed")).status_code == 403


def test_tenants_cannot_see_or_change_each_other(svc):
    with svc.client("acme") as acme, svc.client("globex") as globex:
        assert acme.post("/v1/feedback", json=comparison("alice")).status_code == 201
        served = acme.post("/v1/chat/completions", json={"model": "pluralign", "user": "alice", "messages": [{"role": "user", "content": "hi"}]}).json()
        assert globex.get("/v1/users/alice").status_code == 404
        assert globex.get("/v1/users/alice/export").status_code == 404
        assert globex.get("/v1/users/alice/preferences").status_code == 404
        assert globex.delete("/v1/users/alice").status_code == 404
        r = globex.post("/v1/feedback", json={"type": "choice", "response_id": served["id"], "chosen_index": 0})
        assert r.status_code == 404
        # the same user id in another tenant is another user
        assert globex.post("/v1/feedback", json=comparison("alice")).status_code == 201
        assert globex.get("/v1/users/alice").json()["counts"]["preferences"] == 1
        assert acme.get("/v1/users/alice").json()["counts"] == {"preferences": 1, "interactions": 1, "set_aside": 0}


def test_delete_leaves_no_trace(svc):
    marker = "zq7marker"
    with svc.client("acme") as c:
        # the tenant's other user, made here: `alice` of the test above may live in another xdist worker's module service
        # (--dist worksteal splits a module), and a full run read her 404 as a delete that took too much
        assert c.post("/v1/feedback", json=comparison("oskar")).status_code == 201
        for _ in range(2):
            assert c.post("/v1/feedback", json=comparison("olga", marker)).status_code == 201
        c.post("/v1/chat/completions", json={"model": "pluralign", "user": "olga", "messages": [{"role": "user", "content": f"hi {marker}"}]})
        adapter = svc.data_dir / "adapters" / "acme" / "olga"
        adapter.mkdir(parents=True)
        (adapter / "adapter_config.json").write_text("{}")

        def files_with_marker():
            return files_holding(svc.data_dir, marker)

        assert files_with_marker(), "the marker must be findable on disk before the delete"
        r = c.delete("/v1/users/olga")
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == {"preferences": 2, "interactions": 1, "users": 1, "stated_changes": 0, "adapter_files": 1, "job_files": 0,
                                       "population_files": 0}
        assert c.get("/v1/users/olga").status_code == 404
        assert c.get("/v1/users/olga/export").status_code == 404
        assert c.get("/v1/users/olga/preferences").status_code == 404
        assert not adapter.exists()
        assert files_with_marker() == []
        assert c.delete("/v1/users/olga").status_code == 404
        assert c.get("/v1/users/oskar").json()["counts"]["preferences"] == 1  # others untouched


def test_pagination(svc):
    with svc.client("globex") as c:
        for i in range(5):
            assert c.post("/v1/feedback", json=comparison("pat", str(i))).status_code == 201
        first = c.get("/v1/users/pat/preferences", params={"limit": 2}).json()
        assert first["total"] == 5 and len(first["data"]) == 2 and first["next_offset"] == 2
        last = c.get("/v1/users/pat/preferences", params={"offset": 4, "limit": 2}).json()
        assert len(last["data"]) == 1 and last["next_offset"] is None
        seen = first["data"] + c.get("/v1/users/pat/preferences", params={"offset": 2, "limit": 2}).json()["data"] + last["data"]
        assert [p["prompt"] for p in seen] == [f"Which pet? {i}" for i in range(5)]
        lines = c.get("/v1/users/pat/export").text.splitlines()
        assert [json.loads(x)["type"] for x in lines].count("preference") == 5


CHAT = {"model": "pluralign", "messages": [{"role": "user", "content": "hi"}]}
BAD_REQUESTS = [
    # (method, path, body or raw bytes, expected status, text the error must contain)
    ("POST", "/v1/chat/completions", b'{"model": "pluralign", "messages": [', 400, "JSON"),
    ("POST", "/v1/chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature"),
    ("POST", "/v1/chat/completions", {**CHAT, "frequency_pen": 1}, 400, "frequency_pen"),
    ("POST", "/v1/chat/completions", {**CHAT, "temperature": 3}, 400, "temperature"),
    ("POST", "/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("POST", "/v1/chat/completions", {**CHAT, "n": 50}, 400, "`n`"),
    ("POST", "/v1/chat/completions", {**CHAT, "model": "gpt-9"}, 400, "model"),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("POST", "/v1/chat/completions", {**CHAT, "user": "bad user/../x"}, 400, "user"),
    ("POST", "/v1/chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("POST", "/v1/chat/completions", {**CHAT, "pluralign": {"candidates": 99}}, 400, "pluralign.candidates"),
    ("POST", "/v1/chat/completions", {**CHAT, "stream": True, "n": 9}, 400, "`n`"),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x" * 30_000}]}, 413, ""),
    ("POST", "/v1/chat/completions", "not json at all", 400, ""),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "system", "content": "be brief"}]}, 400, "user"),
    ("POST", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "url": "x"}]}]}, 400, "content"),
    ("POST", "/v1/chat/completions", {**CHAT, "stop": ""}, 400, "stop"),
    ("POST", "/v1/chat/completions", {**CHAT, "user": "\u00fcber"}, 400, "user"),
    ("POST", "/v1/chat/completions", {**CHAT, "pluralign": {"shots": -1}}, 400, "pluralign.shots"),
    ("POST", "/v1/chat/completions", b"", 400, ""),
    ("POST", "/v1/feedback", {"type": "vote", "user": "a"}, 400, "type"),
    ("POST", "/v1/feedback", {"type": "comparison", "user": "a", "prompt": "p", "chosen": "c"}, 400, "rejected"),
    ("POST", "/v1/feedback", {"type": "comparison", "user": "a", "prompt": "", "chosen": "c", "rejected": "r"}, 400, "prompt"),
    ("POST", "/v1/feedback", {"type": "comparison", "user": "a b", "prompt": "p", "chosen": "c", "rejected": "r"}, 400, "user"),
    ("POST", "/v1/feedback", {"type": "choice", "response_id": "nope", "chosen_index": 0}, 400, "response_id"),
    ("POST", "/v1/feedback", {"type": "choice", "response_id": "chatcmpl-" + "0" * 32, "chosen_index": 0}, 404, "chatcmpl-"),
    ("POST", "/v1/feedback", {"type": "rating", "response_id": "chatcmpl-" + "0" * 32, "rating": 9}, 400, "rating"),
    ("POST", "/v1/feedback", [1, 2], 400, ""),
    ("POST", "/v1/rewards/score", {"user": "a", "prompt": "p", "responses": []}, 400, "responses"),
    ("GET", "/v1/users/bad%20id", None, 400, "user_id"),
    ("GET", "/v1/users/nobody", None, 404, "nobody"),
    ("GET", "/v1/users/pat/preferences?limit=0", None, 400, "limit"),
    ("GET", "/v1/users/pat/preferences?offset=-1", None, 400, "offset"),
    ("GET", "/v1/users/pat/preferences?limit=abc", None, 400, "limit"),
    ("PUT", "/v1/users/pat", {}, 405, ""),
    ("GET", "/v1/nothing", None, 404, ""),
]


@pytest.mark.parametrize("method,path,body,status,names", BAD_REQUESTS, ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_clear_4xx(svc, method, path, body, status, names):
    with svc.client("acme") as c:
        if isinstance(body, (bytes, str)):
            r = c.request(method, path, content=body, headers={"content-type": "application/json"})
        else:
            r = c.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert names in r.text
    error = r.json()["error"]  # OpenAI's shape, for every status
    assert set(error) == {"message", "type", "param", "code", "request_id"} and names in error["message"]
    assert error["request_id"] == r.headers["X-Request-Id"]
    assert error["type"] == {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}[status]


def test_no_request_produced_a_500(svc):
    text = httpx.get(svc.url + "/metrics").text
    assert 'status="500"' not in text and 'status="200"' in text


def test_two_authorization_headers_are_a_400_whichever_key_comes_first(svc):
    """Before: the first of two `Authorization` headers was used (a proxy that adds its own key after the
    client's, or one that reads the last, then disagreed with the service on who was calling): a request
    with acme's key and then globex's was served as acme, and with them swapped as globex."""
    for first, second in (("acme", "globex"), ("globex", "acme"), ("acme", "acme")):
        headers = [("Authorization", f"Bearer {svc.keys[first]}"), ("Authorization", f"Bearer {svc.keys[second]}")]
        r = httpx.post(svc.url + "/v1/feedback", json=comparison("twice"), headers=headers)
        assert r.status_code == 400, (first, second, r.status_code, r.text)
        error = r.json()["error"]
        assert error["param"] == "Authorization" and "2 `Authorization` headers" in error["message"], error
        assert all(key not in r.text for key in svc.keys.values())  # a key is never echoed
    for tenant in ("acme", "globex"):
        with svc.client(tenant) as c:
            assert c.get("/v1/users/twice").status_code == 404  # nothing was stored for either
