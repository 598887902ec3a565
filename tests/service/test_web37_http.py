"""HTTP semantics a browser, a proxy and an HTTP client rely on, over real HTTP: what may be cached,
what may be sniffed (docs/api.md, "Caching")."""

from __future__ import annotations

import contextlib
import gzip
import socket

import httpx
import pytest

from service.admin.controllers import ADMIN_HANDLERS
from tests.service.tiny import start_service
from tests.serving import server_not_run, timed_server

COMPARISON = {"type": "comparison", "user": "alice", "prompt": "Which pet?", "chosen": "A cat", "rejected": "A dog"}
CHAT = {"model": "pluralign", "user": "alice", "messages": [{"role": "user", "content": "hi"}]}
PATH_VALUES = {"{user_id}": "alice", "{job_id}": "job_nope", "{model_id}": "pluralign", "{tenant}": "acme"}


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
    elsewhere = {"X-Forwarded-For": "203.0.113.9"}  # /health to a probe from elsewhere: no figure (ops60: one with is no-store)
    for path in ("/health", "/schema/openapi.json", "/schema/swagger", "/schema/assets/swagger-ui.css"):
        r = httpx.get(svc.url + path, headers=elsewhere if path == "/health" else {})
        assert r.status_code == 200, path
        assert "no-store" not in r.headers.get("cache-control", ""), path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert "Authorization" in httpx.get(svc.url + "/health", headers=elsewhere).headers["vary"]  # it answers by key
    metrics = httpx.get(svc.url + "/metrics")  # by key and caller address (left60): never stored, test_metrics
    vary = {v.strip() for v in metrics.headers["vary"].split(",")}
    assert {"Accept", "Authorization"} <= vary and metrics.headers["x-content-type-options"] == "nosniff"  # one Vary each
    assert httpx.get(svc.url + "/nope").headers["x-content-type-options"] == "nosniff"


APP = "https://app.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def cors_svc(tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    server, service = start_service(tmp_path_factory.mktemp("data"), tiny_generator_dir, tiny_pal_dir, minilm, cors_origins=(APP,))
    with server:
        yield service


def preflight(svc, origin: str, method: str = "GET", headers: str = "authorization") -> httpx.Response:
    return httpx.options(svc.url + "/v1/users/alice", headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers})


def test_cors_is_off_by_default_and_leaks_nothing(svc):
    answer = preflight(svc, EVIL)
    assert answer.status_code == 204 and not any(h.startswith("access-control-") for h in answer.headers)
    with svc.client("acme") as c:
        read = c.get("/v1/users/alice", headers={"Origin": EVIL})
    assert read.status_code == 200 and not any(h.startswith("access-control-") for h in read.headers)


def test_cors_allows_its_origins_only_and_says_why_in_the_apis_shape(cors_svc):
    allowed = preflight(cors_svc, APP)
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in allowed.headers  # keys travel in a header, never cookies
    for origin in (EVIL, "null"):
        refused = preflight(cors_svc, origin)
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
        error = refused.json()["error"]
        assert error["param"] == "Origin" and "cors_origins" in error["message"], error
        assert error["request_id"] == refused.headers["x-request-id"]
    bad_method = preflight(cors_svc, APP, method="PROPFIND")  # a method no route takes (PUT is the calibration pool's since pool54)
    assert bad_method.status_code == 400 and bad_method.json()["error"]["param"] == "Access-Control-Request-Method"
    # any header the page asks for is allowed (since browser43: If-Match, the openai SDK's X-Stainless-*, tracing's),
    # named back one by one, as `*` would not cover Authorization
    any_header = preflight(cors_svc, APP, headers="authorization, x-secret")
    assert any_header.status_code == 204, any_header.text
    assert {"authorization", "x-secret"} <= {h.strip().lower() for h in any_header.headers["access-control-allow-headers"].split(",")}
    # whether an answer carries Access-Control-Allow-Origin depends on Origin: every one says so to caches
    with cors_svc.client("acme") as c:
        for origin in (APP, EVIL, None):
            for path in ("/v1/users/alice", "/health", "/schema/openapi.json"):
                r = c.get(path, headers={"Origin": origin} if origin else {})
                assert "origin" in [v.strip().lower() for v in r.headers.get("vary", "").split(",")], (origin, path, r.headers)



