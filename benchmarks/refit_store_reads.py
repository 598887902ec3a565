"""What a refit's store reads cost, alone on the store and with replicas (`sync_seconds`): the user's cached history
as a refit read it before (`Store.history`), on the newest version (`history(latest=True)`, reviewad43) and the
check after the write (`still_holds`, dupdel42). Alone, both added reads are none; with replicas each is one look for
the newest version and one count by the user_id BITMAP index.

    python benchmarks/refit_store_reads.py --users 2000 --rows 20 --calls 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import numpy as np

from pluralign.store import Store, StoredPreference


def fill(store: Store, users: int, rows: int, dim: int) -> None:
    prefs = [StoredPreference(tenant="t", user_id=f"u{u}", pref_id=f"u{u}-{n}", prompt=f"q{n}", chosen=f"c{n}", rejected=f"r{n}", kind="comparison",
                              created_at=float(n)) for u in range(users) for n in range(rows)]
    vec = np.random.default_rng(0).standard_normal((len(prefs), dim)).astype(np.float32)
    for i in range(0, len(prefs), 5000):
        store.add_preferences(prefs[i:i + 5000], vec[i:i + 5000], vec[i:i + 5000], vec[i:i + 5000])
    store.compact(every_table=True)


def timed_ms(call, calls: int) -> float:
    took = []
    for i in range(calls):
        start = time.perf_counter()
        call(i)
        took.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(took), 3)


def measure(sync: float | None, users: int, rows: int, calls: int, dim: int = 16) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "enc", dim, sync_seconds=sync)
        fill(store, users, rows, dim)
        user = lambda i: f"u{i % users}"  # noqa: E731
        for i in range(calls):
            store.history("t", user(i))  # cached, as a refit finds it after the user's feedback
        return {"sync_seconds": sync, "users": users, "rows_each": rows, "median_ms": {
            "history": timed_ms(lambda i: store.history("t", user(i)), calls),
            "history_latest": timed_ms(lambda i: store.history("t", user(i), latest=True), calls),
            "still_holds": timed_ms(lambda i: store.still_holds("t", user(i), f"{user(i)}-0"), calls),
        }}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    for sync in (None, 1.0):
        print(json.dumps(measure(sync, args.users, args.rows, args.calls)))

if __name__ == "__main__":
    main()
