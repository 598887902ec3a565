"""Time per `Store.add_preferences` of one new row on a store of 50,000 rows, the cost of its check of
the row's `pref_id` against the user's stored ones (session ids39).

    python benchmarks/add_known_ids.py --rows 50000 --adds 200

Two layouts: every row one user's (the worst case for a per-user lookup) and the rows spread over 1,000
users. Each add is one new row of a user who holds rows (sequential, one commit each, compacted every
`--compact-every` adds as the service does: each commit since is a small file outside the index that a read opens); then the same adds again, which store nothing (identical rows: idempotent). Each with the users'
histories not cached (the check reads the table) and cached (the service's case: it reads them to refit).
Prints p50/p99 ms. Run from the repository root with PYTHONPATH=. (else the installed pluralign is timed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np

from pluralign.store import Store, StoredPreference

DIM = 64


def rows_for(rng, n, users, start=0):
    now = 1.7e9
    rows = [
        StoredPreference(tenant="bench", user_id=f"user{int(u):05d}", pref_id=uuid.uuid4().hex, prompt=f"prompt {start + i}",
                         chosen=f"chosen {start + i}", rejected=f"rejected {start + i}", kind="comparison", created_at=now + i)
        for i, u in enumerate(rng.integers(0, users, n))
    ]
    vec = lambda: rng.standard_normal((n, DIM), dtype=np.float32)
    return rows, vec(), vec(), vec()


def timed(store, batches, compact_every: int) -> list[float]:
    took = []
    for i, one in enumerate(batches, start=1):
        t = time.perf_counter()
        store.add_preferences(*one)
        took.append(time.perf_counter() - t)
        if i % compact_every == 0:  # as the service does (`compact_every`, 50): untimed
            store.compact()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--adds", type=int, default=200)
    parser.add_argument("--compact-every", type=int, default=50, help="adds between compactions (the service's `compact_every`)")
    args = parser.parse_args()
    ms = lambda xs, q: float(np.percentile(np.asarray(xs) * 1000, q))
    for users in (1, 1000):
        rng = np.random.default_rng(0)
        store = Store(tempfile.mkdtemp(prefix="pluralign-bench-") + "/s", "bench-encoder", DIM)
        store.add_preferences(*rows_for(rng, args.rows, users))
        store.compact()
        for cached in (False, True):
            batches = [rows_for(rng, 1, users, args.rows + i) for i in range(args.adds)]
            if cached:  # as in the service, whose reads (a refit after feedback) load the user's history
                for user in {r.user_id for one in batches for r in one[0]}:
                    store.history("bench", user)
            new = timed(store, batches, args.compact_every)
            again = timed(store, batches, args.compact_every)
            held = store.preferences.count_rows()
            store.compact()
            print(f"{args.rows} rows over {users} user(s), histories {'cached' if cached else 'not cached'}: add of a new row "
                  f"p50 {ms(new, 50):.2f} ms p99 {ms(new, 99):.2f} ms; the same add again p50 {ms(again, 50):.2f} ms "
                  f"p99 {ms(again, 99):.2f} ms; rows held {held}")


if __name__ == "__main__":
    main()
