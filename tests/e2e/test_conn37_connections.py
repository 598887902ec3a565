"""Session 37 (conn): connection-level hostile clients against `pluralign serve`.

Before: open connections were not bounded. Each idle connection (within PLURALIGN_REQUEST_READ_TIMEOUT_S)
held a file descriptor of the server: 17,500 idle ones held 17,530 (benchmarks/connections.py), and
with the server's limit at 4,096 a new request failed (ReadError) while they were held. uvicorn's
`limit_concurrency` is checked only once a request's headers arrive, so it bounds none of them.
`PLURALIGN_MAX_CONNECTIONS` now does: one more connection is answered 503 with Retry-After at once."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_break36_slow_clients import WITH_H11
from tests.e2e.test_e2e_serve import ServeProcess
from tests.processes import serve_embeddings
from tests.service.tiny import ROOT
from tests.serving import left_as_found, server_not_run

LIMIT = 16
LOW_SOFT_LIMIT = 256  # the open-files soft limit the server is started with: below what LIMIT needs, so it raises it
# The served processes' refused connections linger a minute, not REFUSED_LINGER_S (2 s), unless their clients close
# them: a wait for their descriptors to go (`settled`, 5 s) then passes only if each goes as its client closes it, as
# a 0.5 s sleep before it did (reviewsuite45: a server keeping them until the linger's end passed the wait)
LONG_LINGER = "import training.commands.serve as serve\nserve.REFUSED_LINGER_S = 60.0\n"
SERVE = "import sys\nfrom training.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def start(tmp: Path, generator: Path, implementation: str, code: str | None = None, **env: str) -> ServeProcess:
    """`pluralign serve` on an untrained population model (no persona data: it starts in seconds); `code`: what it runs
    (`ServeProcess`), else `-m training.cli` or, for h11, WITH_H11."""
    return ServeProcess(tmp / "data", generator, tmp / "pal", code=code or (WITH_H11 if implementation == "h11" else None),
                        PLURALIGN_SHARED_DATA=str(tmp / "no-persona-data"), PLURALIGN_CACHE_DIR=str(tmp / "cache"),
                        PLURALIGN_GENERATION_PROCESS="false", **env)


# both served processes are slow (`make test-http`): their start and serving cost ~12 CPU-s of the default suite, which
# keeps their checks in this process (tests/service/test_web37_http.py: the metrics, the 503 and its headers, a stream
# holding one of the limit, over `timed_server`; the wiring of the setting into `pluralign serve` and its open-files
# limit: the tests below that start no server)
@pytest.fixture(scope="module", params=[pytest.param("httptools", marks=pytest.mark.slow), pytest.param("h11", marks=pytest.mark.slow)])
def served(request, tmp_path_factory, tiny_generator_dir):
    tmp = tmp_path_factory.mktemp("connections")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))  # the server inherits it
    try:
        proc = start(tmp, tiny_generator_dir, request.param, PLURALIGN_MAX_CONNECTIONS=str(LIMIT), PLURALIGN_REQUEST_READ_TIMEOUT_S="30",
                     code=LONG_LINGER + (WITH_H11 if request.param == "h11" else SERVE))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield proc
    finally:
        proc.stop()


def server_fds(proc: ServeProcess) -> int:
    return len(os.listdir(f"/proc/{proc.proc.pid}/fd"))


def read_to_end(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    sock.settimeout(limit_s)
    answer = b""
    while data := sock.recv(65536):
        answer += data
    return answer


def sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def settled(read, done, timeout_s: float = 5.0):
    """`read()` once `done` holds of it, or its last value `timeout_s` on (read every 20 ms): a wait for the
    server to take in (or let go of) the connections a test opened or closed, where a fixed 0.3-0.5 s sleep
    was; the test's assertion on the value says what was found."""
    deadline = time.monotonic() + timeout_s
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_metrics_show_open_and_refused_connections(served):
    """Review session 37: an operator sees PLURALIGN_MAX_CONNECTIONS at work in /metrics: how many connections
    are open (`pluralign_open_connections`), the limit (`pluralign_max_connections`) and how many were refused
    over it (`pluralign_connections_refused_total`), no per-client label. Before, /metrics had none of them:
    connections answered 503 too_many_connections left no trace but the clients' errors.
    First in this module: it reads the counters of a server nothing else has used yet (it started a
    server of its own, limit 3, in tests/e2e/test_review37_connection_metrics.py: one start more)."""
    before = httpx.get(served.url + "/metrics", timeout=5).text
    assert sample(before, "pluralign_max_connections") == LIMIT
    assert sample(before, "pluralign_connections_refused_total") == 0
    assert sample(before, "pluralign_open_connections") == 1  # the scrape's own
    held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(LIMIT - 1)]
    try:
        with httpx.Client(base_url=served.url, timeout=5) as scraper:
            opened = settled(lambda: sample(scraper.get("/metrics").text, "pluralign_open_connections"), lambda n: n >= LIMIT)
            assert opened == LIMIT  # the limit reached
            refused = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(5)]
            for s in refused:
                assert read_to_end(s).startswith(b"HTTP/1.1 503 ")
                s.close()
            after = scraper.get("/metrics").text
        assert sample(after, "pluralign_connections_refused_total") == 5
        assert sample(after, "pluralign_open_connections") == LIMIT  # the refused ones were never the service's
    finally:
        for s in held:
            s.close()
    left = settled(lambda: sample(httpx.get(served.url + "/metrics", timeout=5).text, "pluralign_open_connections"), lambda n: n <= 1)
    assert left == 1


