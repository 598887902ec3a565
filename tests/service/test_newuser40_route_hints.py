"""A new user's first mistakes with the `openai` client, against the real app over HTTP.

Before: `OpenAI(base_url="http://127.0.0.1:8000")` (the service's URL, as `make serve` prints it,
without `/v1`) made every call a 404 "no route `POST /chat/completions`: docs/api.md lists the routes",
and so did a base URL ending in `/v1/v1` and a route mistyped by one letter: the message said what was
wrong but not what to send instead. Now a 404 for a path that is a route with `/v1` added (or one
`/v1` taken away), or one close to a route, names that route and why."""

from __future__ import annotations

import random
import string

import httpx
import pytest

from tests.service.tiny import start_service

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm)
    with server:
        yield service


@pytest.mark.parametrize("suffix", ["", "/", "/v1/v1"])
def test_an_openai_client_on_a_base_url_without_its_v1_is_told_the_base_url(svc, suffix):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=svc.url + suffix, api_key=svc.keys["acme"], max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="pluralign", user="ann", messages=HI)
    error = missing.value
    assert error.code == "not_found" and error.param is None, error.body
    assert "did you mean `POST /v1/chat/completions`?" in error.message, error.message
    assert "base_url is the service's URL ending in /v1" in error.message, error.message  # what to set
    assert svc.url not in error.message, error.message  # the host is the client's Host header: never echoed
    with pytest.raises(openai.NotFoundError) as models:
        client.models.list()
    assert "did you mean `GET /v1/models`?" in models.value.message, models.value.message


@pytest.mark.parametrize("path", ["/chat/completions", "/v1/v1/chat/completions"])
def test_the_route_hint_does_not_reflect_the_host_header(svc, path):
    """Sig session 40: the hint's base_url was built from the request's Host header, so `Host: evil.example`
    came back as "base_url http://evil.example/v1" (and, behind a proxy that rewrites Host, it named the
    internal host and said http:// to an https client). The hint names no host now."""
    r = httpx.post(svc.url + path, headers={"Host": "evil.example", "Authorization": f"Bearer {svc.keys['acme']}"}, json={})
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert "did you mean `POST /v1/chat/completions`?" in message, message
    assert "evil.example" not in message and "http" not in message, message


@pytest.mark.parametrize("method,path,meant", [
    ("POST", "/v1/chat/completion", "POST /v1/chat/completions"),
    ("GET", "/v1/model", "GET /v1/models"),
    ("POST", "/v1/feedbacks", "POST /v1/feedback"),
    ("GET", "/healthz", "GET /health"),
    ("GET", "/v1/users/ann/preference", "GET /v1/users/ann/preferences"),
    ("POST", "/v1/users/ann/next_comparison", "POST /v1/users/ann/next-comparison"),
])
def test_a_route_mistyped_by_a_letter_or_two_is_named(svc, method, path, meant):
    r = httpx.request(method, svc.url + path, headers={"Authorization": f"Bearer {svc.keys['acme']}"}, json={})
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"no route `{method} {path}`: did you mean `{meant}`?"), message


def test_the_service_s_root_says_where_its_routes_and_docs_are(svc):
    """Before: the URL `make serve` prints, opened in a browser, was "no route `GET /`: docs/api.md lists the
    routes", the docs a file in a checkout the reader may not have at hand."""
    for path in ("/", "/v1", "/v1/"):
        r = httpx.get(svc.url + path)
        assert r.status_code == 404, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("no route `GET /") and "`: pluralign's API routes begin with /v1/" in message, message
        assert "interactive docs at /schema" in message and "docs/api.md" in message, message


@pytest.mark.parametrize("method,path", [("GET", "/v1/nope"), ("GET", "/nope"), ("DELETE", "/v1/chat/completion"),
                                         ("POST", "/v1/assistants"), ("GET", "/v1/users/ann/export/all")])
def test_a_path_like_no_route_keeps_the_plain_404(svc, method, path):
    """Nothing is guessed where no route is close, nor for a method the close route does not take."""
    r = httpx.request(method, svc.url + path, headers={"Authorization": f"Bearer {svc.keys['acme']}"})
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert message == f"no route `{method} {path}`: docs/api.md lists the routes", message


LONG = "".join(random.Random(40).choices(string.ascii_lowercase, k=60_000))  # letters at random: a route's are in it


@pytest.mark.parametrize("path", ["/" + LONG, "/v1/users/ann/" + LONG])
def test_a_long_path_is_a_plain_404_that_costs_no_fuzzy_match_over_it(svc, path):
    """Review session 40: the hint compared the path's segment with every route's fixed segment of that position
    (difflib), whatever its length: a 60 KB path (curl sends one; uvicorn reads up to 64 KiB) took 45-190 ms of
    the event loop's CPU per 404, so a flood of them stalled every other request. A segment whose length alone
    rules out a ratio of 0.75 is no typo of a route and is no longer compared."""
    import time

    with httpx.Client(base_url=svc.url, timeout=60) as client:
        client.get("/nope")  # the connection made, the first request's costs paid
        cpu = time.process_time()  # the server runs in this process (a thread): its CPU is counted here
        for _ in range(5):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["message"].endswith("docs/api.md lists the routes"), r.text[:300]
        spent = (time.process_time() - cpu) / 5
    assert spent < 0.025, f"{spent * 1000:.0f} ms of CPU a 404 (client and server: 45-89 ms before, 10 ms after)"


@pytest.mark.parametrize("suffix", ["/v1", ""])
def test_openai_s_other_apis_say_what_is_served_instead(svc, suffix):
    """Session newsvc55: the `openai` library's README opens with `client.responses.create(model=..., input=...)`; a
    new user who began there got "no route `POST /v1/responses`: docs/api.md lists the routes", and likewise for the
    legacy `client.completions.create` and `client.embeddings.create`, as if the path were a typo. The 404 now says
    that API is not served and what is (Chat Completions; `pluralign serve-embeddings` for embeddings), the base URL
    with or without its `/v1`."""
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=svc.url + suffix, api_key=svc.keys["acme"], max_retries=0, timeout=60)
    calls = {
        "Responses API": lambda: client.responses.create(model="pluralign", input="Hi", user="ann"),
        "Completions API": lambda: client.completions.create(model="pluralign", prompt="Hi", user="ann"),
        "serve-embeddings": lambda: client.embeddings.create(model="pluralign", input="Hi"),
    }
    for said, call in calls.items():
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        message = missing.value.message
        assert missing.value.code == "not_found" and said in message and "not served" in message, message
        assert ("`POST /v1/chat/completions`" in message) == (said != "serve-embeddings"), message


@pytest.mark.parametrize("path", ["/schema/redoc", "/schema/openapi.yaml", "/schema/rapidoc", "/schema/elements/"])
def test_a_docs_page_or_document_not_served_names_the_ones_that_are(svc, path):
    """newsvc56: Litestar's other docs pages and its YAML document (`/schema/redoc`, `/schema/openapi.yaml`, which
    Litestar serves by default and a reader of its docs tries) were "no route `GET /schema/redoc`: docs/api.md lists
    the routes"; now the 404 names what /schema serves."""
    r = httpx.get(svc.url + path)
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"no route `GET {path.rstrip('/')}`: ") and "/schema/openapi.json" in message and "/schema/swagger" in message, message
    assert httpx.get(svc.url + "/schema/openapi.json").status_code == 200
