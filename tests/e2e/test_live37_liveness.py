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
    kubelet decides it. An exec probe runs with PORT=`port` in its environment, as the container's `env` (and the
    image's ENV) sets it for the server; an httpGet probe names the container's port `http`, `port` here."""
    timeout = probe.get("timeoutSeconds", 1)
    if "exec" in probe:
        command = probe["exec"]["command"]
        if command[0] == "python":  # the image's python (3.11, stdlib only): this one here
            command = [sys.executable, *command[1:]]
        try:
            return subprocess.run(command, timeout=timeout, capture_output=True,
                                  env={**os.environ, "PORT": str(port)}).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    get = probe["httpGet"]
    assert get["port"] == "http"
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
    served = start(tmp_path, tiny_generator_dir, "httptools", port_from_env=True,  # PORT, as the manifest and image give it
                   PLURALIGN_MAX_CONNECTIONS=str(LIMIT), PLURALIGN_REQUEST_READ_TIMEOUT_S="30")
    assert served.port != 8000
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


def test_the_port_is_given_once_as_port_which_serve_and_the_probes_follow():
    """Ops session 39: the liveness probe (and the image's HEALTHCHECK) hard-coded 127.0.0.1:8000, so a replica
    moved to another port was restarted though healthy. Now `pluralign serve` without --port listens on $PORT,
    the image and the manifest set PORT, and the exec probes read it; the httpGet probes and the Service name
    the container's port `http`. Seen failing before: no PORT in the manifest, the probes' 8000 literal."""
    api = container()
    env = {e["name"]: e.get("value") for e in api["env"]}
    (http,) = [p for p in api["ports"] if p.get("name") == "http"]
    assert env["PORT"] == str(http["containerPort"]), (env, api["ports"])
    assert "8000" not in json.dumps({k: v for k, v in api.items() if k.endswith("Probe") and k != "livenessProbe"})
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ENV PORT=8000$", dockerfile, flags=re.M) and re.search(r"^EXPOSE 8000$", dockerfile, flags=re.M)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, flags=re.M)
    assert "--port" not in json.loads(cmd), cmd  # a --port there would move the server, not the HEALTHCHECK
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    (service,) = [d for d in docs if d.get("kind") == "Service" and d["metadata"]["name"] == "pluralign-api"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("value", ["abc", "", "70000", "-1", "8000.0"])
def test_serve_names_a_port_variable_it_cannot_listen_on(tmp_path, value):
    """PORT that is not a port: one line naming PORT and its value, exit 2, before anything loads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    result = subprocess.run([sys.executable, "-m", "training.cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**env, "PORT": value, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"pluralign: error: PORT={value!r}: the port to listen on must be an integer from 1 to 65535"), result.stderr
    assert not (tmp_path / "data").exists()


def test_serve_names_port_when_the_port_it_gives_is_taken(tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
        result = subprocess.run([sys.executable, "-m", "training.cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120, env={**env, "PORT": str(port), "PYTHONPATH": str(ROOT)})
    finally:
        taken.close()
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"pluralign: error: PORT={port}: 127.0.0.1:{port} is in use by another process"), result.stderr


def test_serve_refuses_port_0_from_the_variable_the_probes_read(tmp_path):
    """Review of ops39: PORT=0 made serve listen on any free port while the image's HEALTHCHECK and the manifest's
    liveness probe connect to $PORT, port 0: refused, so the replica was restarted again and again though healthy.
    Now PORT=0 is the one-line error naming PORT (any free port stays `--port 0`). Seen failing before: the serve went
    on (here to the data folder held by another process, the next check)."""
    from tests.e2e.test_ops39_one_serve import HOLD

    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(data)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLURALIGN_")}
    try:
        assert holder.stdout.readline().strip() == "held"
        result = subprocess.run([sys.executable, "-m", "training.cli", "serve"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=120, env={**env, "PORT": "0", "PLURALIGN_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)})
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("pluralign: error: PORT='0': the port to listen on must be an integer from 1 to 65535"), result.stderr
    assert "--port 0" in result.stderr, result.stderr