def test_connections_over_the_limit_are_answered_503_at_once_and_hold_no_descriptor(served):
    """Before: every one of them was accepted and kept (each a file descriptor), and answered 200."""
    limits = Path(f"/proc/{served.proc.pid}/limits").read_text()
    assert f"Max open files            {LIMIT + 64 + 1024}" in limits, limits  # raised from LOW_SOFT_LIMIT to fit
    before = server_fds(served)
    held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(LIMIT)]  # idle, within the read deadline
    try:
        assert settled(lambda: server_fds(served), lambda n: n >= before + LIMIT - 2) >= before + LIMIT - 2  # (a health check's connection may have closed meanwhile)
        over = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(200)]
        try:
            answers = [read_to_end(s) for s in over]  # each closed by the server: not a hang
        finally:
            for s in over:
                s.close()
        for answer in answers:
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nretry-after: 1\r\n" in head.lower(), answer
            assert re.search(rb"\r\ndate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", head + b"\r\n"), answer  # edge41: as every answer
            error = json.loads(body)["error"]
            assert error["code"] == "too_many_connections" and "PLURALIGN_MAX_CONNECTIONS = 16" in error["message"], error
        kept = settled(lambda: server_fds(served), lambda n: n <= before + LIMIT + 2)
        assert kept <= before + LIMIT + 2, (before, kept)  # none of the 200 kept: each gone as its client closed it (LONG_LINGER)
        # a real client sending its request gets the same clear answer
        refused = httpx.get(served.url + "/health", timeout=5)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        assert refused.json()["error"]["code"] == "too_many_connections"
        # as every other answer, its refusals included (docs/api.md "Caching"): never stored, never sniffed
        assert refused.headers["cache-control"] == "no-store" and refused.headers["x-content-type-options"] == "nosniff", refused.headers
        held.pop().close()  # one of the limit's connections goes: a new one is answered again
        deadline = time.monotonic() + 3
        while (status := httpx.get(served.url + "/health", timeout=5).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200
    finally:
        for s in held:
            s.close()
    assert settled(lambda: httpx.get(served.url + "/health", timeout=5).status_code, lambda status: status == 200) == 200


def test_a_streaming_chat_holds_one_of_the_limit_and_is_answered_whole_meanwhile(served):
    """A streaming chat is a long-lived connection: it counts, and is never cut by the limit."""
    before = server_fds(served)
    held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(LIMIT - 1)]
    chat = {"model": "pluralign", "user": "streamer", "max_tokens": 12, "stream": True, "messages": [{"role": "user", "content": "Tea?"}]}
    try:
        settled(lambda: server_fds(served), lambda n: n >= before + LIMIT - 1)  # each held one taken in (was: a 0.3 s sleep)
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {served.dev_key()}"}, timeout=120) as client, \
                client.stream("POST", "/v1/chat/completions", json=chat) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines).startswith("data: ")
            refused = httpx.get(served.url + "/health", timeout=5)  # the stream is the limit's last connection
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
            assert [line for line in lines if line][-1] == "data: [DONE]"
    finally:
        for s in held:
            s.close()


