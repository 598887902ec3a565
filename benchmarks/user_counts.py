"""The staleness check of a users row when the user's history is not cached (`service.users.services.user_weights`):
two store counts (`Store.count_comparisons`, `Store.count_paired_ties`) before session 50, one (`Store.count_paired`,
comparisons and ties of two answers together) since; `read` is the one query tried and dropped: the rows' `tie` column,
read to have both counts. A real LanceDB store in a temporary folder, a tenant of 20 users with `--rows` rows each (a tenth of them ties),
compacted and indexed as the service's maintenance leaves it; the median of `--repeat` checks of one user, each way,
alternating.

    OMP_NUM_THREADS=1 python -m benchmarks.user_counts --rows 10 1000 10000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow.compute as pc

from pluralign.store import Store, StoredPreference

DIM = 8


def filled(path: str, rows: int, users: int = 20) -> Store:
    store = Store(path, "enc", DIM)
    for u in range(users):
        batch = [StoredPreference(tenant="t", user_id=f"u{u}", pref_id=f"u{u}-{i}", prompt=f"question {i}", chosen=f"good {i}",
                                  rejected=f"bad {i}", kind="comparison", created_at=float(i), tie=i % 10 == 0) for i in range(rows)]
        vectors = np.random.default_rng(u).standard_normal((3, rows, DIM)).astype(np.float32)
        store.add_preferences(batch, *vectors)
    store.compact(every_table=True)
    return store


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10, 1000, 10000], help="rows of each user")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as folder:
            store = filled(folder, rows)
            two, one, read = [], [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                before = store.count_comparisons("t", "u7"), store.count_paired_ties("t", "u7")
                two.append(time.perf_counter() - start)
                start = time.perf_counter()
                after = store.count_paired("t", "u7")
                one.append(time.perf_counter() - start)
                start = time.perf_counter()
                tie = store.preferences.search().where("tenant = 't' AND user_id = 'u7' AND rejected != ''").select(["tie"]) \
                    .limit(None).to_arrow().column("tie")
                both = int(pc.sum(pc.equal(tie, False)).as_py()), int(pc.sum(pc.equal(tie, True)).as_py())
                read.append(time.perf_counter() - start)
                assert sum(before) == after and both == before, (before, after, both)
            print(f"rows {rows:6d}: two counts {statistics.median(two) * 1e3:.2f} ms, one count {statistics.median(one) * 1e3:.2f} ms, "
                  f"one read of `tie` {statistics.median(read) * 1e3:.2f} ms (comparisons, ties {before})")


if __name__ == "__main__":
    main()
