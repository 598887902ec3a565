"""What a refit's write of the users row costs: `put_user` (the group-committed upsert refits of releases before
session 44 wrote through) against `put_user_if` (one merge conditional on the row the refit read, lost44), each write one user's
row on a table of `--users` rows, alone on the store (medians of `--calls` writes, ms).

    python benchmarks/refit_write.py --users 2000 --calls 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pluralign.store import Store, UserRecord  # noqa: E402


def row(i: int, at: float) -> UserRecord:
    return UserRecord(tenant="t", user_id=f"u{i}", created_at=0.0, updated_at=at, pal_logits=[0.1] * 8, pal_version="v",
                      n_preferences=20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder, "hash", 8)
        for i in range(args.users):
            store.put_user(row(i, 1.0))
        store.compact(every_table=True)
        took: dict[str, list[float]] = {"put_user": [], "put_user_if": []}
        for n in range(args.calls):  # the two in turn: both meet the same number of versions
            for name in took:
                i = n % args.users
                read = store.get_user("t", f"u{i}")
                start = time.perf_counter()
                if name == "put_user":
                    store.put_user(row(i, time.time()))
                else:
                    assert store.put_user_if(row(i, time.time()), read)
                took[name].append((time.perf_counter() - start) * 1000)
        out = {name: round(statistics.median(ms), 3) for name, ms in took.items()}
        print(json.dumps({"users": args.users, "calls": args.calls, "median_ms": out}))


if __name__ == "__main__":
    main()
