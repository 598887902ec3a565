"""What a stop's keep of the waiting background refits costs (`service.users.services.keep_dropped_refits`): the
users whose refits wait (moved during a feedback backlog, replayed at the start, dropped by the stop) are checked
still stored before `refits-dropped.json` names them. `--users` users of 7 tenants, 3 rows each, in a compacted
LanceDB table, plus a tenth as many deleted users (nothing stored) waiting; a count per user (before) against
`Store.users_with_preferences`, one read per USERS_PER_READ users (now).

    OMP_NUM_THREADS=1 python -m benchmarks.stop_waiting_refits --users 1000 5000

Prints one line per size: seconds for each, and whether both keep the same users.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from pluralign.store.tables import Store, StoredPreference


def store_of(folder: str, users: int) -> Store:
    store = Store(folder, "bench-encoder", 8)
    rows = [StoredPreference(tenant=f"t{i % 7}", user_id=f"u{i}", pref_id=f"p{i}-{j}", prompt="q", chosen="a", rejected="b",
                             kind="comparison", created_at=float(i)) for i in range(users) for j in range(3)]
    vectors = np.random.default_rng(0).random((len(rows), 8), dtype=np.float32)  # (N, d)
    for start in range(0, len(rows), 3000):
        part = slice(start, start + 3000)
        store.add_preferences(rows[part], vectors[part], vectors[part], vectors[part])
    store.compact()
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    for users in args.users:
        with tempfile.TemporaryDirectory() as folder:
            store = store_of(folder, users)
            waiting = sorted({(f"t{i % 7}", f"u{i}") for i in range(users)} | {("t0", f"gone{i}") for i in range(users // 10)})
            began = time.perf_counter()
            counted = [key for key in waiting if store.count_preferences(*key)]
            per_user = time.perf_counter() - began
            began = time.perf_counter()
            held = store.users_with_preferences(waiting)
            read = time.perf_counter() - began
            print(f"{len(waiting):>6} waiting ({users} stored): a count each {per_user:6.2f} s, "
                  f"users_with_preferences {read:5.2f} s, same users: {counted == [k for k in waiting if k in held]}")


if __name__ == "__main__":
    main()
