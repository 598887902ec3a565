"""What a large append to the feedback log costs the small ones behind it: `FeedbackLog.append` latency of
one-row records (a feedback) while another thread appends `--big`-row records (an import) back to back,
and the large append's own time, on a real log in a temporary folder (write + fdatasync per round).

    OMP_NUM_THREADS=1 python benchmarks/log_append.py                      # 1,000 and 8,000-row imports
    OMP_NUM_THREADS=1 python benchmarks/log_append.py --against 4d30da5    # and that tree's, in turn

For each size and tree, `--seconds` (in blocks, each a child process) of: one thread appending big records in a loop, another appending one-row
records in a loop (a feedback's own thread), both through `append` (the import route's 8,000 rows go
through `append_async`, the same round). Prints p50/p90/p99 ms of the small appends and p50 of the big ones.
`--against REV` runs the same in child processes on `git archive REV`'s pluralign/ (a temporary folder), in
`--blocks` blocks taken in turn with this tree's (the shared disk's fsync times drift by the minute), and
prints their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # for benchmarks.trees: after the code a child is given (its PYTHONPATH, BENCHMARK_TREE)

from benchmarks.trees import child_result, unpack_revision  # noqa: E402


def rows(n: int, user: str, start: int):
    from pluralign.store.tables import StoredPreference

    return [StoredPreference(tenant="acme", user_id=user, pref_id=f"p-{user}-{start + i}", prompt=f"Which reply to question {start + i} is kinder?",
                             chosen=f"The gentle reply number {start + i}, said with care.", rejected=f"The curt reply {start + i}.",
                             kind="comparison", created_at=1.7e9 + i, source="import", attributes={"segment": "s1"})
            for i in range(n)]


def measure(big: int, seconds: float) -> dict:
    from pluralign.store.feedback_log import FeedbackLog

    with tempfile.TemporaryDirectory(prefix="log-append-") as folder:
        log = FeedbackLog(Path(folder) / "log")
        for i in range(20):  # warm-up
            log.append(rows(1, "warm", i))
        stop = threading.Event()
        big_ms: list[float] = []

        def importer() -> None:
            n = 0
            while not stop.is_set():
                batch = rows(big, "importer", n)
                n += big
                started = time.perf_counter()
                entry = log.append(batch)
                big_ms.append((time.perf_counter() - started) * 1000)
                log.done([entry])  # moved: its segment can go

        thread = threading.Thread(target=importer)
        thread.start()
        small_ms: list[float] = []
        deadline, n = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            batch = rows(1, f"u{n % 50}", n)
            n += 1
            started = time.perf_counter()
            entry = log.append(batch)
            small_ms.append((time.perf_counter() - started) * 1000)
            log.done([entry])
        stop.set()
        thread.join()
        log.close()
    return {"small_ms": small_ms, "big_ms": big_ms}


def summary(runs: list[dict]) -> dict:
    small = [t for r in runs for t in r["small_ms"]]
    big_ms = [t for r in runs for t in r["big_ms"]]
    return {"small_p50": float(np.percentile(small, 50)), "small_p90": float(np.percentile(small, 90)),
            "small_p99": float(np.percentile(small, 99)), "small_n": len(small), "big_p50": float(np.percentile(big_ms, 50)),
            "big_n": len(big_ms)}


def run_child(tree: Path, big: int, seconds: float) -> dict:
    return child_result(__file__, tree, ["--child", str(big), "--seconds", str(seconds)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,8000", help="rows of each big append, one run per size")
    p.add_argument("--seconds", type=float, default=16.0, help="per size and tree, in --blocks blocks")
    p.add_argument("--blocks", type=int, default=4, help="blocks per tree, run in turn with the other tree's")
    p.add_argument("--against", metavar="REV")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        sys.path.insert(0, os.environ.get("BENCHMARK_TREE", str(ROOT)))
        print(json.dumps(measure(args.child, args.seconds)))
        return
    print(f"ms: small (1-row) append p50 / p99 while big appends run back to back, and the big one's p50; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="log-append-tree-") as folder:
        if args.against:
            unpack_revision(args.against, folder, "pluralign")
        for size in (int(s) for s in args.sizes.split(",")):
            trees = [("this tree", ROOT)] + ([(args.against, Path(folder))] if args.against else [])
            samples: dict[str, list[dict]] = {name: [] for name, _ in trees}
            for _ in range(args.blocks):  # in turn, so the disk's and the machine's load fall on both alike
                for name, tree in trees:
                    samples[name].append(run_child(tree, size, args.seconds / args.blocks))
            runs = [(name, summary(samples[name])) for name, _ in trees]
            for name, r in runs:
                print(f"big {size:5} rows  {name:10} small p50 {r['small_p50']:6.2f}  p90 {r['small_p90']:6.2f}  p99 {r['small_p99']:6.2f} "
                      f"(n={r['small_n']})  big p50 {r['big_p50']:7.2f} (n={r['big_n']})", flush=True)
            if args.against:
                (_, ours), (_, theirs) = runs
                print(f"{'':17}ratio {args.against}/this tree: small p50 {theirs['small_p50'] / ours['small_p50']:.2f}x, "
                      f"p90 {theirs['small_p90'] / ours['small_p90']:.2f}x, p99 {theirs['small_p99'] / ours['small_p99']:.2f}x, "
                      f"big p50 {theirs['big_p50'] / ours['big_p50']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
