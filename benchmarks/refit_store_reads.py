"""What a refit's store reads cost, alone on the store and with replicas (`sync_seconds`): the user's cached history
as a refit read it before (`Store.history`), on the newest version (`history(latest=True)`, reviewad43) and the
check after the write (`still_holds`, dupdel42). Alone, both added reads are none; with replicas each is one look for
the newest version and one count by the user_id BITMAP index. `--s3`: with replicas on a bucket of an S3-compatible
server on loopback (moto) as well, where the look for the newest version lists the table's versions: measured at
once after a compaction and again after `--commits` more commits of feedback (what piles up between compactions).

    python benchmarks/refit_store_reads.py --users 2000 --rows 20 --calls 200
    python benchmarks/refit_store_reads.py --users 200 --rows 20 --calls 30 --s3 --commits 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import Store, StoredPreference  # noqa: E402


def fill(store: Store, users: int, rows: int, dim: int) -> None:
    prefs = [StoredPreference(tenant="t", user_id=f"u{u}", pref_id=f"u{u}-{n}", prompt=f"q{n}", chosen=f"c{n}", rejected=f"r{n}", kind="comparison",
                              created_at=float(n)) for u in range(users) for n in range(rows)]
    vec = np.random.default_rng(0).standard_normal((len(prefs), dim)).astype(np.float32)
    for i in range(0, len(prefs), 5000):
        store.add_preferences(prefs[i:i + 5000], vec[i:i + 5000], vec[i:i + 5000], vec[i:i + 5000])
    store.compact(every_table=True)


def feedback_commits(store: Store, commits: int, dim: int) -> None:
    """`commits` commits of one row each (another user's feedback), as land between two compactions."""
    vec = np.zeros((1, dim), dtype=np.float32)
    for n in range(commits):
        row = StoredPreference(tenant="t", user_id="busy", pref_id=f"busy-{n}", prompt="q", chosen="c", rejected="r", kind="comparison",
                               created_at=float(n))
        store.add_preferences([row], vec, vec, vec)


def timed_ms(call, calls: int) -> float:
    took = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        took.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(took), 3)


def reads(store: Store, users: int, calls: int) -> dict:
    user = lambda i: f"u{i % users}"  # noqa: E731
    for i in range(calls):
        store.history("t", user(i))  # cached, as a refit finds it after the user's feedback
    return {
        "history": timed_ms(lambda i: store.history("t", user(i)), calls),
        "history_latest": timed_ms(lambda i: store.history("t", user(i), latest=True), calls),
        "still_holds": timed_ms(lambda i: store.still_holds("t", user(i), f"{user(i)}-0"), calls),
    }


def measure(sync: float | None, users: int, rows: int, calls: int, dim: int = 16, s3=None, commits: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        uri, options = (folder, None) if s3 is None else (s3.uri(f"reads-{sync}"), s3.options)
        store = Store(uri, "enc", dim, sync_seconds=sync, storage_options=options)
        fill(store, users, rows, dim)
        found = {"store": "s3 (moto)" if s3 else "folder", "sync_seconds": sync, "users": users, "rows_each": rows,
                 "median_ms": reads(store, users, calls)}
        if commits:
            feedback_commits(store, commits, dim)
            found[f"median_ms_after_{commits}_commits"] = reads(store, users, calls)
        return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--s3", action="store_true", help="with replicas on moto's S3 as well")
    p.add_argument("--commits", type=int, default=0, help="measure again after this many one-row commits")
    args = p.parse_args()
    for sync in (None, 1.0):
        print(json.dumps(measure(sync, args.users, args.rows, args.calls, commits=args.commits)), flush=True)
    if args.s3:
        from tests.s3 import S3Server

        with S3Server("pluralign-refit-reads") as s3:
            print(json.dumps(measure(1.0, args.users, args.rows, args.calls, s3=s3, commits=args.commits)), flush=True)


if __name__ == "__main__":
    main()
