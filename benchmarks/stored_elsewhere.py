"""What the feedback mover's check for requests another replica already stored costs, under the move lock
(`pluralign.store.ingest.split_stored`): `--entries` acknowledged requests of `--rows` rows each, every
other one found stored (a retry that reached two replicas), split into stored and kept; against the list
scan it replaced (`[e for e in entries if e not in stored]`, one scan of `stored` per entry).

    OMP_NUM_THREADS=1 python -m benchmarks.stored_elsewhere                        # 64 and 2,048 one-row requests
    OMP_NUM_THREADS=1 python -m benchmarks.stored_elsewhere --entries 2048 --rows 1

A batch holds at most the setting `ingest_batch` requests (default 64) and 2,048 rows
(`INGEST_BATCH_ROWS`). Prints one line per size: best of `--repeat` ms, old and new.
"""

from __future__ import annotations

import argparse
import time

from pluralign.store import StoredPreference
from pluralign.store.feedback_log import Entry
from pluralign.store.ingest import split_stored, stored_key


def requests(n: int, rows: int) -> list[Entry]:
    return [Entry(seq=i, segment=0, rows=[StoredPreference(tenant="t", user_id=f"u{i}", pref_id=f"p{i}-{j}", prompt="q",
                                                          chosen="a", rejected="b", kind="comparison", created_at=0.0)
                                         for j in range(rows)]) for i in range(n)]


def best_ms(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return min(times) * 1e3


def old_split(entries: list[Entry], held: set[tuple[str, str, str]]) -> list[Entry]:
    stored = [e for e in entries if any(stored_key(r) in held for r in e.rows)]
    sum(1 for e in stored if not all(stored_key(r) in held for r in e.rows))
    return [e for e in entries if e not in stored]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="*", default=[64, 2048], help="requests in the batch (each size in turn)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in args.entries:
        entries = requests(n, args.rows)
        held = {stored_key(r) for e in entries[::2] for r in e.rows}
        assert old_split(entries, held) == split_stored(entries, held)[1]
        old = best_ms(lambda entries=entries, held=held: old_split(entries, held), args.repeat)
        new = best_ms(lambda entries=entries, held=held: split_stored(entries, held), args.repeat)
        print(f"{n} requests x {args.rows} rows, half stored: list scan {old:.2f} ms, split_stored {new:.2f} ms")


if __name__ == "__main__":
    main()