def test_a_gzipped_answer_to_a_cross_origin_request_still_varies_by_accept_encoding(cors_svc):
    """Before: with an `Origin` (every request of a page on another site), Litestar's CORS replaced the
    answer's `Vary: Accept-Encoding` with `Vary: Origin`, so a cache in front could keep the gzipped
    /schema/openapi.json and hand it to a client that takes no gzip. Now `Vary` keeps it."""
    with cors_svc.client("acme") as c:
        assert c.post("/v1/feedback", json=COMPARISON).status_code == 201
        for path in ("/schema/openapi.json", "/v1/users/alice/export"):
            for origin in (APP, EVIL):
                r = c.get(path, headers={"Origin": origin, "Accept-Encoding": "gzip"})
                vary = [v.strip().lower() for v in r.headers.get("vary", "").split(",")]
                assert r.headers.get("content-encoding") == "gzip" and "accept-encoding" in vary and "origin" in vary, (path, origin, r.headers)

def test_an_answer_that_varies_by_accept_still_says_so_to_a_cross_origin_request(cors_svc):
    """Before (reviewbr43): browser43 gave `Accept-Encoding` back to the `Vary` Litestar's CORS replaces, but
    only that: /metrics, Prometheus text or OpenMetrics by `Accept`, said `Vary: Origin, Accept-Encoding` to a
    request from a listed origin, so a cache could hand one format to a client that asked for the other."""
    for origin in (APP, EVIL, None):
        r = httpx.get(cors_svc.url + "/metrics", headers={"Origin": origin} if origin else {})
        vary = [v.strip().lower() for v in r.headers.get("vary", "").split(",")]
        assert r.status_code == 200 and {"accept", "origin"} <= set(vary) and len(vary) == len(set(vary)), (origin, r.headers)


def test_a_cross_site_form_or_text_post_carries_no_credential_that_acts(svc):
    """A page on another site can POST text/plain or a form without a preflight, but it cannot add
    `Authorization`, and the dashboard's cookie (SameSite=Strict besides) only reads pages."""
    body = b'{"type": "comparison", "user": "mallory", "prompt": "p", "chosen": "a", "rejected": "b"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        r = httpx.post(svc.url + "/v1/feedback", content=body, headers={"Content-Type": content_type, "Origin": EVIL})
        assert r.status_code == 401, (content_type, r.status_code)
    login = httpx.post(svc.url + "/admin/login", data={"key": svc.keys["admin"]})
    jar = {"pluralign_admin": login.cookies["pluralign_admin"]}
    forged = httpx.post(svc.url + "/admin/jobs", cookies=jar, content=b'{"kind": "audit", "params": {"group_by": "x"}}',
                        headers={"Content-Type": "text/plain", "Origin": EVIL})
    assert forged.status_code == 403
    with svc.client("acme") as c:
        assert c.get("/v1/users/mallory").status_code == 404


def test_a_large_answer_is_gzipped_for_a_client_that_accepts_it(svc):
    """Before, the export went uncompressed whatever `Accept-Encoding` said, one body message per line."""
    with svc.client("acme") as c:
        for i in range(30):
            assert c.post("/v1/feedback", json={**COMPARISON, "prompt": f"Which pet, {i}?"}).status_code == 201
        # the preference file: the full export's user line changes as the refits behind the feedback land
        plain = c.get("/v1/users/alice/export?format=preferences", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers and len(plain.content) > 4096
        with c.stream("GET", "/v1/users/alice/export?format=preferences", headers={"Accept-Encoding": "gzip"}) as zipped:
            assert zipped.headers["content-encoding"] == "gzip"
            vary = {v.strip().lower() for v in zipped.headers["vary"].split(",")}
            assert {"accept-encoding", "authorization"} <= vary and zipped.headers["cache-control"] == "no-store"
            wire = b"".join(zipped.iter_raw())
        assert len(wire) < len(plain.content) / 3
        assert gzip.decompress(wire) == plain.content
        head = c.head("/v1/users/alice/export", headers={"Accept-Encoding": "gzip"})
        assert head.status_code == 200 and head.content == b""
        # the GET's headers (RFC 9110 9.3.2): a client or cache asking with HEAD learns the GET would be gzipped
        got = c.get("/v1/users/alice/export", headers={"Accept-Encoding": "gzip"})
        for name in ("content-encoding", "vary", "cache-control", "content-type", "content-disposition"):
            assert head.headers.get(name) == got.headers.get(name), (name, head.headers, got.headers)
        # a stream's events reach the client as written: never compressed
        with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"Accept-Encoding": "gzip"}) as streamed:
            assert "content-encoding" not in streamed.headers
            assert b"[DONE]" in streamed.read()