def test_a_limit_the_open_files_cannot_hold_is_refused_at_start(tmp_path):
    """Before: no such setting; the service took connections until it had no descriptor left."""
    hard = 1500
    env = {**os.environ, "PLURALIGN_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "PLURALIGN_MAX_CONNECTIONS": "1000"}
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"], env=env, capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)))
    assert done.returncode == 2, done.stderr
    assert ("pluralign: error: PLURALIGN_MAX_CONNECTIONS (setting max_connections) = 1000 needs 2088 open files" in done.stderr
            and "at most 1500 (`ulimit -Hn`): set PLURALIGN_MAX_CONNECTIONS to at most 412" in done.stderr), done.stderr
    assert not (tmp_path / "data").exists()
    env["PLURALIGN_MAX_CONNECTIONS"] = "0"
    done = subprocess.run([sys.executable, "-m", "training.cli", "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "`max_connections` must be at least 1" in done.stderr, done.stderr


@pytest.mark.parametrize(("hard", "limit"), [(1500, 412), (1024, 256), (4096, 1000)])
def test_an_unset_limit_fits_the_open_files_the_process_may_have(hard, limit):
    """Before: the default, 1000, needed 2,088 open files, so `make serve` on a machine whose hard limit is
    lower (1,024 on some) refused to start at all, though nobody had asked for 1000 connections."""
    script = ("import resource; from training.common import fit_open_files; "
              "print(fit_open_files(None), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    env = {k: v for k, v in os.environ.items() if k != "PLURALIGN_MAX_CONNECTIONS"}
    done = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          cwd=ROOT, timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard)))
    assert done.returncode == 0, done.stderr
    got, soft = map(int, done.stdout.split())
    assert got == limit and soft >= min(limit + 1088, hard), done.stdout
    assert (f"{limit} connections, not 1000" in done.stderr) == (limit < 1000), done.stderr


def test_a_set_limit_raises_the_open_files_soft_limit_to_fit():
    """review wire61: the served tests above (slow) read the raised limit of a server started with PLURALIGN_MAX_CONNECTIONS
    set and a soft limit too low for it (`/proc/<pid>/limits`); the tests beside this one check only an unset limit. A set
    limit within the hard limit raises the soft one to it and its lingering and reserved files, in a process of its own (its
    limits are its own)."""
    script = ("import resource; from training.common import fit_open_files; "
              f"print(fit_open_files({LIMIT}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    env = {k: v for k, v in os.environ.items() if k != "PLURALIGN_MAX_CONNECTIONS"}
    done = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          cwd=ROOT, timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, 1500)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(LIMIT), str(LIMIT + 64 + 1024)], done.stdout  # as the served tests' /proc limits


