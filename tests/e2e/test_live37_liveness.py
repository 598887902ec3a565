"""The manifest's probes against a real `pluralign serve` held at PLURALIGN_MAX_CONNECTIONS (live session 37).

Before: the livenessProbe was `httpGet /health`, and a connection over the limit is answered 503
`too_many_connections` before its request is read (`training.commands.serve.TimedRequests`), so ~limit idle
connections held by a client for 30 s made the kubelet restart a replica whose process and event loop were
answering, cutting its streams, though a restart cannot help. Now liveness is an exec probe that counts any
answer of the event loop, the over-limit 503 included, as alive; readiness (out of the load balancer) still
fails while saturated, and liveness still fails when the process is hung (SIGSTOP) or gone. Each probe is run
here as the kubelet runs it: the exec probe's command in a subprocess, bounded by its timeoutSeconds; an
httpGet probe as a GET whose status is 200-399 within timeoutSeconds (default 1 s)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from tests.e2e.test_conn37_connections import start
from tests.service.tiny import ROOT

LIMIT = 4
MANIFEST = ROOT / "deploy" / "k8s" / "pluralign.yaml"


def container() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (sts,) = [d for d in docs if d.get("kind") == "StatefulSet"]
    (api,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return api


def passes(probe: dict, port: int) -> bool:
    """Whether one run of `probe` (a container's probe from the manifest) succeeds against 127.0.0.1:`port`, as the
    kubelet decides it (the manifest's port 8000 is the test server's `port` here)."""
    timeout = probe.get("timeoutSeconds", 1)
    if "exec" in probe:
        command = probe["exec"]["command"]
        if command[0] == "python":  # the image's python (3.11, stdlib only): this one here
            command = [sys.executable, *command[1:]]
        assert sum(arg.count("8000") for arg in command) == 1, command
        try:
            return subprocess.run([arg.replace("8000", str(port)) for arg in command], timeout=timeout,
                                  capture_output=True).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    get = probe["httpGet"]
    assert get["port"] == 8000
    try:
        return 200 <= httpx.get(f"http://127.0.0.1:{port}{get['path']}", timeout=timeout).status_code < 400
    except httpx.HTTPError:
        return False


def answering(answer: bytes | None):
    """A loopback listener whose every connection is answered `answer` at once (None: accepted, never answered,
    as a stopped process's backlog) and closed. Returns (port, stop)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if answer is None:
                held.append(conn)
                continue
            conn.sendall(answer)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()

    def stop():
        # shut down first: a close alone left the socket listening while the thread's accept() held it, so the
        # port still took connections and never answered (a "closed port" that hung a probe for its 4 s)
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        for conn in held:
            conn.close()

    return listener.getsockname()[1], stop


def image_healthcheck() -> dict:
    """The image's HEALTHCHECK (deploy/Dockerfile, exec form) as an exec probe bounded by its --timeout."""
    (line,) = re.findall(r"^HEALTHCHECK .*--timeout=(\d+)s CMD (\[.*\])$", (ROOT / "deploy" / "Dockerfile").read_text(), flags=re.M)
    return {"exec": {"command": json.loads(line[1])}, "timeoutSeconds": int(line[0])}


@pytest.mark.parametrize("probe", ["manifest", "image"])
def test_the_liveness_probe_counts_the_over_limit_answer_as_alive_and_nothing_else(probe):
    """The exec probe of the manifest (and the image's HEALTHCHECK, which ECS or an autoheal replaces containers by) against the exact bytes `pluralign serve` refuses a connection with
    (`over_limit_answer`), another 503, a 200, a listener that never answers, and a closed port (the default
    suite's check: the real server's is slow-marked below)."""
    from training.commands.serve import over_limit_answer

    liveness = container()["livenessProbe"] if probe == "manifest" else image_healthcheck()
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    other = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 7\r\nconnection: close\r\n\r\nstopped"
    for answer, alive in ((over_limit_answer(4), True), (ok, True), (other, False), (None, False)):
        port, stop = answering(answer)
        try:
            assert passes(liveness, port) is alive, answer
        finally:
            stop()
    with pytest.raises(ConnectionRefusedError):  # closed: refused, as a gone process's port
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert not passes(liveness, port)


@pytest.mark.slow  # a real serve, SIGSTOP and the probe's 4 s bound: 15-30 s on the shared machine
def test_a_replica_held_at_its_connection_limit_is_alive_not_ready_and_a_hung_or_gone_one_is_not_alive(tmp_path, tiny_generator_dir):
    api = container()
    liveness, readiness = api["livenessProbe"], api["readinessProbe"]
    served = start(tmp_path, tiny_generator_dir, "httptools", PLURALIGN_MAX_CONNECTIONS=str(LIMIT),
                   PLURALIGN_REQUEST_READ_TIMEOUT_S="30")
    try:
        assert passes(liveness, served.port) and passes(readiness, served.port)
        held = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(LIMIT)]  # idle, within the read deadline
        try:
            time.sleep(0.3)
            assert httpx.get(f"{served.url}/health").status_code == 503  # saturated: /health itself is refused
            assert not passes(readiness, served.port)  # out of the load balancer: right
            assert all(passes(liveness, served.port) for _ in range(liveness.get("failureThreshold", 3)))  # not restarted
        finally:
            for s in held:
                s.close()
        os.kill(served.proc.pid, signal.SIGSTOP)  # hung: the kernel still accepts, nothing answers
        try:
            started = time.monotonic()
            assert not passes(liveness, served.port)
            assert time.monotonic() - started <= liveness.get("timeoutSeconds", 1) + 1
        finally:
            os.kill(served.proc.pid, signal.SIGCONT)
        assert passes(liveness, served.port)
    finally:
        served.stop()
    assert not passes(liveness, served.port)  # gone: nothing listens