def test_a_client_that_refuses_gzip_is_not_sent_gzip(svc):
    """Before, Litestar gzipped for any `Accept-Encoding` holding the word gzip, `gzip;q=0` (refused) included."""
    with svc.client("acme") as c:
        for i in range(30):  # an export well over the 1 KiB compressed answers start at
            assert c.post("/v1/feedback", json={**COMPARISON, "prompt": f"Which bird, {i}?"}).status_code == 201
        for refusal in ("gzip;q=0", "gzip; q=0.0, identity", "identity, x-gzip;q=0"):
            with c.stream("GET", "/v1/users/alice/export", headers={"Accept-Encoding": refusal}) as r:
                assert r.status_code == 200 and "content-encoding" not in r.headers, refusal
                r.read()
        # content codings are case-insensitive (RFC 9110 8.4.1): before, "GZIP" was sent identity, "GZIP;Q=0" gzip
        for accepting in ("br;q=1, gzip;q=0.5", "GZIP", "Gzip, deflate"):
            with c.stream("GET", "/v1/users/alice/export", headers={"Accept-Encoding": accepting}) as r:
                assert r.headers.get("content-encoding") == "gzip", accepting
                r.read()
        for refusal in ("GZIP;Q=0", "Gzip; q=0"):
            with c.stream("GET", "/v1/users/alice/export", headers={"Accept-Encoding": refusal}) as r:
                assert "content-encoding" not in r.headers, refusal
                r.read()


