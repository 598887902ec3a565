"""Session 36 (break): clients that send a request slowly, or never finish it, against `pluralign serve`.

uvicorn's keep-alive timer covers only a connection idle after a response: a connection that never sent
a whole request (nothing at all, half its headers, or a body a byte at a time: slowloris) was held open
forever, each with a file descriptor, so enough of them (the process may hold 20,000 here) left none for
the store's files and the feedback log. `PLURALIGN_REQUEST_READ_TIMEOUT_S` now bounds how long a request
may take to arrive; a request that arrives in time is served as before, however long it then runs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.e2e.test_e2e_serve import ServeProcess
from tests.service.test_delete_journal import wait_until

TIMEOUT_S = 1  # what the tests wait out at least once each; 1 s keeps them short and still apart from the 0.5 s trickles
# uvicorn parses with httptools where it is installed (requirements.txt pins it), else with h11
WITH_H11 = """
import sys
import uvicorn.protocols.http.auto as auto
from uvicorn.protocols.http.h11_impl import H11Protocol
auto.AutoHTTPProtocol = H11Protocol
from training.cli import main
sys.exit(main(sys.argv[1:]))
"""


class InProcess:
    """The real app on tiny models, in this process, behind the protocol `pluralign serve` runs (`timed_http_protocol`,
    read deadline TIMEOUT_S, httptools): what a served process answers on the wire, without its start (torch's imports,
    the models' load: ~14 CPU-s of the default suite). `pluralign serve` giving its protocol the setting's deadline is
    checked without a server (tests/e2e/test_conn37_connections.py, `test_serve_gives_its_server_the_read_deadline_and_the_
    connection_limit`); the real processes (both parsers) are slow (`make test-http`)."""

    def __init__(self, port: int, key: str):
        self.port, self.url, self.key = port, f"http://127.0.0.1:{port}", key

    def dev_key(self) -> str:
        return self.key


@pytest.fixture(scope="module", params=["in-process", pytest.param("httptools", marks=pytest.mark.slow),
                                        pytest.param("h11", marks=pytest.mark.slow)])
def served(request, tmp_path_factory, tiny_generator_dir, tiny_pal_dir, minilm):
    tmp = tmp_path_factory.mktemp("slow-clients")
    if request.param == "in-process":
        from tests.service.tiny import start_service
        from tests.serving import timed_server

        server, service = start_service(tmp / "data", tiny_generator_dir, tiny_pal_dir, minilm)
        with server, timed_server(server.server.config.app, TIMEOUT_S) as port:
            yield InProcess(port, service.keys["acme"])
        return
    proc = ServeProcess(tmp / "data", tiny_generator_dir, tiny_pal_dir, code=WITH_H11 if request.param == "h11" else None,
                        PLURALIGN_REQUEST_READ_TIMEOUT_S=str(TIMEOUT_S), PLURALIGN_CACHE_DIR=str(tmp / "cache"),
                        PLURALIGN_GENERATION_PROCESS="false")
    try:
        yield proc
    finally:
        proc.stop()


def held_for(proc: ServeProcess, first: bytes, then: bytes = b"", every_s: float = 0.0, limit_s: float = 4 * TIMEOUT_S,
             reset_ends: bool = False) -> tuple[float, bytes]:
    """Open a connection, send `first`, then `then` a byte every `every_s` (0: nothing more); returns how
    long the service kept the connection and what it answered. With `reset_ends`, a reset read is the
    connection's end (a byte sent as the service closed a connection with nothing owed is answered so)."""
    sock = socket.create_connection(("127.0.0.1", proc.port))
    sock.settimeout(every_s or limit_s)
    started = time.monotonic()
    sock.sendall(first)
    answer, rest = b"", iter(then)
    try:
        while time.monotonic() - started < limit_s:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                if not reset_ends:
                    raise
                break
            except TimeoutError:
                byte = next(rest, None)
                if byte is not None:
                    sock.sendall(bytes([byte]))
                continue
            if not data:
                break
            answer += data
    finally:
        sock.close()
    return time.monotonic() - started, answer


@pytest.mark.parametrize("first, then, every_s", [
    (b"", b"", 0.0),  # connected, sent nothing
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n", b"", 0.0),  # half its headers
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 100, 0.5),  # headers a byte every half second
], ids=["nothing", "half-headers", "headers-trickled"])
def test_a_request_that_does_not_arrive_in_time_gets_408_and_its_connection_closed(served, first, then, every_s):
    """Before: each connection stayed open (the first two for good; a third held 90 s, then the test gave up)."""
    held, answer = held_for(served, first, then, every_s)
    assert held < TIMEOUT_S + 3, (held, answer)
    if first:  # a client that began a request is told why (one that sent nothing has no request to answer)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert re.search(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", answer.split(b"\r\n\r\n")[0]), answer  # edge41: as every answer
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "request_timeout" and "PLURALIGN_REQUEST_READ_TIMEOUT_S" in error["message"], error
    assert httpx.get(served.url + "/v1/models").status_code == 401  # the service still answers others at once


