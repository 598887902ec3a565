"""What applying a deletion costs per population snapshot: a DELETE answered here names the user by
key (`Forget.key`: the file's bytes are searched for the name first, and only a file that holds it is
decoded), while another replica's record names them by hash (`Forget.of`: every row's user is
decoded and hashed). Both rewrite a file that holds the user, as `service.admin.services._drop_rows`
does; the snapshot is the service's own format (one JSON preference per line, users `tenant/user`).

    python -m benchmarks.deletion_sweep                  # 50,000 rows over 1,000 users, 5 repeats
    python -m benchmarks.deletion_sweep --rows 200000 --json

Prints the median seconds per snapshot for: a user the snapshot does not hold (by key, by hash) and
a user it holds (by key, by hash), and the hash/key ratios. With `--records N`, also what a replica's
chat pays to look its user up in N deletion records (`Store.deleted_after`), median ms of 20, before
and after a compaction gives the table its index on `user_hash`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from pluralign.data.io import write_jsonl
from pluralign.data.record import Preference
from pluralign.store import Store
from pluralign.store.deletions import Forget, deletion_schema, new_deletion, user_hash
from service.admin.services import _drop_rows


def snapshot(path: Path, rows: int, users: int) -> None:
    records = [Preference(user_id=f"acme/user-{i % users}", prompt=f"Question {i} about something ordinary?",
                          chosen=f"A chosen answer number {i}, a sentence or two long.", rejected=f"A rejected answer {i}.")
               for i in range(rows)]
    write_jsonl(records, path)


def timed(path: Path, original: bytes, forget: Forget, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        path.write_bytes(original)
        started = time.perf_counter()
        _drop_rows(path, forget)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def lookups(folder: Path, records: int) -> dict[str, float]:
    """Median ms of `Store.deleted_after` over `records` deletion records, unindexed then indexed."""
    import pyarrow as pa

    store = Store(str(folder / "db"), "bench", 8)
    rows = [{**msgspec.to_builtins(new_deletion("acme", f"user-{i}", float(i), 0)), "schema_version": 1} for i in range(records)]
    store.deletions.add(pa.Table.from_pylist(rows, schema=deletion_schema()))
    probe = user_hash("acme", f"user-{records // 2}")

    def median_ms() -> float:
        store.deleted_after(probe, 0.0)
        times = []
        for _ in range(20):
            started = time.perf_counter()
            assert store.deleted_after(probe, 0.0)
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 2)

    before = median_ms()
    store._new_deletions = records  # as if they were recorded one by one: the next compaction indexes them
    store.compact(every_table=True)
    return {"lookup_ms_unindexed": before, "lookup_ms_indexed": median_ms()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--records", type=int, default=0, help="also time user lookups in this many deletion records")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "comparisons-1.jsonl"
        snapshot(path, args.rows, args.users)
        original = path.read_bytes()
        cases = {
            "absent_by_key": Forget.key("acme/nobody"),
            "absent_by_hash": Forget.of([new_deletion("acme", "nobody", 0.0, 0)]),
            "present_by_key": Forget.key("acme/user-7"),
            "present_by_hash": Forget.of([new_deletion("acme", "user-7", 0.0, 0)]),
        }
        out = {name: timed(path, original, forget, args.repeats) for name, forget in cases.items()}
        extra = lookups(Path(folder), args.records) if args.records else {}
    out = {"rows": args.rows, "users": args.users, "megabytes": round(len(original) / 1e6, 1),
           **{k: round(v, 4) for k, v in out.items()},
           "absent_ratio": round(out["absent_by_hash"] / out["absent_by_key"], 1),
           "present_ratio": round(out["present_by_hash"] / out["present_by_key"], 2), **extra}
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
