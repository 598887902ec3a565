"""What checking a cached history against the table costs with replicas (`Store._cached`, at most every
`store_sync_ms` per user, and at each refit's `latest` read): the count of the user's rows it compared before review
44, the table's version (all a check reads while the table is at the version the history matched), and the user's
rows' ids and arrival times read and compared (what a check after any commit to the table read in releases before review rp44),
and the check itself (`Store._cached`) after another user's row was appended (the table moved on by an append, as
other users' feedback moves it every moment under load: a count). A local store with 20 other
users of 50 rows and one user of `--rows` rows each.

    OMP_NUM_THREADS=1 python -m benchmarks.history_check --rows 100 5000

Prints one line per size: milliseconds of each (mean of `--repeat`, after one warm-up; those after an append each
time, their median).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from pluralign.store import Store, StoredPreference
from pluralign.store.tables import _same_rows, owner_filter

DIM = 8


def rows(user: str, n: int, start: int = 0) -> tuple[list[StoredPreference], np.ndarray, np.ndarray, np.ndarray]:
    prefs = [StoredPreference(tenant="t", user_id=user, pref_id=f"{user}-{start + i}", prompt=f"q{start + i}", chosen="yes",
                              rejected="no", kind="comparison", created_at=time.time()) for i in range(n)]
    vecs = np.random.default_rng(start).standard_normal((n, DIM)).astype(np.float32)
    return prefs, vecs, vecs, vecs


def mean_ms(call, repeat: int) -> float:
    call()
    began = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - began) / repeat * 1000


def measure(n: int, repeat: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "bench", DIM, sync_seconds=0)
        for other in range(20):
            store.add_preferences(*rows(f"o{other}", 50))
        for start in range(0, n, 500):
            store.add_preferences(*rows("u", min(500, n - start), start))
        history = store.history("t", "u")
        count = mean_ms(lambda: store.preferences.count_rows(owner_filter("t", "u")), repeat)
        unchanged = mean_ms(lambda: store._cached("t", "u", any_age=True), repeat)
        compared = mean_ms(lambda: _same_rows(history, store._row_keys("t", "u")), repeat)
        moved = after_appends(store, history, repeat)
    return (f"rows={n}: count (before) {count:.2f} ms; table unchanged {unchanged:.2f} ms; "
            f"ids and arrival times read and compared {compared:.2f} ms; after another user's append each time (median): "
            f"count {moved[0]:.2f} ms, ids and arrival times {moved[1]:.2f} ms, the check {moved[2]:.2f} ms")


def after_appends(store: Store, history, repeat: int) -> tuple[float, ...]:
    """Median ms (a loaded machine's preemptions skew a mean) of, after one row of another user was appended each time
    (not timed): the count of user u's rows, their ids and arrival times read and compared, and `_cached`'s check of
    u (the count)."""
    spent: list[list[float]] = [[], [], []]
    for i in range(repeat + 1):
        store.add_preferences(*rows("appender", 1, start=i))
        for j, call in enumerate((lambda: store.preferences.count_rows(owner_filter("t", "u")),
                                  lambda: _same_rows(history, store._row_keys("t", "u")),
                                  lambda: store._cached("t", "u", any_age=True))):
            began = time.perf_counter()
            call()
            if i:  # the first: a warm-up
                spent[j].append((time.perf_counter() - began) * 1000)
    return tuple(statistics.median(times) for times in spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 5000])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    for n in args.rows:
        print(measure(n, args.repeat))


if __name__ == "__main__":
    main()
