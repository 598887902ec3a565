"""Requests the HTTP parser itself refuses, against `pluralign serve`, as a client sends them.

Before: a URL over 65,535 bytes (a GET with a long query: httptools' limit; h11 reads it), or a request the
parser cannot read (a header line without a colon), was answered by uvicorn's own
`400 Invalid HTTP request received.` as text/plain: no `X-Request-Id`, no `nosniff`, no error in OpenAI's
shape (the `openai` client and httpx users got `e.body` None), where docs/api.md says every error has that
shape and every answer carries the id. Now it is a JSON 400 like every other, naming `url` when the URL is
what is too long, with `X-Request-Id`, `nosniff` and `Connection: close`."""

from __future__ import annotations

import re
import socket
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from tests.e2e.test_break36_slow_clients import WITH_H11
from tests.e2e.test_crash39_kills import NO_GENERATOR
from tests.e2e.test_e2e_serve import ServeProcess


class InProcess:
    """The real app on tiny models, in this process, behind the protocol `pluralign serve` runs (`timed_http_protocol`
    on httptools, the default read deadline), its parser's refusals logged to `log` as `pluralign serve` writes them
    (the text formatter, the request id filter): what a served process answers, without its start (~10 CPU-s of the
    default suite). The real processes, both parsers, are slow (`make test-http`)."""

    parser = "httptools"

    def __init__(self, port: int, key: str, log):
        self.port, self.url, self.key, self.log = port, f"http://127.0.0.1:{port}", key, log

    def dev_key(self) -> str:
        return self.key


@pytest.fixture(scope="module", params=["in-process", pytest.param("httptools", marks=pytest.mark.slow),
                                        pytest.param("h11", marks=pytest.mark.slow)])
def served(request, tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    """No test here chats: a generator loading no model (NO_GENERATOR) spares the start transformers' import and the
    tiny model's load (2.2 s of CPU, 20-25 s under load 18, suite44b); the parser and the app in front of it are the same."""
    tmp = tmp_path_factory.mktemp("unparsable")
    if request.param == "in-process":
        import logging

        from service.admin.controllers import ADMIN_HANDLERS
        from service.requestid import APP_FORMAT, RequestIdFilter, TextFormatter
        from tests.service.tiny import start_service
        from tests.serving import timed_server

        log = tmp / "serve.log"
        handler = logging.FileHandler(log)
        handler.setFormatter(TextFormatter(APP_FORMAT))
        handler.addFilter(RequestIdFilter())
        logging.getLogger("pluralign.service").addHandler(handler)
        server, service = start_service(tmp / "data", tiny_generator_dir, tiny_pal_dir, minilm, admin_handlers=ADMIN_HANDLERS)
        try:
            with server, timed_server(server.server.config.app, 60) as port:
                yield InProcess(port, service.keys["acme"], log)
        finally:
            logging.getLogger("pluralign.service").removeHandler(handler)
            handler.close()
        return
    proc = ServeProcess(tmp / "data", NO_GENERATOR, tiny_pal_dir, code=WITH_H11 if request.param == "h11" else None,
                        PLURALIGN_CACHE_DIR=str(tmp / "cache"))
    proc.parser = request.param
    try:
        yield proc
    finally:
        proc.stop()


def assert_json_400(r: httpx.Response) -> dict:
    assert r.status_code == 400, (r.status_code, r.headers, r.text)
    assert r.headers["content-type"] == "application/json", r.headers
    assert r.headers["x-request-id"].startswith("req_") and r.headers["x-content-type-options"] == "nosniff", r.headers
    assert r.headers["connection"] == "close", r.headers
    # session edge41: a `Date` as uvicorn writes on every other answer (RFC 9110 6.6.1: an origin server with a clock sends one)
    assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT",
                        r.headers.get("date", "")), r.headers
    assert abs(parsedate_to_datetime(r.headers["date"]).timestamp() - time.time()) < 60, r.headers  # the server's clock, not a constant
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["request_id"] == r.headers["x-request-id"], error
    return error


def raw(served, request: bytes) -> httpx.Response:
    """`request` sent as it is (curl sends such a URL; httpx, and so the `openai` client, refuse one past
    64 KiB before sending), the answer read to the connection's close."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return httpx.Response(int(lines[0].split()[1]), headers=[tuple(line.split(": ", 1)) for line in lines[1:]], content=body)


def test_a_url_past_the_parsers_limit_is_a_json_400_naming_url(served):
    if served.parser == "h11":
        pytest.skip("h11 reads such a URL: the app answers it (here a 401, no key sent)")
    error = assert_json_400(raw(served, b"GET /v1/users/ann/preferences?after=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert error["param"] == "url" and error["code"] == "invalid_value", error
    assert error["message"].startswith("`url`: 70032 bytes; this service reads a URL of at most 65535 bytes"), error
    assert httpx.get(served.url + "/health").status_code == 200  # served on, the next connection answered


def test_a_request_the_parser_cannot_read_is_a_json_400(served):
    error = assert_json_400(raw(served, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n"))
    assert error["param"] is None and error["code"] == "invalid_http", error
    assert error["message"].startswith("the request is not HTTP/1.1 this service can read"), error


def sent_whole_then_read(served, request: bytes) -> httpx.Response:
    """`request` sent as curl sends it (all of it, then the answer read), though the server stops reading part way:
    a connection reset while sending or reading is raised as it comes."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return httpx.Response(int(lines[0].split()[1]), headers=[tuple(line.split(": ", 1)) for line in lines[1:]], content=body)


