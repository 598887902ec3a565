"""Start `pluralign serve` in a child process for a benchmark that measures it over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def start_serve(data: Path, port: int, env: dict[str, str], code: Path = ROOT) -> subprocess.Popen:
    """`pluralign serve` of the checkout at `code` (another one's: a before/after side by side) on
    `data`, offline, one thread per library, no tenant rate limit (benchmark clients send flat out),
    `env` over that; its log goes to `data.parent / "serve.log"`. Returns once /health answers 200.
    Raises SystemExit with the log's tail when it exits or is not healthy within ~10 minutes."""
    full = {**os.environ, "PLURALIGN_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")])),
            "OMP_NUM_THREADS": "1", "PLURALIGN_TENANT_REQUESTS_PER_SECOND": "0", **env}
    log = data.parent / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            cwd=code, env=full, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    for _ in range(1200):
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("serve did not start:\n" + log.read_text()[-3000:])


def run_for(threads: list[threading.Thread], seconds: float, stop: threading.Event) -> None:
    """Start `threads` (a benchmark's clients, each looping until `stop` is set), let them run `seconds`, then set
    `stop` and wait for every one to finish its request in flight."""
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