def test_a_body_trickled_in_past_the_deadline_is_cut_and_stores_nothing(served):
    key = served.dev_key()
    row = json.dumps({"type": "comparison", "user": "slowpoke", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).encode()
    head = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(row)}\r\n\r\n").encode()
    held, answer = held_for(served, head + row[:5], row[5:], every_s=0.5)
    assert held < TIMEOUT_S + 3 and answer.startswith(b"HTTP/1.1 408 "), (held, answer)
    # review36b: a body cut so says what helps on a slow link (before: only 'send it again, at once', which fails the same way)
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error["param"] == "body" and "smaller" in error["message"], error
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(served.url + "/v1/users/slowpoke", headers=headers).status_code == 404
    # the same request sent at once is stored, and a request that arrived in time may then run longer than the deadline
    assert httpx.post(served.url + "/v1/feedback", content=row, headers={**headers, "Content-Type": "application/json"}).status_code == 201
    chat = {"model": "pluralign", "user": "slowpoke", "max_tokens": 12, "messages": [{"role": "user", "content": "Tea?"}]}
    with httpx.Client(base_url=served.url, headers=headers, timeout=120) as client:  # keep-alive: the second request on one connection
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        time.sleep(TIMEOUT_S + 0.5)  # idle past the deadline between requests: uvicorn's keep-alive closes it, the client reconnects
        assert client.post("/v1/chat/completions", json=chat).status_code == 200


TCP_CLOSE = 7  # `tcpi_state` (the first byte of Linux's TCP_INFO) of a connection ended both ways or reset