def in_two_reads(served, request: bytes, first: int = 120_000) -> bytes:
    """`request` sent in two parts, its first `first` bytes read by the server before the rest comes (the rest ends a
    head or trailers past the limit: before trial47a they were counted after each read, and the read that ended them
    was not), then the answers read to the connection's close."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request[:first])
        time.sleep(0.1)  # read by the server (if not, the tests still fail before their fix: one read held it all)
        sock.sendall(request[first:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def refused_in_two_reads(served, request: bytes, pad: bytes) -> bool:
    """`request`, a head or trailers of `pad` lines past the limit whose end comes in the second read (`in_two_reads`),
    is the 431 naming `headers` (h11: its own 400, past its 16 KiB), and the same request without its last 60 pad lines
    (74 KB) is read whole: the app answers it 401 (no key). Returns whether the parser was httptools (h11: nothing more
    asserted)."""
    answer = in_two_reads(served, request)
    assert answer, "no answer"
    status = int(answer.split(b" ", 2)[1])
    if served.parser == "h11":  # past its own 16 KiB
        assert status == 400, answer[:300]
        return False
    assert status == 431, answer[:300]
    assert b'"param":"headers"' in answer and b'"code":"headers_too_large"' in answer, answer[-300:]
    assert raw(served, request[: -2 - len(pad) * 60] + b"\r\n").status_code == 401  # 74 KB of them: read, the app answered
    return True


@pytest.mark.parametrize("what", ["url", "header"])
def test_a_head_the_parser_stops_reading_part_way_is_answered_not_reset(served, what):
    """Review session 40: the parser gives up part way through a long head (httptools at a URL of 64 KiB, h11 at a
    head of 16 KiB), and the 400 was written and the connection closed with the rest of the request unread: the
    kernel then resets it, and the client, still sending, got `Connection reset by peer`, never the 400 (the 503
    over PLURALIGN_MAX_CONNECTIONS had met the same and half-closes instead). Now the 400 is followed by a
    half-close, what still arrives is read and dropped, and the connection closes when the client's side does."""
    if what == "url":
        request = b"GET /v1/models?q=" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nNo colon here\r\nX-Pad: " + b"a" * 1_000_000 + b"\r\n\r\n"
    error = assert_json_400(sent_whole_then_read(served, request))
    if what == "url" and served.parser == "httptools":
        assert error["param"] == "url" and error["code"] == "invalid_value", error
    else:
        assert error["param"] is None and error["code"] == "invalid_http", error
    assert httpx.get(served.url + "/health").status_code == 200


def test_a_head_past_the_limit_is_a_431_naming_headers_and_one_within_it_is_read(served):
    """Session 42 (a hostile client, no key needed): httptools keeps every header of a head until the head ends, with no
    limit of its own: 300 MB of headers sent to one connection in 0.6 s grew the service by 270 MB, 143 MB of it kept
    once the connection closed (and PLURALIGN_MAX_CONNECTIONS such connections each had the read deadline to send in).
    A head past `MAX_HEAD_BYTES` (a URL at its longest and 64 KiB of headers) is a 431 naming `headers` now, the rest
    of it read and dropped; h11 refuses a head past 16 KiB itself (its 400)."""
    from training.commands.serve import MAX_HEAD_BYTES

    pad = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    r = sent_whole_then_read(served, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + pad * 1000 + b"\r\n")  # 8 MB of headers
    if served.parser == "h11":
        assert assert_json_400(r)["code"] == "invalid_http"
        return
    assert r.status_code == 431, (r.status_code, r.text[:300])
    assert r.headers["connection"] == "close" and r.headers["x-request-id"].startswith("req_"), r.headers
    error = r.json()["error"]
    assert error["param"] == "headers" and error["code"] == "headers_too_large", error
    assert f"over {MAX_HEAD_BYTES} bytes" in error["message"] and error["request_id"] == r.headers["x-request-id"], error
    within = raw(served, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + pad * 12 + b"\r\n")  # 96 KB
    assert within.status_code == 401, (within.status_code, within.text[:300])  # read, and answered by the app: no key
    assert httpx.get(served.url + "/health").status_code == 200



