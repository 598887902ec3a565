"""What a look at the dead letters costs with thousands of them (`pluralign.store.dead_letter.DeadLetters`): a page of
the admin list (`page`, all tenants and one tenant's), the /metrics count (`rows`), a user's count for their profile
(`rows_for`) and whether a user has any (`holds`: the export's 404 check). `--letters` letters of one row each, of 10
tenants, written as the worker writes them; each look timed with the folder listed again (as every look did in
releases before session 50: each letter's file stat'ed) and settled (the folder unchanged since it was listed: `RACY_S`).

    OMP_NUM_THREADS=1 python -m benchmarks.dead_letters                   # 1,000 and 5,000 letters
    OMP_NUM_THREADS=1 python -m benchmarks.dead_letters --letters 20000

Prints one JSON line per size: best of `--repeat` ms of each look, listed again and settled.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from pluralign.store import dead_letter
from pluralign.store.dead_letter import DeadLetters
from pluralign.store.tables import StoredPreference


def letters(folder: Path, n: int) -> DeadLetters:
    writer = DeadLetters(folder)
    for i in range(n):
        rows = [StoredPreference(tenant=f"t{i % 10}", user_id=f"u{i}", pref_id=f"p{i}", prompt="a question?",
                                 chosen="an answer", rejected="another", kind="comparison", created_at=float("nan"),
                                 received_at=1.0)]
        writer.put(rows, "RowRefused: `created_at` of row 0 (pref_id 'p') must be a finite time, got nan", 3, 1_000.0 + i)
    old = time.time() - 10 * dead_letter.RACY_S  # as a folder last changed a while ago
    os.utime(folder, (old, old))
    return DeadLetters(folder)  # a fresh reader: the service's after a start


def best_ms(look, repeat: int, again: DeadLetters | None) -> float:
    times = []
    for _ in range(repeat):
        if again is not None:
            again._listed = None  # listed again, as every look was in releases before session 50
        began = time.perf_counter()
        look()
        times.append(time.perf_counter() - began)
    return round(min(times) * 1e3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for n in args.letters:
        with tempfile.TemporaryDirectory() as tmp:
            dead = letters(Path(tmp) / "dead-letter", n)
            began = time.perf_counter()
            dead.rows()
            first = (time.perf_counter() - began) * 1e3
            looks = {"page": lambda d=dead: d.page(limit=100), "page_tenant": lambda d=dead: d.page("t3", limit=100),
                     "rows": dead.rows, "rows_for": lambda d=dead: d.rows_for("t3", "u3"),
                     "holds": lambda d=dead: d.holds("t3", "u3")}
            result = {"letters": n, "first_look_ms": round(first, 1)}
            for name, look in looks.items():
                result[f"{name}_listed_ms"] = best_ms(look, args.repeat, dead)
                result[f"{name}_settled_ms"] = best_ms(look, args.repeat, None)
            print(json.dumps(result))


if __name__ == "__main__":
    main()
