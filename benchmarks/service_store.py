"""Storage-layer figures for the service: feedback writes and per-user retrieval at scale.

    python benchmarks/service_store.py --rows 100000 --users 1000 --writes 2000 --searches 300 --writers 8

Fills a preferences table with `rows` random rows spread over `users` users (bulk load, not
timed), then times (1) single-feedback writes (one committed LanceDB version each, like POST
/v1/feedback), sequential and with a few concurrent writers sharing a group commit, and (2) one
user's nearest-history search, on the same data with and without the BITMAP index on user_id.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid

import numpy as np

from pluralign.store import Store, StoredPreference

DIM = 384


def rows_for(rng, n, users, tenant="bench"):
    now = time.time()
    owners = rng.integers(0, users, n)
    rows = [
        StoredPreference(
            tenant=tenant, user_id=f"user{u:05d}", pref_id=uuid.uuid4().hex, prompt=f"prompt {i}",
            chosen=f"chosen answer {i}", rejected=f"rejected answer {i}", kind="comparison", created_at=now + i * 1e-6,
        )
        for i, u in enumerate(owners)
    ]
    vec = lambda: rng.standard_normal((n, DIM), dtype=np.float32)
    return rows, vec(), vec(), vec()


def fill(store, rng, total, users, chunk=50_000):
    for start in range(0, total, chunk):
        store.add_preferences(*rows_for(rng, min(chunk, total - start), users))
    store.compact()


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers in the group-commit run")
    parser.add_argument("--compact-every", type=int, default=500, help="commits between compactions (the service default)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    folder = tempfile.mkdtemp(prefix="pluralign-bench-")
    store = Store(folder + "/indexed", "bench-encoder", DIM)
    start = time.perf_counter()
    fill(store, rng, args.rows, args.users)
    print(f"filled {args.rows} rows over {args.users} users in {time.perf_counter() - start:.1f}s")

    # (1) single-feedback writes, each its own committed version, compacting as the service does
    latencies = []
    began = time.perf_counter()
    for i in range(args.writes):
        one = rows_for(rng, 1, args.users)
        t = time.perf_counter()
        store.add_preferences(*one)
        latencies.append(time.perf_counter() - t)
        if (i + 1) % args.compact_every == 0:
            store.compact()
    elapsed = time.perf_counter() - began
    print(f"writes, 1 writer: {args.writes / elapsed:.0f}/s sustained (incl. compaction), p50 {pct(latencies, 50):.2f} ms, p99 {pct(latencies, 99):.2f} ms")
    store.compact()

    # the same with concurrent writers: group commit shares one LanceDB commit among them
    latencies, lock = [], threading.Lock()
    commits_before = store._appends["preferences"].commits
    prepared = [rows_for(rng, 1, args.users) for _ in range(args.writes)]

    def writer(part):
        for one in part:
            t = time.perf_counter()
            store.add_preferences(*one)
            with lock:
                latencies.append(time.perf_counter() - t)
            if store.writes_since_compaction >= args.compact_every and compacting.acquire(blocking=False):
                try:
                    store.compact()
                finally:
                    compacting.release()

    compacting = threading.Lock()
    threads = [threading.Thread(target=writer, args=(prepared[i :: args.writers],)) for i in range(args.writers)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    commits = store._appends["preferences"].commits - commits_before
    print(
        f"writes, {args.writers} writers: {args.writes / elapsed:.0f}/s sustained (incl. compaction), "
        f"p50 {pct(latencies, 50):.2f} ms, p99 {pct(latencies, 99):.2f} ms, {args.writes / commits:.1f} rows per commit"
    )
    store.compact()

    # (2) per-user retrieval, with the BITMAP index vs a copy of the same table without it
    plain = Store(folder + "/plain", "bench-encoder", DIM)
    table = store.preferences.to_arrow()
    plain.preferences.add(table)  # straight into LanceDB: the Store would index it
    plain.preferences.optimize()
    assert not list(plain.preferences.list_indices()), "the baseline table must have no index"
    results = {}
    for label, s in (("bitmap", store), ("no index", plain)):
        times = []
        for _ in range(args.searches):
            user = f"user{rng.integers(0, args.users):05d}"
            q = rng.standard_normal(DIM, dtype=np.float32)
            t = time.perf_counter()
            hits = s.search("bench", user, q, 4)
            times.append(time.perf_counter() - t)
            assert all(h.user_id == user for h, _ in hits)
        results[label] = times
        print(f"search {label}: p50 {pct(times, 50):.2f} ms, p99 {pct(times, 99):.2f} ms")
    ratio = np.percentile(results["no index"], 50) / np.percentile(results["bitmap"], 50)
    print(f"search p50 ratio no-index / bitmap: {ratio:.1f}x")


if __name__ == "__main__":
    main()