def test_a_head_past_the_limit_whose_end_comes_in_one_read_is_a_431(served):
    """Session trial47a: the head was counted before each read was parsed and the count reset once the parser saw the
    head end, so a head whose last bytes came in one read with its end was never measured past the limit: 140,000 bytes
    of headers sent by httpx (one header of 140 KB) were answered 200, and a head of up to MAX_HEAD_BYTES plus one read
    (256 KiB) was served. Here 120,000 bytes (within the limit, no end), then the last 15,000 and the end."""
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + pad * 134 + b"\r\n"  # 134,986 bytes
    if not refused_in_two_reads(served, head, pad):
        return
    error = assert_json_400(raw(served, b"GET /v1/models?q=" + b"a" * 140_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert error["param"] == "url", error  # a URL past the parser's limit is still named as such, whatever its head's size

def test_a_head_past_the_limit_pipelined_behind_a_request_is_a_431(served):
    """Review session trial47a: the head count is reset when a head ends, so the bytes of a head that began in the read
    in which the request before it ended were never counted: a GET pipelined before 134,986 bytes of headers (120,000
    of them in that read, the rest in the next) had both answered, the second 401 (read by the app). Now the second is
    the 431, after the first's answer."""
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    second = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + pad * 134 + b"\r\n"
    answer = in_two_reads(served, first + second, len(first) + 120_000)
    statuses = [int(line.split(b" ", 2)[1]) for line in re.findall(rb"HTTP/1\.1 \d{3} ", answer)]
    if served.parser == "h11":  # past its own 16 KiB
        assert statuses == [200, 400], answer[:300]
        return
    assert statuses == [200, 431], answer[-600:]
    assert b'"param":"headers"' in answer and b'"code":"headers_too_large"' in answer, answer[-300:]


def test_trailers_past_the_head_limit_are_a_431_naming_headers(served):
    """Review session 42: the head cap counted bytes only until the head ended, but httptools hands a chunked body's
    trailers to uvicorn's `on_header`, which keeps each in the request's header list: 8 MB of trailers after a
    one-byte body (no key needed: `/admin/login` reads its form first) were all kept, then the request answered as
    if nothing were wrong. Trailers past `MAX_HEAD_BYTES` are the same 431 now; h11 refuses them past 16 KiB."""
    pad = b"X-Pad: " + b"a" * 8000 + b"\r\n"
    head = b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    r = sent_whole_then_read(served, head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nkey=x\r\n0\r\n" + pad * 1000 + b"\r\n")
    if served.parser == "h11":
        assert assert_json_400(r)["code"] == "invalid_http"
        return
    assert r.status_code == 431, (r.status_code, r.text[:300])
    assert r.json()["error"]["param"] == "headers" and r.headers["connection"] == "close", r.text
    within = raw(served, head + b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nkey=x\r\n0\r\n" + pad * 4 + b"\r\n")
    assert within.status_code == 401, (within.status_code, within.text[:300])  # trailers read, the form answered



def test_trailers_past_the_limit_whose_end_comes_in_one_read_are_a_431(served):
    """Session trial47a: as a head's, trailers were counted after each read was parsed, and the read that ended the
    message was not counted, so 134 KB of trailers whose last 15 KB came with their end were read and the form
    answered (401). They are the 431 now; 74 KB of them are still read."""
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    head = b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
    request = head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nkey=x\r\n0\r\n" + pad * 134 + b"\r\n"
    refused_in_two_reads(served, request, pad)

def test_the_log_line_of_the_parser_s_400_names_its_own_request_id_once(served):
    """Review session 40: under h11, a malformed request pipelined behind a good one is parsed when the good one's
    answer ends, in that request's context: the warning line said `request_id=<the 400's>` and then the logging
    filter added ` request_id=<the good request's>`, two ids on one line (a JSON line's `request_id` the wrong one),
    so a search for the good request's id found the parser's refusal too. Now the line carries the 400's id alone."""
    good = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(good + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    refusal = answer[answer.index(b"HTTP/1.1 400 "):].split(b"\r\n\r\n")[0].decode()
    (rid,) = [line.split(": ", 1)[1] for line in refusal.split("\r\n") if line.startswith("x-request-id: ")]
    deadline = time.monotonic() + 10
    while not (lines := [line for line in served.log.read_text().splitlines() if "HTTP parser refused" in line and rid in line]):
        assert time.monotonic() < deadline, served.log.read_text()[-2000:]
        time.sleep(0.1)
    assert [line.count("request_id=") for line in lines] == [1], lines


def test_a_request_pipelined_before_a_malformed_one_is_answered_first(served):
    """Review session 40: under httptools the parser reads a malformed request pipelined behind a good one before
    the good one's answer is written, and the 400 went out at once and the connection closed: the client read the
    400 as the good request's answer, and that answer never came (h11 parses the next request only once an answer
    ends). Now the 400 waits for the answers before it, as HTTP/1.1 orders them."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert answer.count(b"HTTP/1.1 400 ") == 1 and b'"code":"invalid_http"' in answer, answer[-400:]


def test_a_client_that_half_closes_after_its_request_reads_the_answer(served):
    """Session older49: a client that shuts its sending side once its request is sent (`nc -N`, some proxies) got no
    answer from `pluralign serve` (uvicorn took the EOF as the client gone and dropped the answer; the feedback was
    stored all the same). Now it reads the 201, and the connection closes after it
    (`training.commands.serve.TimedRequests.eof_received`)."""
    body = b'{"type": "comparison", "user": "hal", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}'
    request = (b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (served.dev_key().encode(), len(body), body))
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):  # to the server's close
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 ") and b'"stored":["' in answer, answer[:300]