def test_methods_paths_and_accept_answer_as_documented(svc):
    """No fix: locks what docs/api.md says of methods, paths and `Accept` (found consistent in session 37)."""
    with svc.client("acme") as c:
        got = c.get("/v1/users/alice")
        head = c.head("/v1/users/alice")
        assert head.status_code == 200 and head.content == b""
        assert {k: head.headers[k] for k in ("content-type", "cache-control", "vary")} == {k: got.headers[k] for k in ("content-type", "cache-control", "vary")}
        options = c.options("/v1/users/alice")
        assert options.status_code == 204 and options.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
        wrong = c.put("/v1/users/alice", json={})
        assert wrong.status_code == 405 and wrong.headers["allow"] == "DELETE, GET, HEAD, OPTIONS"
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        missing = c.get("/v1/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert c.get("/v1/users/alice/").json()["user"] == "alice"  # a trailing slash is the same route
        # an `Accept` a route cannot serve is not refused: the route's own type comes, as /metrics sends its text format
        html = c.get("/v1/users/alice", headers={"Accept": "text/html"})
        assert html.status_code == 200 and html.headers["content-type"] == "application/json"
    metrics = httpx.get(svc.url + "/metrics", headers={"Accept": "text/html"})
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


@pytest.fixture()
def timed_cors_server(cors_svc):
    """The CORS service's app behind the connection-level protocol `pluralign serve` runs (`timed_server`), with the
    app's CORS config as `pluralign serve` gives it."""
    app = cors_svc.server.server.config.app  # started already by the service's own server: no lifespan here
    with timed_server(app, 0.5, 1, cors=app.cors_config) as port:
        yield port


def _cors_of(headers) -> dict[str, str]:
    """An answer's CORS headers (and whether it varies by Origin), names in lower case."""
    cors = {name.lower(): value for name, value in headers.items() if name.lower().startswith("access-control-")}
    return {**cors, "varies by origin": "origin" in [v.strip().lower() for v in headers.get("vary", "").split(",")]}


def _raw_answer_on(port: int, request: bytes) -> bytes:
    """The bytes the server writes on a connection sending `request` (read to the connection's end)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        raw = b""
        while data := sock.recv(65536):
            raw += data
    return raw


def _answer_on(port: int, request: bytes, before: list | None = None) -> httpx.Response:
    """The answer the server writes itself on a connection sending `request` (read to the connection's end)."""
    head, _, body = _raw_answer_on(port, request).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = httpx.Headers([tuple(part.strip() for part in line.split(":", 1)) for line in lines])
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


def test_errors_the_server_writes_itself_carry_the_cors_headers_a_listed_origin_gets(cors_svc, timed_cors_server):
    """wire44: the 408 (a body not arrived within PLURALIGN_REQUEST_READ_TIMEOUT_S) and the 503 too_many_connections
    are written by `pluralign serve` outside the app, and carried no CORS headers: a page on a listed origin saw an
    opaque network error instead of the status and its Retry-After. Now they carry what the app's own answers to that
    origin carry; another origin's get none (but `Vary: Origin`)."""
    import socket

    port = timed_cors_server
    own = _cors_of(httpx.get(cors_svc.url + "/health", headers={"Origin": APP}).headers)  # the app's, to a listed origin
    assert own["access-control-allow-origin"] == APP and "Retry-After" in own["access-control-expose-headers"], own
    trickled = f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {cors_svc.keys['acme']}\r\nContent-Length: 100\r\n"
    late = _answer_on(port, f"{trickled}Origin: {APP}\r\n\r\n{{".encode())
    assert late.status_code == 408 and late.json()["error"]["code"] == "request_timeout", late.text
    assert _cors_of(late.headers) == own, late.headers
    other = _answer_on(port, f"{trickled}Origin: {EVIL}\r\n\r\n{{".encode())
    assert other.status_code == 408 and _cors_of(other.headers) == {"varies by origin": True}, other.headers
    with socket.create_connection(("127.0.0.1", port)):  # the one connection the server takes
        refused = _answer_on(port, f"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: {APP}\r\n\r\n".encode())
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_connections", refused.text
        assert _cors_of(refused.headers) == own and refused.headers["retry-after"] == "1", refused.headers
        plain = _answer_on(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # no Origin: no CORS
        assert plain.status_code == 503 and _cors_of(plain.headers) == {"varies by origin": True}, plain.headers


def test_a_refused_connection_s_origin_with_control_characters_is_not_echoed(cors_svc):
    """reviewwi44: the 503 over PLURALIGN_MAX_CONNECTIONS (CORS on) reads the Origin from the raw head itself
    (`origin_in_head`: no HTTP parser has seen it), and a listed wildcard origin (`https://*.app.example`, whose `*`
    Litestar matches with `.*`) took a value holding bare CRs and NULs, echoed as `Access-Control-Allow-Origin`: a
    header no parser of ours would have let in (httptools and h11 answer such a request 400) went out, a bare CR that
    an old client or a proxy reads as a line break (a header of the client's choosing in the answer). Such an Origin
    is now no origin: the 503 carries no CORS; a subdomain's still gets its own."""
    from litestar.config.cors import CORSConfig

    app = cors_svc.server.server.config.app
    cors = CORSConfig(allow_origins=["https://*.app.example"], allow_headers=["*"])
    forged = "https://x\rSet-Cookie: session=forged\r\x00.app.example"
    assert cors.is_origin_allowed(forged)  # Litestar's own check lets it through
    with timed_server(app, 0.5, 1, cors=cors) as port, socket.create_connection(("127.0.0.1", port)):  # the one connection taken
        refused = _raw_answer_on(port, f"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: {forged}\r\n\r\n".encode())
        sub = _answer_on(port, b"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://a.app.example\r\n\r\n")
    head = refused.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 503 "), refused[:300]
    assert head.count(b"\r") == head.count(b"\r\n") and b"\x00" not in head, head  # no bare CR, no NUL
    assert b"access-control-allow-origin" not in head.lower() and b"Set-Cookie" not in head, head
    assert sub.status_code == 503 and sub.headers["access-control-allow-origin"] == "https://a.app.example", sub.headers


def test_a_refused_connection_waiting_for_its_head_still_gets_its_503_when_its_lingering_slot_is_taken(cors_svc, timed_cors_server,
                                                                                                    monkeypatch):
    """reviewwi44: with CORS on, a connection over the limit holds a lingering slot while its head comes (wire44), and
    one more refused connection, every slot taken, closes the oldest of the busiest peer (`make_room`). One still
    waiting for its head was closed without a word: its client read an empty answer where, before wire44, its 503
    was written at once (a flood of connections over the limit from one peer, a proxy, did that to 1 of 40 browsers
    sending their head 20 ms after connecting). Now it is written its 503 (without CORS: no Origin read) before it
    is closed. The wait for the head is made long here (30 s) so only the taken slot can end it."""
    from training.commands import serve

    monkeypatch.setattr(serve, "REFUSED_LINGER_S", 30.0)
    port = timed_cors_server
    with contextlib.ExitStack() as held:
        held.enter_context(socket.create_connection(("127.0.0.1", port)))  # the one connection the server takes
        waiting = [held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=20))
                   for _ in range(serve.REFUSED_LINGERING + 1)]  # the last takes the first's slot
        raw = b""
        while data := waiting[0].recv(65536):
            raw += data
    assert raw.startswith(b"HTTP/1.1 503 ") and b'"too_many_connections"' in raw, raw[:300]


def test_pluralign_serve_gives_its_protocol_the_apps_cors_config(cors_svc, monkeypatch):
    """The wiring of the test above in `pluralign serve` (`serve_until_stopped`): the protocol it builds answers with the
    app's own CORS config. The server is not run (its signal handlers need the main thread and a port of its own)."""
    import argparse

    from training.commands import serve

    built = server_not_run(monkeypatch)
    app = cors_svc.server.server.config.app
    args = argparse.Namespace(host="127.0.0.1", port=0, log_level="warning")
    assert serve.serve_until_stopped(app, args, on_stop=lambda: None, request_read_timeout_s=5, max_connections=3)[0]
    protocol = built["config"].http
    assert protocol.cors is app.cors_config and protocol.cors.is_origin_allowed(APP) and protocol.max_connections == 3


@contextlib.contextmanager
def counted_server(svc, limit: int):
    """`svc`'s app behind the protocol `pluralign serve` runs, at most `limit` connections, read deadline 30 s, its
    connections counted where /metrics reads them (`app.state.connections`, as `pluralign serve` sets it); yields the
    port. The connection limit on a served process (its descriptors, its raised open-files limit, both parsers) is
    tests/e2e/test_conn37_connections.py's, slow (`make test-http`)."""
    from training.commands.serve import ConnectionCounts

    app = svc.server.server.config.app
    counts = ConnectionCounts(limit)
    app.state.connections = counts
    try:
        with timed_server(app, 30, limit, connections=counts) as port:
            yield port
    finally:
        del app.state.connections


def _metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def _settled(read, done, timeout_s: float = 5.0):
    """`read()` once `done` holds of it, or its last value `timeout_s` on (read every 20 ms)."""
    import time

    deadline = time.monotonic() + timeout_s
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_metrics_count_open_and_refused_connections_and_the_refusal_says_why(svc):
    """conn37's checks on the connection limit (tests/e2e/test_conn37_connections.py, a served process, slow) in this
    process: /metrics shows the limit, the connections open (not the refused ones) and how many were refused; a
    connection over the limit is answered 503 at once, with Retry-After, a Date, `no-store` and `nosniff`, naming
    PLURALIGN_MAX_CONNECTIONS; once one of the limit's connections goes, a new one is answered again."""
    import json
    import re

    limit = 4
    with counted_server(svc, limit) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as scraper:
        before = scraper.get("/metrics").text
        assert _metric(before, "pluralign_max_connections") == limit
        assert _metric(before, "pluralign_connections_refused_total") == 0
        assert _metric(before, "pluralign_open_connections") == 1  # the scrape's own
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit - 1)]
        try:
            opened = _settled(lambda: _metric(scraper.get("/metrics").text, "pluralign_open_connections"), lambda n: n >= limit)
            assert opened == limit  # the limit reached
            for _ in range(3):
                answer = _raw_answer_on(port, b"")
                head, body = answer.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in head.lower() + b"\r\n", answer
                assert re.search(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", head + b"\r\n"), answer
                error = json.loads(body)["error"]
                assert error["code"] == "too_many_connections" and f"PLURALIGN_MAX_CONNECTIONS = {limit}" in error["message"], error
            refused = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)  # a real client sending its request
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert refused.headers["cache-control"] == "no-store" and refused.headers["x-content-type-options"] == "nosniff", refused.headers
            after = scraper.get("/metrics").text
            assert _metric(after, "pluralign_connections_refused_total") == 4
            assert _metric(after, "pluralign_open_connections") == limit  # the refused ones were never the service's
            held.pop().close()  # one of the limit's connections goes: a new one is answered again
            assert _settled(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code, lambda s: s == 200) == 200
        finally:
            for s in held:
                s.close()
        left = _settled(lambda: _metric(scraper.get("/metrics").text, "pluralign_open_connections"), lambda n: n <= 1)
        assert left == 1