def test_serve_gives_its_server_the_read_deadline_and_the_connection_limit(tmp_path, tiny_generator_dir, tiny_pal_dir, monkeypatch):
    """The wiring the served tests above (slow) and tests/e2e/test_break36_slow_clients.py's served processes check on the
    wire, in this process: `pluralign serve` hands its settings' read deadline and connection limit to its server's
    protocol (`timed_http_protocol`, whose 408 and 503 the default suite checks over `tests.serving.timed_server`), and
    the connections it counts are the ones /metrics reads (`app.state.connections`). The server is built, not run;
    the app's startup and shutdown run around it (tiny models, generating in this process)."""
    from tests.service.tiny import LiveServer
    from training.cli import main
    from training.commands import serve

    for name, value in {"PLURALIGN_GENERATOR": tiny_generator_dir, "PLURALIGN_PAL_DIR": tiny_pal_dir,
                        "PLURALIGN_GENERATION_PROCESS": "false", "PLURALIGN_CACHE_DIR": tmp_path / "cache",
                        "PLURALIGN_REQUEST_READ_TIMEOUT_S": "2", "PLURALIGN_MAX_CONNECTIONS": "4"}.items():
        monkeypatch.setenv(name, str(value))
    built = server_not_run(monkeypatch)
    real = serve.serve_until_stopped
    seen = {}

    def served(app, args, **kwargs):
        seen["app"] = app
        with LiveServer(app):  # the app's startup and shutdown (its runtime's threads end)
            return real(app, args, **kwargs)

    monkeypatch.setattr(serve, "serve_until_stopped", served)
    with left_as_found():
        assert main(["serve", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1", "--port", "0"]) == 0
    protocol = built["config"].http
    assert isinstance(protocol, type) and issubclass(protocol, serve.TimedRequests), protocol
    assert (protocol.timeout_s, protocol.max_connections) == (2.0, 4), (protocol.timeout_s, protocol.max_connections)
    assert protocol.counts is seen["app"].state.connections and protocol.counts.limit == 4


def test_serve_embeddings_gives_its_server_the_read_deadline_and_the_connection_limit(monkeypatch, capsys):
    """The wiring of the test below, in this process: `pluralign serve-embeddings` builds its server on the protocol
    `pluralign serve` has (`timed_http_protocol`, whose 408 and 503 the tests above check on a real serve) with its
    settings' read deadline and connection limit. The server is not run and no model loads (an encoder of zeros): the
    real process (torch and MiniLM, ~4-7 CPU-s) is the slow test below."""
    import service.encoders
    from tests.service.test_reviewt41_nohup_serving import Zeros
    from training.cli import main
    from training.commands import serve

    built = server_not_run(monkeypatch)
    monkeypatch.setattr(service.encoders, "make_encoder", lambda name: Zeros())
    monkeypatch.setenv("PLURALIGN_REQUEST_READ_TIMEOUT_S", "2")
    monkeypatch.setenv("PLURALIGN_MAX_CONNECTIONS", "4")
    with left_as_found():  # its logging put back: the app's handler wrote to this test's stderr, closed after it
        assert main(["serve-embeddings", "--host", "127.0.0.1", "--port", "0"]) == 0, capsys.readouterr().err
    protocol = built["config"].http
    assert isinstance(protocol, type) and issubclass(protocol, serve.TimedRequests), protocol
    assert (protocol.timeout_s, protocol.max_connections) == (2.0, 4), (protocol.timeout_s, protocol.max_connections)
    assert (built["config"].host, built["config"].port) == ("127.0.0.1", 0)


@pytest.mark.slow  # a real serve-embeddings (torch, MiniLM: ~4-7 CPU-s); the default suite keeps the wiring test above
def test_serve_embeddings_bounds_how_long_a_request_may_take_to_arrive_and_its_connections(tmp_path):
    """Before: `pluralign serve-embeddings` ran uvicorn's own protocol: half a request's headers held its
    connection for good, and connections were not bounded."""
    with serve_embeddings(tmp_path, PLURALIGN_REQUEST_READ_TIMEOUT_S="2", PLURALIGN_MAX_CONNECTIONS="4") as (url, _):
        port = int(url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        try:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
            answer = read_to_end(sock, limit_s=8)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5, answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            time.sleep(0.3)
            refused = httpx.get(url + "/health", timeout=5)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        assert httpx.get(url + "/health", timeout=5).status_code == 200
