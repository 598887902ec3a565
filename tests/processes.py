"""Waiting for a `pluralign serve` (or `serve-embeddings`) subprocess the way an orchestrator's probe does."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


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