def test_a_connection_refused_over_the_limit_holds_no_descriptor_once_its_client_closes(svc, monkeypatch):
    """review wire61: conn37's served test (slow) counted the server's file descriptors: each connection refused over the
    limit goes as its client closes it, not when its lingering ends. Here the server is this process, so are its
    descriptors. The linger is made a minute long (as conn37's LONG_LINGER), so only the clients' closes can free them.
    More are refused than may linger (REFUSED_LINGERING) before any client reads: the oldest are closed to make room,
    each still read whole by its client (as conn37's 200 refused)."""
    import os

    from training.commands import serve

    monkeypatch.setattr(serve, "REFUSED_LINGER_S", 60.0)
    limit, over = 2, serve.REFUSED_LINGERING + 16

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    with counted_server(svc, limit) as port:
        counts = svc.server.server.config.app.state.connections
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit)]
        try:
            assert _settled(lambda: counts.open, lambda n: n >= limit) == limit
            before = descriptors()
            refused = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(over)]
            try:
                assert _settled(lambda: counts.refused, lambda n: n >= over) == over
                for client in refused:
                    answer = b""
                    while chunk := client.recv(65536):  # to the server's end of the 503 (not a hang, not a reset)
                        answer += chunk
                    assert answer.startswith(b"HTTP/1.1 503 ") and b'"too_many_connections"' in answer, answer
            finally:
                for client in refused:
                    client.close()
            kept = _settled(descriptors, lambda n: n <= before + 2)
            assert kept <= before + 2, (before, kept)  # none of the refused kept for its minute of lingering
        finally:
            for s in held:
                s.close()


def test_a_streaming_chat_holds_one_of_the_connection_limit_and_is_answered_whole(svc):
    """conn37's streaming chat (a served process, slow) in this process: a stream is a long-lived connection, counted
    by the limit and never cut by it."""
    limit = 4
    chat = {**CHAT, "user": "streamer", "max_tokens": 12, "stream": True}
    with counted_server(svc, limit) as port:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(limit - 1)]
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {svc.keys['acme']}"},
                              timeout=120) as client, client.stream("POST", "/v1/chat/completions", json=chat) as stream:
                assert stream.status_code == 200
                lines = stream.iter_lines()
                assert next(lines).startswith("data: ")
                refused = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)  # the stream is the limit's last connection
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
                assert [line for line in lines if line][-1] == "data: [DONE]"
        finally:
            for s in held:
                s.close()
