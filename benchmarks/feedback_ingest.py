"""Issue 3's two storage bars at 1M stored preferences over 10k users: feedback ingestion over HTTP,
and one user's history retrieval (cold from LanceDB, warm from the history cache, and right after
a feedback that is still pending in the log).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/feedback_ingest.py --rows 1000000 --users 10000 --seconds 20 --connections 8

1. Prefill a data folder with `rows` preferences over `users` users: random unit vectors, not
   MiniLM embeddings (building 1M real embeddings would take hours here), written straight to
   LanceDB and compacted (not timed). `--data DIR` keeps the folder and reuses it next time.
2. Retrieval, in this process on the same table: the 4 nearest past preferences of a random user
   (`Store.search`, what a chat request runs), first read of each user (cold: one LanceDB vector
   search; the user's history then loads in the background, timed apart) then again (warm: the
   cached history); then read-after-write: one feedback appended to the log
   and the same search, which first embeds (MiniLM) and moves that user's pending rows.
3. Ingestion: `pluralign serve` (torch on one thread) on 127.0.0.1; `connections` keep-alive
   connections from one asyncio raw-socket client each send comparison feedback for random users
   as fast as answers come back, for `seconds` after a 2 s warm-up. Then the embedding backlog:
   rows still in the log, and the rate at which the background worker moves them, over
   `--drain-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pluralign.embed.models import MINILM_ID  # noqa: E402
from pluralign.store import SCHEMA_VERSION, Store, StoredPreference  # noqa: E402
from pluralign.store.feedback_log import FeedbackLog  # noqa: E402
from pluralign.store.ingest import Ingestor  # noqa: E402
from service.auth import KeyRing  # noqa: E402

DIM = 384
TENANT = "default"
HISTORY_MB = 512  # the service's default history cache (PLURALIGN_HISTORY_CACHE_MB)


def pct(values, q) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def summary(values) -> str:
    return f"p50 {pct(values, 50):.2f} ms, p90 {pct(values, 90):.2f} ms, p99 {pct(values, 99):.2f} ms, max {pct(values, 100):.2f} ms (n={len(values)})"


def user_name(u: int) -> str:
    return f"user{u:05d}"


def prefill(data: Path, rows: int, users: int, chunk: int = 100_000) -> None:
    store = Store(str(data / "lancedb"), MINILM_ID, DIM)
    if store.stats()["preferences"] >= rows:
        shutil.rmtree(data / "feedback-log", ignore_errors=True)  # a previous run's backlog: start from none
        store.compact(every_table=True)  # the previous run's small appends: merged and indexed, as after prefill
        print(f"reusing {store.stats()['preferences']} stored rows in {data} (compacted)")
        return
    rng = np.random.default_rng(0)
    schema = store.schemas["preferences"]
    now = time.time()
    began = time.perf_counter()
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        index = np.arange(start, start + n)
        vectors = []
        for _ in range(3):
            v = rng.standard_normal((n, DIM), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            vectors.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), DIM))
        columns = {
            "tenant": [TENANT] * n,
            "user_id": [user_name(u) for u in rng.integers(0, users, n)],
            "pref_id": [uuid.uuid4().hex for _ in range(n)],
            "prompt": [f"Which is better, option {i}?" for i in index],
            "chosen": [f"The first option, number {i}." for i in index],
            "rejected": [f"The second option, number {i}." for i in index],
            "tie": [False] * n, "margin": [None] * n, "kind": ["comparison"] * n, "source": ["benchmark"] * n,
            "created_at": (now + index * 1e-6).tolist(), "received_at": (now + index * 1e-6).tolist(), "attributes": ["{}"] * n,
            "prompt_vec": vectors[0], "chosen_vec": vectors[1], "rejected_vec": vectors[2],
            "schema_version": [SCHEMA_VERSION] * n,
        }
        for field in schema:  # a column added to the schema since, which this prefill does not know: null
            columns.setdefault(field.name, pa.nulls(n, field.type))
        store.preferences.add(pa.table(columns, schema=schema))
    store.compact(every_table=True)
    print(f"prefilled {rows} rows over {users} users in {time.perf_counter() - began:.0f}s (random unit vectors)")


def retrieval(data: Path, users: int, searches: int) -> None:
    from pluralign.embed.encoders import SentenceEncoder

    store = Store(str(data / "lancedb"), MINILM_ID, DIM, history_bytes=HISTORY_MB << 20)
    rng = np.random.default_rng(1)
    chosen = [user_name(u) for u in rng.choice(users, searches, replace=False)]
    cold, loads, warm = [], [], []
    for user in chosen:  # cold: a LanceDB vector search; the user's whole history loads behind it
        q = rng.standard_normal(DIM, dtype=np.float32)
        t = time.perf_counter()
        hits = store.search(TENANT, user, q, 4)
        cold.append(time.perf_counter() - t)
        assert hits and all(h.user_id == user for h, _ in hits)
        t = time.perf_counter()
        store.wait_warm()  # not overlapped with the next search, so each is timed alone
        loads.append(time.perf_counter() - t)
    for user in chosen:
        q = rng.standard_normal(DIM, dtype=np.float32)
        t = time.perf_counter()
        hits = store.search(TENANT, user, q, 4)
        warm.append(time.perf_counter() - t)
        assert hits and all(h.user_id == user for h, _ in hits)
    print(f"retrieval, cold (first read of the user: one LanceDB vector search): {summary(cold)}")
    print(f"  loading the user's whole history behind it (background, one LanceDB query): {summary(loads)}")
    print(f"retrieval, warm (cached history): {summary(warm)}")
    cache = store.histories
    print(f"  history cache: {len(cache)} users in {cache.nbytes / 2**20:.0f} MiB ({cache.nbytes / max(len(cache), 1) / 1024:.0f} KiB per user), "
          f"{cache.hits} hits, {cache.misses} misses")

    encoder = SentenceEncoder()
    encoder.encode(["warm-up"])
    folder = Path(tempfile.mkdtemp(prefix="pluralign-log-"))
    ingest = Ingestor(FeedbackLog(folder), store, encoder)
    times, flushes = [], []
    with ingest.paused():  # the reader alone moves the pending row, as a chat right after a 201 does
        for i, user in enumerate(chosen[:50]):
            row = StoredPreference(tenant=TENANT, user_id=user, pref_id=uuid.uuid4().hex, prompt=f"Fresh question {i}?",
                                   chosen=f"Fresh answer {i}.", rejected=f"Stale answer {i}.", kind="comparison", created_at=time.time())
            ingest.submit([row])
            q = rng.standard_normal(DIM, dtype=np.float32)
            t = time.perf_counter()
            ingest.flush_user(TENANT, user)
            flushes.append(time.perf_counter() - t)
            hits = store.search(TENANT, user, q, 200)
            times.append(time.perf_counter() - t)
            assert row.pref_id in {h.pref_id for h, _ in hits}
    ingest.close()
    shutil.rmtree(folder)
    print(f"retrieval right after a feedback (1 pending row: embed 3 texts + 1 LanceDB append + search): {summary(times)}")
    print(f"  of which moving the pending row: {summary(flushes)}")


def start_server(data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PLURALIGN_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1",
           "PLURALIGN_TENANT_REQUESTS_PER_SECOND": "0",  # a throughput figure: the per-tenant rate limit would cap it
           # and so would the bound on one tenant's rows waiting to be embedded (50,000: the load is one tenant's, and
           # the worker embeds ~40-70 rows/s here, so a faster acknowledger meets it within a run: 503s, not 201s)
           "PLURALIGN_TENANT_FEEDBACK_BACKLOG_ROWS": str(10**9)}
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(data / "serve.log", "wb"))
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError((data / "serve.log").read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    raise RuntimeError((data / "serve.log").read_text())


async def one_connection(port: int, key: str, users: int, seed: int, warm_until: float, stop_at: float, out: dict) -> None:
    rng = np.random.default_rng(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    i = 0
    while (now := time.perf_counter()) < stop_at:
        i += 1
        body = json.dumps({"type": "comparison", "user": user_name(int(rng.integers(0, users))),
                           "prompt": f"Which is better, option {seed}-{i}?", "chosen": f"The first option, number {seed}-{i}.",
                           "rejected": f"The second option, number {seed}-{i}."}).encode()
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if now >= warm_until:
            out["ok" if status == 201 else "errors"].append(time.perf_counter() - now)
    writer.close()


async def load(port: int, key: str, users: int, connections: int, seconds: float) -> dict:
    out: dict = {"ok": [], "errors": []}
    start = time.perf_counter()
    warm_until, stop_at = start + 2.0, start + 2.0 + seconds
    await asyncio.gather(*(one_connection(port, key, users, c, warm_until, stop_at, out) for c in range(connections)))
    return out


def gauge(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def ingestion(data: Path, port: int, users: int, connections: int, seconds: float, drain_seconds: float) -> None:
    key = KeyRing(data / "api_keys.json").issue(TENANT, name="benchmark")
    proc = start_server(data, port)
    url = f"http://127.0.0.1:{port}"
    try:
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        out = asyncio.run(load(port, key, users, connections, seconds))
        used = resource.getrusage(resource.RUSAGE_SELF)
        client_cpu = (used.ru_utime + used.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
        ok = out["ok"]
        print(f"feedback over HTTP, {connections} keep-alive connections, {seconds:.0f} s: {len(ok) / seconds:.0f} acknowledged/s, "
              f"{summary(ok)}, errors {len(out['errors'])}")
        print(f"  the load client itself used {client_cpu / (seconds + 2) * 100:.0f}% of one core")
        pending, moved = gauge(url, "pluralign_feedback_pending_rows"), gauge(url, "pluralign_feedback_moved_rows")
        print(f"  at the end of the load: {pending:.0f} rows pending in the log, {moved:.0f} embedded and moved ({moved / (seconds + 2):.0f}/s under load)")
        t0, m0 = time.perf_counter(), moved
        while time.perf_counter() - t0 < drain_seconds and pending > 0:
            time.sleep(2)
            pending = gauge(url, "pluralign_feedback_pending_rows")
        moved = gauge(url, "pluralign_feedback_moved_rows")
        rate = (moved - m0) / (time.perf_counter() - t0)
        left = f"{pending:.0f} rows still pending, about {pending / max(rate, 1e-9):.0f} s more to catch up" if pending else "caught up"
        print(f"  backlog after the load: moved {rate:.0f} rows/s (idle HTTP) over {time.perf_counter() - t0:.0f} s; {left}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured load, after a 2 s warm-up")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--searches", type=int, default=300, help="distinct users searched (cold, then warm)")
    parser.add_argument("--drain-seconds", type=float, default=30.0, help="how long to watch the backlog after the load")
    parser.add_argument("--data", default=None, help="data folder to prefill once and reuse (default: a fresh temp folder)")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--no-retrieval", action="store_true", help="only the ingestion figures")
    args = parser.parse_args()
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="pluralign-ingest-")) / "data"
    data.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    prefill(data, args.rows, args.users)
    if not args.no_retrieval:
        retrieval(data, args.users, args.searches)
    ingestion(data, args.port, args.users, args.connections, args.seconds, args.drain_seconds)
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if not args.data:
        shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
