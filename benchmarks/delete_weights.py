"""What a DELETE pays in a PAL checkpoint's per-user weights (the promoted population model's, and each PAL
job artifact's): `forget_training_users(folder, Forget.key(...))` on a checkpoint's user_weights.json of N
training users, for a user who is not among them (most DELETEs: users who came after the last training).

    OMP_NUM_THREADS=1 python benchmarks/delete_weights.py                      # 1,000 and 100,000 users
    OMP_NUM_THREADS=1 python benchmarks/delete_weights.py --against 4d30da5    # and that tree's, in turn

Prints the median ms of `--repeats`; `--against REV` times `git archive REV`'s pluralign/ in a child process
and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # for benchmarks.trees: after the code a child is given (its PYTHONPATH, BENCHMARK_TREE)

from benchmarks.trees import child_result, unpack_revision  # noqa: E402


def measure(users: int, repeats: int) -> float:
    import torch

    from pluralign.reward.pal_checkpoint import forget_weight_rows
    from pluralign.reward.user_weights import UserWeights
    from pluralign.store.deletions import Forget

    with tempfile.TemporaryDirectory(prefix="delete-weights-") as folder:
        path = Path(folder) / "user_weights.json"
        UserWeights.from_logits([f"acme/user-{i}" for i in range(users)], torch.randn(users, 4)).save(path)
        forget, times = Forget.key("acme/nobody"), []
        for _ in range(repeats):
            started = time.perf_counter()
            forget_weight_rows(path, forget, k=4)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run_child(tree: Path, users: int, repeats: int) -> float:
    return child_result(__file__, tree, ["--child", str(users), "--repeats", str(repeats)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000,100000", help="training users in the checkpoint")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--against", metavar="REV")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        sys.path.insert(0, os.environ.get("BENCHMARK_TREE", str(ROOT)))
        print(json.dumps(measure(args.child, args.repeats)))
        return
    print(f"forget_weight_rows ms, median of {args.repeats}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="delete-weights-tree-") as folder:
        if args.against:
            unpack_revision(args.against, folder, "pluralign")
        for users in (int(s) for s in args.sizes.split(",")):
            ours = run_child(ROOT, users, args.repeats)
            line = f"{users:7,} users  this tree {ours:8.2f}"
            if args.against:
                theirs = run_child(Path(folder), users, args.repeats)
                line += f"  {args.against} {theirs:8.2f}  {theirs / ours:.1f}x"
            print(line, flush=True)


if __name__ == "__main__":
    main()
