"""A DELETE's and an audit's wait on the feedback worker while it is busy beside CPU hogs: before and after session 48,
in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/worker_inversion.py --hogs 4 --samples 8

The worker (nice 19) moves a backlog of tenant a's imports into a real LanceDB folder; its encoder is a CPU-bound
stand-in (sha256 rounds, `--ms-per-text` of CPU a text), so its batches take as long on 1.5% of a core as a real
one's. `--hogs` busy processes at nice 0 keep the cores full, as request threads and other processes do. Measured
from a thread at nice 0, one sample at a time:

- delete: a DELETE's steps on the log for a user of tenant b with one pending row (`held`, then `forget_user`);
- flush:  an audit's `flush("c")` of tenant c's one pending row (an export's `flush()` waits the same way).

"before" is `pluralign/store/ingest.py` as of `--before` (git), loaded beside the working tree's; `--rounds` pairs,
alternating which goes first. Prints one JSON line per version and round: p50/p90/max milliseconds of each, the
rows of tenant a the worker moved a second meanwhile, and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pluralign.store import Store, StoredPreference  # noqa: E402
from pluralign.store.feedback_log import FeedbackLog  # noqa: E402

DIM = 32


class BurningEncoder:
    """Unit vectors from a text's hash, each after `ms` milliseconds of CPU (sha256 rounds): a stand-in for MiniLM."""

    encoder_id = "burn"
    dim = DIM

    def __init__(self, ms: float):
        start, rounds = time.process_time(), 0
        while time.process_time() - start < 0.05:
            hashlib.sha256(b"x" * 64).digest()
            rounds += 1
        self.rounds = max(1, int(rounds * ms / 50))

    def encode(self, texts):
        out = np.zeros((len(texts), DIM), np.float32)
        for n, text in enumerate(texts):
            digest = text.encode()
            for _ in range(self.rounds):
                digest = hashlib.sha256(digest).digest()
            out[n] = np.frombuffer(hashlib.sha256(text.encode()).digest()[: DIM], np.uint8)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def rows(tenant: str, user: str, tag: str, n: int) -> list[StoredPreference]:
    now = time.time()
    return [StoredPreference(tenant=tenant, user_id=user, pref_id=f"{tag}-{j}", prompt=f"question {tag} {j}",
                             chosen=f"good answer {tag} {j}", rejected=f"bad answer {tag} {j}", kind="comparison",
                             created_at=now) for j in range(n)]


def hog() -> None:
    while True:
        pass


def ingest_module(before: str):
    """`pluralign.store.ingest` as of the git revision `before`, as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{before}:pluralign/store/ingest.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("pluralign.store.ingest_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{before}:pluralign/store/ingest.py", "exec"), module.__dict__)  # noqa: S102
    return module


def measure(module, args, folder: Path) -> dict:
    store = Store(str(folder / "db"), "burn", DIM)
    ingest = module.Ingestor(FeedbackLog(folder / "log"), store, BurningEncoder(args.ms_per_text), batch=args.batch)
    for i in range(args.backlog):  # tenant a's imports: the worker's backlog
        ingest.submit(rows("a", f"importer{i % 4}", f"a{i}", args.rows))
    time.sleep(1.0)  # the worker's first batch under way
    deletes, flushes = [], []
    began, waiting = time.monotonic(), ingest.pending_rows("a")
    for i in range(args.samples):
        ingest.submit(rows("b", f"leaving{i}", f"b{i}", 1))
        start = time.perf_counter()
        with ingest.held("b", f"leaving{i}"):
            ingest.forget_user("b", f"leaving{i}")
        deletes.append(time.perf_counter() - start)
        ingest.submit(rows("c", f"audited{i}", f"c{i}", 1))
        start = time.perf_counter()
        ingest.flush("c", deadline=time.monotonic() + args.deadline)
        flushes.append(time.perf_counter() - start)
        time.sleep(args.gap)
    pending = ingest.pending_rows("a")
    rate = (waiting - pending) / (time.monotonic() - began)
    ingest.close(timeout=60.0)  # its batch under way at the stopper's priority (`Ingestor.stop`)
    ms = lambda values, q: round(float(np.percentile(np.array(values) * 1000, q)), 1)  # noqa: E731
    return {"delete_ms": {"p50": ms(deletes, 50), "p90": ms(deletes, 90), "max": ms(deletes, 100)},
            "flush_ms": {"p50": ms(flushes, 50), "p90": ms(flushes, 90), "max": ms(flushes, 100)},
            "worker_rows_per_s": round(rate, 1), "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="ac455a83", help="git revision of the ingest module before the change")
    parser.add_argument("--hogs", type=int, default=4, help="busy processes at nice 0")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--backlog", type=int, default=400, help="tenant a's records waiting")
    parser.add_argument("--rows", type=int, default=4, help="rows per record of tenant a")
    parser.add_argument("--batch", type=int, default=16, help="records per worker batch")
    parser.add_argument("--ms-per-text", type=float, default=1.0, help="CPU milliseconds the encoder spends per text")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between samples")
    parser.add_argument("--deadline", type=float, default=120.0, help="a flush's deadline, seconds")
    parser.add_argument("--rounds", type=int, default=1, help="before/after pairs, alternating which goes first")
    args = parser.parse_args()
    from pluralign.store import ingest as after

    versions = {"before": ingest_module(args.before), "after": after}
    hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs)]
    for p in hogs:
        p.start()
    try:
        for round_ in range(args.rounds):
            for name in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                with tempfile.TemporaryDirectory(prefix="pluralign-inversion-") as folder:
                    result = measure(versions[name], args, Path(folder))
                print(json.dumps({"benchmark": "worker_inversion", "version": name, "round": round_, "hogs": args.hogs,
                                  "cores": os.cpu_count(), "samples": args.samples, **result}), flush=True)
    finally:
        for p in hogs:
            p.kill()


if __name__ == "__main__":
    main()