def send_the_rest_unreset(sock: socket.socket, rest: bytes) -> None:
    """Sends `rest` on a connection whose answer was read to the service's end, closes this side, and fails the
    test if the service reset the connection (at the send, or once both sides closed): a half close lets a client
    still sending finish; a plain close answers its late bytes with a reset."""
    try:
        sock.sendall(rest)
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:  # the service's reset came back at once
        pytest.fail(f"the connection was reset: {exc!r}")
    assert wait_until(lambda: sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE, 30)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    assert error == 0, f"the connection was reset: {os.strerror(error)}"


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the connection's state from Linux's TCP_INFO")
def test_a_client_still_sending_when_its_408_comes_is_not_reset(served):
    """A client sends the rest of its body after the deadline: it read the 408 and the service's end of the
    connection, then sends on (as a client that writes a whole body before it reads does, or one whose next
    byte crossed the 408) and closes. Before: the service closed the connection with the 408, so those bytes
    met a closed socket, which answers with a reset (the client's end said EPIPE or ENOTCONN); a byte still
    unread when it closed reset the connection at once, which the client read after the 408 (the trickled
    body's test got ConnectionResetError under load). Now it half closes and drops what still comes until the
    client closes, as after its 400 and 503 (RFC 9112, 9.6: a server closes in stages)."""
    key = served.dev_key()
    row = json.dumps({"type": "comparison", "user": "still-sending", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."}).encode()
    head = (f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(row)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(TIMEOUT_S + 30)
        sock.sendall(head + row[:5])
        answer = b""
        while data := sock.recv(65536):  # the 408, then the service's end of the connection
            answer += data
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        send_the_rest_unreset(sock, row[5:])
    assert httpx.get(served.url + "/v1/users/still-sending", headers={"Authorization": f"Bearer {key}"}).status_code == 404


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="reads the connection's state from Linux's TCP_INFO")
def test_a_body_still_coming_after_its_401_is_not_reset_at_the_deadline(served):
    """reviewf42: a wrong key is answered 401 before the body is read (BearerAuth); a client still sending that body
    at the deadline (one that writes a whole body before it reads, on a slow link) met a closed socket, which answered
    its next bytes with a reset, as before flaky42 after a 408: the deadline closed at once whenever an answer had
    begun, a whole one too. Now it half closes, as after the 408: the client reads its 401, then an end."""
    head = (b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pk-wrong\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        sock.settimeout(TIMEOUT_S + 30)
        sock.sendall(head + b"{")
        answer = b""
        while data := sock.recv(65536):  # the 401 at once, then, at the deadline, the service's end of the connection
            answer += data
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        send_the_rest_unreset(sock, b" " * 999)


def test_blank_lines_trickled_after_a_request_do_not_keep_the_connection(served):
    """review36b: with httptools, a connection that had one request answered, then sent an empty line
    (`\\r\\n`, which the parser skips before a request line) every half second, stayed open for good:
    each byte cancelled uvicorn's keep-alive timer, and no request began, so no read deadline ran (held
    past the test's limit, 4x the deadline; h11 answered 400 at the first). Bytes that begin no request
    now start the deadline as a request's first byte does. The service closes such a connection at once
    (nothing owed to the client), so a blank line sent as it closes is answered with a reset, not an end:
    the client has read its answer either way (a CI run read the reset and failed the test)."""
    held, answer = held_for(served, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n" * 40, every_s=0.5, reset_ends=True)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert held < TIMEOUT_S + 3, (held, answer)


def test_a_pipelined_request_cut_in_its_headers_gets_408_after_the_first_is_answered(served):
    """conn37: a complete request and, behind it in the same bytes, a second cut in its headers. httptools
    answered the first, then 408 for the second; h11 answered the first, then closed the connection without
    a word once uvicorn's keep-alive timer ran out (5 s: h11 parses what was pipelined only once the first
    answer is out, and no bytes came after it to start the deadline)."""
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    held, answer = held_for(served, first + b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 2, answer
    second = answer[answer.index(b"HTTP/1.1 ", 1):]
    assert second.startswith(b"HTTP/1.1 408 ") and json.loads(second.split(b"\r\n\r\n", 1)[1])["error"]["param"] is None, answer
    assert held < TIMEOUT_S + 3, (held, answer)


class SlowLink:
    """A TCP relay to `port` on loopback passing the client's bytes on at `rate` bytes a second at most
    (the answers at once): a client on a slow uplink."""

    def __init__(self, port: int, rate: float):
        self.target, self.rate, self.loop = port, rate, asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def pipe(reader, writer, rate: float) -> None:
            try:
                while data := await reader.read(4096):
                    writer.write(data)
                    await writer.drain()
                    if rate:
                        await asyncio.sleep(len(data) / rate)
            except OSError:
                pass
            finally:
                writer.close()

        async def relay(client_reader, client_writer) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.target)
            await asyncio.gather(pipe(client_reader, writer, self.rate), pipe(reader, client_writer, 0))

        async def start() -> None:
            self.server = await asyncio.start_server(relay, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()


def test_an_import_over_a_link_too_slow_for_a_whole_chunk_is_sent_in_smaller_ones(served, tmp_path):
    """review36b: `pluralign data import` sends up to 500 rows (512 KB) a request; a link too slow to send
    one within PLURALIGN_REQUEST_READ_TIMEOUT_S (60 s: under ~8.5 kB/s for a full chunk) had each chunk
    answered 408, and the CLI stopped there ('refused ... (408)', nothing stored; run again, the same), so
    such a link could import nothing. Now a chunk answered 408 is sent again in two halves, as one answered
    413 is. Here: 48 rows, ~24 KB, over a 12 kB/s link with a 1 s deadline (the whole chunk ~2 s; a half, passed on
    in 4 KB pieces, ~0.7 s); under `adapter_every` (50) rows, so the import queues no adapter job for the stop."""
    rows = [json.dumps({"prompt": f"Question {i}? " + "x" * 150, "chosen": "Yes " + "y" * 100, "rejected": "No " + "z" * 100,
                        "user_id": "slowlink"}) for i in range(48)]
    path = tmp_path / "prefs.jsonl"
    path.write_text("\n".join(rows) + "\n")
    link = SlowLink(served.port, 12_000)
    done = subprocess.run([sys.executable, "-m", "training.cli", "data", "import", "--source", "jsonl", "--path", str(path),
                           "--url", f"http://127.0.0.1:{link.port}", "--key", served.dev_key()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 48, done.stdout


@pytest.mark.parametrize("method, path", [("DELETE", "/v1/users/{user}"), ("GET", "/v1/users/{user}/export")])
def test_a_request_whose_body_does_not_arrive_in_time_is_answered_408_and_does_nothing(served, method, path):
    """wire43: a route that reads no body (a DELETE's, an export's GET) ran as soon as the head arrived, its body
    still coming: a DELETE with a body trickled in was carried out and answered 200 before the body ended, or, its
    head arriving late, answered 408 while it went on deleting (a 408 that did not mean nothing was done). A request
    declaring a body now waits for all of it before its handler runs: a 408 is an answer to a request not served."""
    key = served.dev_key()
    user = f"trickled-{method.lower()}"
    row = json.dumps({"type": "comparison", "user": user, "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(served.url + "/v1/feedback", content=row, headers={**headers, "Content-Type": "application/json"}).status_code == 201
    head = (f"{method} {path.format(user=user)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: 100\r\n\r\n").encode()
    held, answer = held_for(served, head + b"{", b"x" * 99, every_s=0.5)
    assert held < TIMEOUT_S + 3 and answer.startswith(b"HTTP/1.1 408 "), (held, answer)
    assert httpx.get(served.url + f"/v1/users/{user}", headers=headers).status_code == 200  # not deleted
