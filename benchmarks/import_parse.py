"""What reading an import's body costs in Python: the time `POST /v1/users/{id}/import` spends in
`_read_import` (its worker thread, holding the interpreter lock that every tenant's requests and the
event loop need) for one 1 MB body, the service's limit (`max_body_bytes`).

    OMP_NUM_THREADS=1 python benchmarks/import_parse.py                      # this tree
    OMP_NUM_THREADS=1 python benchmarks/import_parse.py --against main       # and main's, side by side
    python benchmarks/import_parse.py --profile plain                        # cProfile of one plain body

Bodies, each of distinct comparisons up to `--bytes` (JSON lines):
  plain           TRL's standard explicit form, as `benchmarks/tenant_stall.py` imports (strings)
  conversational  TRL's conversational explicit form: message lists for prompt, chosen and rejected
  implicit        TRL's conversational implicit form: whole conversations sharing their prompt
  trl-extras      the standard form with TRL's 8 extra columns (UltraFeedback's: ids, scores, ratings, models),
                  which the service keeps with each row and bounds (`extra_column_problem`, since fidelity37)
Each is read `--repeats` times after one untimed read; prints ms per body (median, min) for the
service's `_read_import` (settings' defaults) and the library's `read_preference_lines` alone.
`--against REV` reads the same bodies with `git archive REV` (pluralign/ and service/, unpacked in a
temporary folder) in a child process, one body after the other in turn with this tree's, and prints
both and their ratio.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # for benchmarks.trees: after the code a child is given (its PYTHONPATH, BENCHMARK_TREE)

from benchmarks.trees import unpack_revision  # noqa: E402

KINDS = ("plain", "conversational", "implicit", "trl-extras")


def body(kind: str, limit: int) -> tuple[bytes, int]:
    """A body of `kind` up to `limit` bytes, and its rows."""
    lines, size = [], 0
    while True:
        n = len(lines)
        question, kind_answer, curt = f"Which reply to question {n} is kinder?", f"The gentle reply {n}.", f"The curt reply {n}."
        if kind == "plain":
            row = {"prompt": question, "chosen": kind_answer, "rejected": curt}
        elif kind == "conversational":
            row = {"prompt": [{"role": "user", "content": question}], "chosen": [{"role": "assistant", "content": kind_answer}],
                   "rejected": [{"role": "assistant", "content": curt}]}
        elif kind == "trl-extras":
            row = {"prompt": question, "chosen": kind_answer, "rejected": curt, "id": n, "prompt_id": f"{n:064x}",
                   "score_chosen": 8.5, "score_rejected": 3.0, "chosen_rating": 5, "rejected_rating": 2,
                   "chosen_model": "gpt-4-0613", "rejected_model": "llama-2-70b-chat"}
        else:
            asked = {"role": "user", "content": question}
            row = {"chosen": [asked, {"role": "assistant", "content": kind_answer}], "rejected": [asked, {"role": "assistant", "content": curt}]}
        line = json.dumps(row)
        if size + len(line) + 1 > limit:
            return "\n".join(lines).encode(), len(lines)
        lines.append(line)
        size += len(line) + 1


def readers():
    """(name, function of a body) for what is timed, from whichever tree is first on sys.path."""
    from pluralign.data.io import read_preference_lines
    from service.settings import Settings
    from service.users.controllers import _read_import

    rt = SimpleNamespace(settings=Settings())
    return [("_read_import", lambda b: _read_import(rt, "imp1", b)),
            ("read_preference_lines", lambda b: read_preference_lines(b.split(b"\n"), default_user="imp1"))]  # as the service splits


def time_one(read, data: bytes) -> float:
    started = time.perf_counter()
    read(data)
    return (time.perf_counter() - started) * 1000


def child(root: str) -> None:
    """Serve timing requests on stdin/stdout with the tree at `root`: one JSON line in (kind, reader, bytes), ms out."""
    sys.path.insert(0, root)
    funcs = dict(readers())
    import pluralign

    assert Path(pluralign.__file__).resolve().is_relative_to(Path(root).resolve()), pluralign.__file__
    bodies: dict[tuple[str, int], bytes] = {}
    print("ready", flush=True)
    for request in sys.stdin:
        kind, name, limit = json.loads(request)
        data = bodies.setdefault((kind, limit), body(kind, limit)[0])
        print(json.dumps(time_one(funcs[name], data)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bytes", type=int, default=1_000_000, help="each body's size (the service's max_body_bytes)")
    p.add_argument("--repeats", type=int, default=9, help="timed reads of each body, per tree")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"bodies to read, of {', '.join(KINDS)}")
    p.add_argument("--against", metavar="REV", help="also time the tree of git revision REV (e.g. main), in turn with this one")
    p.add_argument("--profile", choices=KINDS, help="print cProfile's top functions reading one body of this kind, and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)
    sys.path.insert(0, str(ROOT))
    funcs = readers()
    if args.profile:
        data, rows = body(args.profile, args.bytes)
        funcs[0][1](data)
        profiler = cProfile.Profile()
        profiler.runcall(funcs[0][1], data)
        print(f"{args.profile}: {rows} rows, {len(data):,} bytes")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    with tempfile.TemporaryDirectory(prefix="import-parse-") as folder:
        other = start_other(args.against, folder) if args.against else None
        try:
            report(args, funcs, other)
        finally:
            if other:
                other.stdin.close()
                other.wait()


def start_other(rev: str, folder: str) -> subprocess.Popen:
    """A child process timing reads with `git archive rev`'s pluralign/ and service/, unpacked in `folder`."""
    unpack_revision(rev, folder, "pluralign", "service")
    other = subprocess.Popen([sys.executable, __file__, "--child", folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": folder})
    assert other.stdout.readline().strip() == "ready"
    return other


def report(args: argparse.Namespace, funcs, other: subprocess.Popen | None) -> None:
    def theirs(kind: str, name: str) -> float:
        other.stdin.write(json.dumps([kind, name, args.bytes]) + "\n")
        other.stdin.flush()
        return json.loads(other.stdout.readline())

    print(f"ms per body, median (min) of {args.repeats}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    for kind in args.kinds.split(","):
        data, rows = body(kind, args.bytes)
        for name, read in funcs:
            ours, old = [], []
            time_one(read, data)
            if other:
                theirs(kind, name)
            for _ in range(args.repeats):  # in turn, so the machine's load falls on both alike
                ours.append(time_one(read, data))
                if other:
                    old.append(theirs(kind, name))
            line = f"{kind:15} {rows:,} rows, {len(data):,} B  {name:22}  this tree {statistics.median(ours):7.1f} ({min(ours):.1f})"
            if other:
                line += (f"  {args.against} {statistics.median(old):7.1f} ({min(old):.1f})"
                         f"  {statistics.median(old) / statistics.median(ours):.1f}x")
            print(line, flush=True)

if __name__ == "__main__":
    main()
