"""`pluralign serve` and `serve-embeddings` subprocesses, waited for the way an orchestrator's probe does."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


# Prefix of a Python child's argv that starts it as from a terminal, SIGINT with Python's own Ctrl-C handler: a test
# process started in the background inherits an ignored SIGINT (bash ignores it in `&` jobs), which an exec keeps and
# under which Python installs no handler, so a Ctrl-C test's child ran on through its SIGINT. (An exec keeps SIG_DFL
# too; no preexec_fn, which is unsafe in a process with threads.)
AS_FROM_A_TERMINAL = ("-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                      "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Polls `url`/health until it answers 200. AssertionError with the process's log when the process
    exits first or `timeout` seconds pass (a non-200 answer or a refused connection: polled again)."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, f"exited {proc.returncode} before /health answered 200:\n{log.read_text()}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.time() < deadline, f"/health not 200 after {timeout:g} s:\n{log.read_text()}"
        time.sleep(0.2)


BIND_FAILED = ("is in use by another process", "address already in use")  # check_listen's words; uvicorn's, Python's


def listening_ports(pid: int) -> set[int]:
    """The ports process `pid` listens on at 127.0.0.1 (its own sockets, read with psutil); none once it ended."""
    try:
        found = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:  # ended meanwhile: the caller's poll() tells
        return set()
    return {c.laddr.port for c in found if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"}


def wait_listening(proc: subprocess.Popen, log: Path, timeout: float, given: int | None = None) -> int | None:
    """Polls /health on the ports `proc` itself listens on (`given` only, when not None) until one answers 200:
    that port. A server given `--port 0` binds one of its own, so no other process can take it between a choice and
    the bind, and none but `proc` is asked (a port found free, then given, could be taken meanwhile by another server,
    whose /health passed for this one's). None when `proc` exited on finding `given` taken (`BIND_FAILED` in its log);
    AssertionError with the log when it exited otherwise, or `timeout` seconds passed."""
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            if given is not None and any(words in log.read_text().lower() for words in BIND_FAILED):
                return None
            raise AssertionError(f"exited {proc.returncode} before /health answered 200:\n{log.read_text()}")
        for port in sorted(p for p in listening_ports(proc.pid) if given is None or p == given):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return port
            except httpx.TransportError:
                pass
        assert time.time() < deadline, f"/health not 200 after {timeout:g} s:\n{log.read_text()}"
        time.sleep(0.2)


PORT_TRIES = 5  # starts of `on_a_free_port` before it gives up: each found its port taken by another process


def on_a_free_port(start: Callable[[int], subprocess.Popen], log: Path, timeout: float) -> tuple[subprocess.Popen, int]:
    """(the process, its port) once `start(port)` (a server told to listen on `port`, its output in `log`) answers
    /health on a socket of its own there (`wait_listening`); started again on another port when another process took
    the one `free_port` found before it bound it, up to `PORT_TRIES` times. For a server whose port must be known before
    it starts (PORT, which cannot be 0; a start line naming its address); else give it `--port 0`."""
    from tests.service.tiny import free_port

    for _ in range(PORT_TRIES):
        proc = start(port := free_port())
        try:
            if wait_listening(proc, log, timeout, given=port) is not None:
                return proc, port
        except AssertionError:  # not healthy in time (or it failed otherwise): not left running
            proc.kill()
            proc.wait(timeout=120)  # a killed process ends; its last thread exits at its own priority (flaky47)
            raise
    raise AssertionError(f"found its port taken {PORT_TRIES} times:\n{log.read_text()}")


START_LINE = re.compile(r"pluralign serve-embeddings: .* at (?P<url>http://127\.0\.0\.1:(?P<port>\d+))/v1/embeddings")


@contextlib.contextmanager
def serve_embeddings(folder: Path, **extra_env: str) -> Iterator[tuple[str, Path]]:
    """`pluralign serve-embeddings --port 0` (MiniLM) in a process of its own, its output in `folder`/serve.log,
    `extra_env` added to its environment: yields (its URL, that log) once /health answers 200 at the URL its start
    line names, as a user reads it (until small47a that line said `:0`, the port asked for); stopped (SIGTERM) on exit."""
    log = folder / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra_env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve-embeddings", "--host", "127.0.0.1", "--port", "0"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while (said := START_LINE.search(log.read_text())) is None:
            assert proc.poll() is None, f"exited {proc.returncode} before its start line:\n{log.read_text()}"
            assert time.time() < deadline, f"no start line after 120 s:\n{log.read_text()}"
            time.sleep(0.2)
        assert said["port"] != "0" and int(said["port"]) in listening_ports(proc.pid), log.read_text()
        wait_healthy(said["url"], proc, log, timeout=120)
        yield said["url"], log
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def workers_of(job_id: str) -> list[int]:
    """The pids of live processes whose environment carries the job's id (`training.jobs.runner.JOB_ENV`)."""
    from training.jobs.runner import JOB_ENV

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(JOB_ENV) == job_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found
