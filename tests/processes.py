"""`pluralign serve` and `serve-embeddings` subprocesses, waited for the way an orchestrator's probe does."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


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


@contextlib.contextmanager
def serve_embeddings(folder: Path, **extra_env: str) -> Iterator[tuple[str, Path]]:
    """`pluralign serve-embeddings` (MiniLM) in a process of its own on a free loopback port, its output in
    `folder`/serve.log, `extra_env` added to its environment: yields (its URL, that log) once /health
    answers 200; stopped (SIGTERM) on exit."""
    from tests.service.tiny import free_port

    url = f"http://127.0.0.1:{free_port()}"
    log = folder / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra_env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve-embeddings", "--host", "127.0.0.1",
                                 "--port", url.rsplit(":", 1)[1]], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, log, timeout=120)
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=15)
