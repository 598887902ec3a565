"""A fifth hostile pass, on the wire: request methods no route has became label values of the
request metrics (a client could grow /metrics without bound), and an integer query parameter with no
upper bound (`offset`) took any number of digits.

The server runs on uvicorn's h11 protocol, which takes any token as a method (httptools, the
default where it is installed, refuses unknown ones but still takes WebDAV's and others, ~40)."""

from __future__ import annotations

import json
import socket

import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import field_named, start_service

COMPARISON = {"type": "comparison", "user": "wire19", "prompt": "Tea or coffee?", "chosen": "Tea.", "rejected": "Coffee."}
CHAT = {"model": "pluralign", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("break19"), tiny_generator_dir, tiny_pal_dir, minilm,
                                    admin_handlers=ADMIN_HANDLERS, adapter_every=1_000_000)
    server.server.config.http = "h11"
    with server:
        yield service


def error(r) -> dict:
    return r.json()["error"]


def send_raw(svc, method: str, path: str, key: str) -> bytes:
    """One request with a method no HTTP client library would send; the status line answered."""
    with socket.create_connection(("127.0.0.1", svc.server.port), timeout=30) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def request_series(svc) -> list[str]:
    with svc.client("admin") as c:
        text = c.get("/metrics").text
    return [line for line in text.splitlines() if line.startswith(("pluralign_http_requests_total{", "pluralign_http_request_seconds_count{"))]


def test_made_up_methods_do_not_grow_the_request_metrics(svc):
    """Each method a client made up was a `method` label value of its own: 200 requests of 200 methods
    added 200 series to /metrics, for ever (memory, and every scrape's size). A method the API does
    not serve now counts as `method="other"`."""
    key = svc.keys["acme"]
    before = len(request_series(svc))
    for i in range(100):
        for path in ("/v1/models", f"/nope{i}"):
            assert send_raw(svc, f"FOO{i}", path, key).split()[1] in (b"404", b"405")
    for method in ("PROPFIND", "PURGE", "get"):  # known to parsers, or a lower-case spelling: not the API's either
        send_raw(svc, method, "/v1/models", key)
    series = request_series(svc)
    assert len(series) - before <= 4, series  # other x {404, 405}, counter and the 404s' timing
    assert not [s for s in series if "FOO" in s or "PROPFIND" in s or 'method="get"' in s], series
    assert any('method="other",route="unmatched",status="405"' in s for s in series), series
    assert any('method="other",route="unmatched",status="404"' in s for s in series), series


def test_the_methods_the_api_serves_keep_their_label(svc):
    with svc.client() as c:
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/feedback", json=COMPARISON).status_code == 201
        assert c.options("/v1/models").status_code == 204
        assert c.head("/health").status_code in (200, 405)
    series = request_series(svc)
    for label in ('method="GET",route="/v1/models",status="200"', 'method="POST",route="/v1/feedback",status="201"',
                  'method="OPTIONS",route="/v1/models"'):
        assert any(label in s for s in series), (label, series)


INTEGER_QUERIES = [  # (who, path, name, lowest, highest)
    ("acme", "/v1/users/wire19/preferences", "offset", 0, 2**63 - 1),
    ("acme", "/v1/users/wire19/preferences", "limit", 1, 500),
    ("acme", "/v1/users/wire19/stated-preferences", "limit", 1, 100),
    ("acme", "/v1/users/wire19/stated-preferences", "before", 1, 2**63 - 1),
    ("admin", "/admin/jobs", "limit", 1, 1000),
    ("admin", "/admin/audits/fairness?group_by=g&wait=0", "min_group_size", 1, 1_000_000),
    ("admin", "/admin/audits/fairness?group_by=g&wait=0", "min_comparisons", 0, 100_000_000),
]


@pytest.mark.parametrize("who,path,name,lowest,highest", INTEGER_QUERIES)
@pytest.mark.parametrize("digits", [20, 31, 5000])
def test_a_huge_integer_query_parameter_is_a_400_naming_its_range(svc, who, path, name, lowest, highest, digits):
    """`offset` had no upper bound: offset=10**30 was served (200, and `offset` echoed back as a
    31-digit number no int64 or JavaScript client reads exactly), and 5,000 digits was a 400 saying
    only 'Integer value out of range'. Every integer query parameter is now bounded (an int64 at
    most) and a value outside is a 400 naming the parameter and its range."""
    value = "9" * digits
    with svc.client(who) as c:
        r = c.get(path + ("&" if "?" in path else "?") + f"{name}={value}")
    assert r.status_code == 400 and field_named(r) == name, r.text
    assert error(r)["message"].startswith(f"`{name}`: must be an integer from {lowest} to {highest}, got '999"), r.text
    assert len(error(r)["message"]) < 200, r.text


@pytest.mark.parametrize("who,path,name,lowest,highest", INTEGER_QUERIES)
def test_an_integer_query_parameter_just_outside_its_range_names_the_range(svc, who, path, name, lowest, highest):
    with svc.client(who) as c:
        for value in (lowest - 1, highest + 1):
            r = c.get(path + ("&" if "?" in path else "?") + f"{name}={value}")
            assert r.status_code == 400 and field_named(r) == name, r.text
            assert error(r)["message"] == f"`{name}`: must be an integer from {lowest} to {highest}, got '{value}'", r.text


def test_integer_query_parameters_at_their_bounds_are_served(svc):
    with svc.client() as c:
        assert c.post("/v1/feedback", json={**COMPARISON, "user": "edge19"}).status_code == 201
        r = c.get("/v1/users/edge19/preferences", params={"offset": str(2**63 - 1), "limit": "500"})
        assert r.status_code == 200 and r.json()["data"] == [] and r.json()["offset"] == 2**63 - 1, r.text
        r = c.get("/v1/users/edge19/preferences", params={"offset": "0", "limit": "1"})
        assert r.status_code == 200 and r.json()["total"] == 1, r.text
        r = c.get("/v1/users/edge19/preferences", params={"offset": "-0"})
        assert r.status_code == 200, r.text


