"""Start `pluralign serve` in a child process for a benchmark that measures it over HTTP, or the tests' tiny service in
this process with one user's comparisons stored."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


def tiny_service_of_alice(prefix: str, rows: int, spaced_s: float = 0.0, **settings):
    """The tests' tiny service in this process (tests/service/tiny.py: a random Llama, a PAL checkpoint trained here,
    MiniLM; torch on one thread) in a new temporary folder named after `prefix`, `settings` its own, with `rows`
    comparisons of tenant acme's user alice stored directly (random vectors; created `spaced_s` seconds apart, received
    now). Returns (server, service) as `start_service` does: the server not yet entered."""
    import uuid

    import numpy as np
    import torch

    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.store import StoredPreference
    from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    encoder = SentenceEncoder()
    server, svc = start_service(work / "data", save_tiny_generator(work / "gen"), train_tiny_pal(work / "pal", encoder), encoder, **settings)
    now = time.time()
    stored = [StoredPreference(tenant="acme", user_id="alice", pref_id=uuid.uuid4().hex, prompt=f"Which dish would you cook tonight, number {i}?",
                               chosen=f"A warm bowl of soup with bread {i}", rejected=f"A cold salad {i}", kind="comparison",
                               created_at=now + i * spaced_s, received_at=now) for i in range(rows)]
    vectors = np.random.default_rng(0).standard_normal((rows, svc.runtime.store.dim)).astype(np.float32)
    svc.runtime.store.add_preferences(stored, vectors, vectors, vectors)
    return server, svc
