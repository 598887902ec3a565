"""The tables in a local folder vs on an S3-compatible server (moto on loopback), side by side.

    OMP_NUM_THREADS=1 python benchmarks/store_location.py --users 50 --rows-per-user 40 --feedback 400 --searches 100

For each location, in one run: (1) feedback ingestion as the service's ingestor does it, batches of
`--batch` rows with precomputed 384-d vectors (the embedding is the same cost on either), one
committed Lance version per batch, compacting every `--compact-every` commits; (2) single-feedback
commits (one version each); (3) per-user retrieval cold (nothing of the user cached: one LanceDB
vector search filtered by the BITMAP indexes, and the user's history load behind it) and warm
(the cached history, numpy). moto answers from memory on loopback: a real bucket adds its own
latency to every request (tens of ms per GET/PUT), which the cold figures multiply.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pluralign.store import Store, StoredPreference  # noqa: E402
from tests.s3 import S3Server  # noqa: E402

DIM = 384


def rows(rng, n, users, tenant="bench"):
    now = time.time()
    owners = rng.integers(0, users, n)
    out = [
        StoredPreference(
            tenant=tenant, user_id=f"user{u:04d}", pref_id=uuid.uuid4().hex, prompt=f"prompt {i}", chosen=f"chosen {i}",
            rejected=f"rejected {i}", kind="comparison", created_at=now + i * 1e-6,
        )
        for i, u in enumerate(owners)
    ]
    vec = lambda: rng.standard_normal((n, DIM), dtype=np.float32)  # noqa: E731
    return out, vec(), vec(), vec()


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def run(label: str, uri: str, options: dict, args) -> dict:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    store = Store(uri, "bench-encoder", DIM, storage_options=options)
    opened = time.perf_counter() - start
    store.add_preferences(*rows(rng, args.users * args.rows_per_user, args.users))  # the users' past rows
    store.compact()

    # (1) ingestion in the ingestor's batches
    began, commits = time.perf_counter(), 0
    for start_row in range(0, args.feedback, args.batch):
        store.add_preferences(*rows(rng, min(args.batch, args.feedback - start_row), args.users))
        commits += 1
        if commits % args.compact_every == 0:
            store.compact()
    ingest = args.feedback / (time.perf_counter() - began)

    # (2) one commit per feedback
    single = []
    for _ in range(args.singles):
        one = rows(rng, 1, args.users)
        t = time.perf_counter()
        store.add_preferences(*one)
        single.append(time.perf_counter() - t)
    store.compact()

    # (3) retrieval: cold (cache dropped before each search) and warm (history cached)
    cold, warm = [], []
    for _ in range(args.searches):
        user = f"user{rng.integers(0, args.users):04d}"
        q = rng.standard_normal(DIM, dtype=np.float32)
        store.histories.invalidate([("bench", user)])
        t = time.perf_counter()
        hits = store.search("bench", user, q, 4)
        cold.append(time.perf_counter() - t)
        assert hits and all(h.user_id == user for h, _ in hits)
        store.wait_warm()
        t = time.perf_counter()
        store.search("bench", user, q, 4)
        warm.append(time.perf_counter() - t)
    load = []
    for _ in range(min(args.searches, 50)):
        user = f"user{rng.integers(0, args.users):04d}"
        store.histories.invalidate([("bench", user)])
        t = time.perf_counter()
        store.history("bench", user)
        load.append(time.perf_counter() - t)
    result = {
        "open_s": round(opened, 3), "ingest_rows_per_s": round(ingest), "single_commit_p50_ms": round(pct(single, 50), 1),
        "single_commit_p99_ms": round(pct(single, 99), 1), "cold_search_p50_ms": round(pct(cold, 50), 1),
        "cold_search_p99_ms": round(pct(cold, 99), 1), "history_load_p50_ms": round(pct(load, 50), 1),
        "warm_search_p50_ms": round(pct(warm, 50), 3), "warm_search_p99_ms": round(pct(warm, 99), 3),
    }
    print(label, result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rows-per-user", type=int, default=40)
    parser.add_argument("--feedback", type=int, default=400, help="rows ingested in the timed part")
    parser.add_argument("--batch", type=int, default=64, help="rows per commit (the service's ingest_batch)")
    parser.add_argument("--compact-every", type=int, default=50)
    parser.add_argument("--singles", type=int, default=50, help="single-row commits timed")
    parser.add_argument("--searches", type=int, default=100)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    folder = tempfile.mkdtemp(prefix="pluralign-bench-")
    results = {"folder": run("folder", folder + "/lancedb", {}, args)}
    with S3Server("pluralign-bench") as s3:
        results["s3 (moto, loopback)"] = run("s3 (moto, loopback)", s3.uri("lancedb"), s3.options, args)
    print(f"load average at end: {os.getloadavg()}")
    print("| figure | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for key in results["folder"]:
        print(f"| {key} | " + " | ".join(str(r[key]) for r in results.values()) + " |")


if __name__ == "__main__":
    main()