JSON_ROUTES = [  # (who, method, path, a valid body)
    ("acme", "POST", "/v1/chat/completions", CHAT),
    ("acme", "POST", "/v1/feedback", COMPARISON),
    ("acme", "POST", "/v1/rewards/score", {"user": "wire19", "prompt": "Q?", "responses": ["a"]}),
    ("acme", "PATCH", "/v1/users/wire19/stated-preferences", {"preferences": {"length": "less"}}),
    ("acme", "POST", "/v1/users/wire19/next-comparison", {"pool": [{"prompt": "Q?", "answers": ["Yes.", "No, not at all."]}]}),
    ("admin", "POST", "/admin/jobs", {"kind": "audit", "params": {"group_by": "g", "min_group_size": 0}}),  # read, then refused: no job runs
]
MULTIPART = b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n'


@pytest.mark.parametrize("who,method,path,body", JSON_ROUTES)
def test_a_json_route_refuses_a_body_of_another_type_with_a_415_naming_it(svc, who, method, path, body):
    """Ops session 39: a JSON route's body declared as another type is a 415 naming `Content-Type`, what
    was sent and what is taken (`Accept: application/json`). Before, any type was read as JSON: a
    `text/plain` or multipart-labelled JSON body was served, and a form or text body was a 400
    `invalid_json` that did not say the type was the problem (seen failing: 201/200 and 400s)."""
    valid = json.dumps(body).encode()
    refused = [("text/plain", valid), ("text/plain; charset=UTF-8", valid), ("text/plain", b"hello"),
               ("application/x-www-form-urlencoded", b"a=1&b=2"), ("application/x-www-form-urlencoded", b""),
               ("multipart/form-data; boundary=x", MULTIPART), ("multipart/form-data; boundary=x", valid),
               ("application/x-ndjson", valid)]
    with svc.client(who) as c:
        for content_type, raw in refused:
            r = c.request(method, path, content=raw, headers={"Content-Type": content_type})
            assert r.status_code == 415 and field_named(r) == "Content-Type", (content_type, raw, r.text)
            assert error(r)["code"] == "unsupported_media_type" and r.headers["accept"] == "application/json", r.text
            message = error(r)["message"]
            assert message.startswith(f"`Content-Type`: {content_type.split(';')[0].lower()} is not taken") and "application/json" in message, message
        r = c.request(method, path, content=b"a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert "curl -d sends a form type: add -H 'Content-Type: application/json'" in error(r)["message"], r.text


@pytest.mark.parametrize("who,method,path,body", JSON_ROUTES)
@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/merge-patch+json",
                                          "application/x-www-form-urlencoded", None])
def test_a_json_body_is_served_as_json_and_a_bad_one_is_a_400_naming_body(svc, who, method, path, body, content_type):
    """Taken as JSON: `application/json` (and `+json` types), no `Content-Type` at all, and JSON sent with
    the form type `curl -d '{...}'` sends without `-H` (docs/api.md has said so since session 19); a body
    that is not JSON under such a type is a 400 naming `body` (`invalid_json`), never a 500."""
    headers = {"Content-Type": content_type} if content_type else {}
    with svc.client(who) as c:
        if content_type != "application/x-www-form-urlencoded":  # a form-typed form body: the 415 above
            for raw in (b"a=1&b=2", MULTIPART, b"", b"hello"):
                r = c.request(method, path, content=raw, headers=headers)
                assert r.status_code == 400 and field_named(r) == "body" and error(r)["code"] == "invalid_json", (raw, r.text)
        r = c.request(method, path, content=json.dumps(body).encode(), headers=headers)
        assert r.status_code < 300 or field_named(r) == "params.min_group_size", r.text


def test_a_damaged_key_file_is_a_500_that_names_no_path(svc):
    """A key file damaged while the service runs (a bad hand edit): every request was a 400 whose
    message was msgspec's ('Expected `array`, got `object`'), as if the client were at fault; with
    the file named in that error it would have shown a server path to anyone. It is a 500 now, the
    path only in the log, and the service works again once the file is whole."""
    path = svc.runtime.keys.path
    whole = path.read_bytes()
    try:
        path.write_bytes(b'{"sha256": "x"}')
        with svc.client() as c:
            r = c.get("/v1/models")
        assert r.status_code == 500 and str(path) not in r.text and "api_keys" not in r.text, r.text
    finally:
        path.write_bytes(whole)
    with svc.client() as c:
        assert c.get("/v1/models").status_code == 200


@pytest.mark.parametrize("path,content_type,body", [
    ("/admin/login", "application/x-www-form-urlencoded", b"k" * 200_000 + b"=1"),
    ("/v1/feedback", "application/json", json.dumps({**COMPARISON, "k" * 200_000: 1}).encode()),
    ("/v1/feedback", "application/json", json.dumps({**COMPARISON, "attributes": {"k" * 200_000: [1]}}).encode()),
])
def test_an_unknown_field_s_name_is_not_echoed_whole(svc, path, content_type, body):
    """The login form named an unknown field by all of it: a 200 KB field name came back twice, in
    `param` and in `message` (400 KB answered for 200 KB sent). A field's name is cut to 64
    characters wherever it is named. (A JSON body to the login form is a 415 since session 22b, naming
    only `body`: tests/service/test_left22b.py.)"""
    with svc.client() as c:
        r = c.post(path, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 400 and len(r.content) < 1000, (len(r.content), r.text[:200])
    assert "kkkk" in field_named(r) and field_named(r).endswith("..."), r.text
