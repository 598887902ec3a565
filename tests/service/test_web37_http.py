"""HTTP semantics a browser, a proxy and an HTTP client rely on, over real HTTP: what may be cached,
what may be sniffed (docs/api.md, "Caching")."""

from __future__ import annotations

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service

COMPARISON = {"type": "comparison", "user": "alice", "prompt": "Which pet?", "chosen": "A cat", "rejected": "A dog"}
CHAT = {"model": "pluralign", "user": "alice", "messages": [{"role": "user", "content": "hi"}]}
PATH_VALUES = {"{user_id}": "alice", "{job_id}": "job_nope", "{model_id}": "pluralign"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
    with server:
        with service.client("acme") as c:
            assert c.post("/v1/feedback", json=COMPARISON).status_code == 201
        yield service


def get_paths(svc) -> list[str]:
    """Every GET path of the OpenAPI document, its parameters filled in."""
    paths = []
    for template, operations in httpx.get(svc.url + "/schema/openapi.json").json()["paths"].items():
        if "get" in operations:
            for name, value in PATH_VALUES.items():
                template = template.replace(name, value)
            assert "{" not in template, template
            paths.append(template)
    return paths


def assert_private(response: httpx.Response, what: str) -> None:
    assert "no-store" in response.headers.get("cache-control", ""), (what, response.status_code, response.headers)
    vary = [v.strip().lower() for v in response.headers.get("vary", "").split(",")]
    assert "authorization" in vary, (what, response.headers)
    assert response.headers.get("x-content-type-options") == "nosniff", what


def test_answers_holding_a_tenants_data_are_never_stored_by_a_shared_cache(svc):
    paths = get_paths(svc)
    assert "/v1/users/alice/export" in paths and "/admin/dashboard" in paths
    keyed = [p for p in paths if p.startswith(("/v1/", "/admin/")) and p != "/admin/login"]
    for path in keyed:
        with svc.client("admin" if path.startswith("/admin/") else "acme") as c:
            assert_private(c.get(path), f"GET {path}")
            assert_private(c.head(path), f"HEAD {path}")
    with svc.client("acme") as c:
        assert_private(c.post("/v1/chat/completions", json=CHAT), "a chat completion")
        with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as streamed:
            assert_private(streamed, "a streamed chat completion")
            streamed.read()
        assert_private(c.get("/v1/users/nobody"), "a 404 for a user")
    assert_private(httpx.get(svc.url + "/v1/users/alice"), "a 401")
    # the dashboard read with its session cookie: the cookie picks the operator
    login = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]})
    page = httpx.get(svc.url + "/admin/dashboard", cookies={"pluralign_admin": login.cookies["pluralign_admin"]})
    assert page.status_code == 200
    assert_private(page, "the dashboard")
    assert "cookie" in page.headers["vary"].lower()


def test_public_answers_may_be_cached_and_none_is_sniffed(svc):
    for path in ("/health", "/metrics", "/schema/openapi.json", "/schema/swagger", "/schema/assets/swagger-ui.css"):
        r = httpx.get(svc.url + path)
        assert r.status_code == 200, path
        assert "no-store" not in r.headers.get("cache-control", ""), path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert httpx.get(svc.url + "/metrics").headers["vary"] == "Accept"  # its own Vary kept, nothing added
    assert httpx.get(svc.url + "/nope").headers["x-content-type-options"] == "nosniff"
