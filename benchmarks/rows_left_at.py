"""What a DELETE finished from the journal, stopped between its store's step and its journal's note of it, spends in the
store's turn asking the kept versions of the preferences table when the user's rows left (`Store.received_before_left_at`,
review of jobs53): one user of `--rows` rows, `--versions` other users' 5-row appends before the DELETE's step and as
many after (kept unpurged, as with replicas before `_drop_when_due`).

    OMP_NUM_THREADS=1 python -m benchmarks.rows_left_at --rows 10000 --versions 100 500
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.stored_before import rows
from pluralign.store import Store


def measure(n: int, versions: int, dim: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "bench", dim)
        for start in range(0, n, 5000):
            store.add_preferences(*rows("u", min(5000, n - start), dim, start))
        for i in range(versions):
            store.add_preferences(*rows(f"o{i}", 5, dim, 10_000_000 + i * 5))
        store.preferences.delete("user_id = 'u'")  # the DELETE's store step, its purge not run
        gone = time.time()
        for i in range(versions):
            store.add_preferences(*rows(f"p{i}", 5, dim, 20_000_000 + i * 5))
        began = time.perf_counter()
        left = store.received_before_left_at("t", "u", gone + 1e6)
        look = time.perf_counter() - began
        table = store.db.open_table("preferences")
        began = time.perf_counter()
        kept = len(table.list_versions())
        listed = time.perf_counter() - began
    return (f"rows={n} versions kept={kept}: the whole look {look * 1000:.0f} ms (list_versions {listed * 1000:.0f} ms); "
            f"its answer {left - gone:+.3f} s from the step's return")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--versions", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    for v in args.versions:
        print(measure(args.rows, v, args.dim), flush=True)


if __name__ == "__main__":
    main()
