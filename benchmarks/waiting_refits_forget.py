"""What a DELETE's look into the waiting refits' file costs (`service.waiting_refits.WaitingRefits.forget`, under the
refit lock every tenant's refit queueing takes): a file naming `--users` users of 50 tenants, appended 64 a line as
moved batches append them; a DELETE of a user it does not name (a read and a bytes search), then of one it names (a
decode and the fsynced rewrite).

    OMP_NUM_THREADS=1 python -m benchmarks.waiting_refits_forget --users 1000 100000

Prints one line per size: milliseconds of each (best of `--repeat`), and the file's size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from service.waiting_refits import WaitingRefits


def filled(folder: Path, users: int) -> tuple[WaitingRefits, list[tuple[str, str]]]:
    kept = WaitingRefits(folder / "refits-waiting.jsonl")
    kept.drop()
    keys = [(f"tenant{i % 50}", f"user-{i:07d}") for i in range(users)]
    for start in range(0, users, 64):
        kept.add(keys[start:start + 64])
    return kept, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for users in args.users:
            absent, named, size = [], [], 0
            for _ in range(args.repeat):
                kept, keys = filled(Path(tmp), users)
                size = kept.path.stat().st_size
                start = time.perf_counter()
                kept.forget({("tenant1", "nobody")})
                absent.append(time.perf_counter() - start)
                start = time.perf_counter()
                kept.forget({keys[users // 2]})
                named.append(time.perf_counter() - start)
                assert keys[users // 2] not in kept.read() and keys[0] in kept.read()
            print(f"{users} users ({size} bytes): forget of a user not named {min(absent) * 1000:.1f} ms, "
                  f"of one named {min(named) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
