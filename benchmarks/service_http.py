"""Service figures over HTTP on loopback: feedback ingestion under load, and the share of a chat
request spent on personalization (retrieval + context + reranking) for 1 and 4 candidates.

    python benchmarks/service_http.py --rows 100000 --users 1000 --feedback 1000 --clients 8 --chats 8

Pre-fills a fresh data folder with `rows` stored preferences (random vectors, not timed), starts
`pluralign serve` on 127.0.0.1 (default models: SmolLM2-135M-Instruct, MiniLM, PAL bootstrapped),
then runs both measurements against it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import start_serve  # noqa: E402
from pluralign.embed.models import MINILM_ID  # noqa: E402
from pluralign.store import Store, StoredPreference  # noqa: E402
from service.auth import KeyRing  # noqa: E402


def prefill(data: Path, rows: int, users: int) -> None:
    store = Store(str(data / "lancedb"), MINILM_ID, 384)
    rng = np.random.default_rng(0)
    now = time.time()
    for start in range(0, rows, 50_000):
        n = min(50_000, rows - start)
        owners = rng.integers(0, users, n)
        batch = [
            StoredPreference(tenant="default", user_id=f"user{u:05d}", pref_id=uuid.uuid4().hex, prompt=f"question {start + i}",
                             chosen=f"answer a {start + i}", rejected=f"answer b {start + i}", kind="comparison", created_at=now + i * 1e-6)
            for i, u in enumerate(owners)
        ]
        vecs = [rng.standard_normal((n, 384), dtype=np.float32) for _ in range(3)]
        vecs = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in vecs]
        store.add_preferences(batch, *vecs)
    store.compact()


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def feedback_load(url: str, key: str, total: int, clients: int, users: int) -> None:
    latencies, errors, lock = [], [], threading.Lock()
    rng = np.random.default_rng(1)
    bodies = [
        {"type": "comparison", "user": f"user{rng.integers(0, users):05d}", "prompt": f"Which is better, option {i}?",
         "chosen": f"The first option, number {i}.", "rejected": f"The second option, number {i}."}
        for i in range(total)
    ]

    def client(part):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            for body in part:
                t = time.perf_counter()
                r = c.post("/v1/feedback", json=body)
                with lock:
                    (latencies if r.status_code == 201 else errors).append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    print(f"feedback over HTTP, {clients} clients: {len(latencies) / elapsed:.0f}/s, p50 {pct(latencies, 50):.1f} ms, "
          f"p99 {pct(latencies, 99):.1f} ms, errors {len(errors)}")


def chat_overhead(url: str, key: str, chats: int, max_tokens: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600) as c:
        for candidates in (1, 4):
            shares, walls = [], []
            for i in range(chats + 1):
                body = {"model": "pluralign", "user": "user00001", "max_tokens": max_tokens, "temperature": 0.7, "seed": i,
                        "messages": [{"role": "user", "content": "What is a good way to spend a free afternoon?"}],
                        "pluralign": {"candidates": candidates, "rerank": candidates > 1}}
                t = time.perf_counter()
                r = c.post("/v1/chat/completions", json=body)
                wall = (time.perf_counter() - t) * 1000
                r.raise_for_status()
                timings = r.json()["pluralign"]["timings"]
                if i == 0:
                    continue  # warm-up
                personal = timings["retrieval_ms"] + timings["context_ms"] + timings["rerank_ms"]
                shares.append(personal / wall)
                walls.append(wall)
            print(f"chat, {candidates} candidate(s): personalization {100 * np.mean(shares):.1f}% of the request "
                  f"(median request {np.median(walls):.0f} ms, {max_tokens} new tokens)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--feedback", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--pal-dir", default=None, help="an existing PAL checkpoint (default: bootstrap)")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="pluralign-http-")) / "data"
    data.mkdir(parents=True)
    t = time.perf_counter()
    prefill(data, args.rows, args.users)
    print(f"prefilled {args.rows} rows over {args.users} users in {time.perf_counter() - t:.0f}s")
    key = KeyRing(data / "api_keys.json").issue("default", name="benchmark")
    env = {"PLURALIGN_PAL_DIR": args.pal_dir} if args.pal_dir else {}
    proc = start_serve(data, args.port, env)
    url = f"http://127.0.0.1:{args.port}"
    try:
        if args.feedback:
            feedback_load(url, key, args.feedback, args.clients, args.users)
        if args.chats:
            chat_overhead(url, key, args.chats, args.max_tokens)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
