"""Why light reads slow down under a chat flood: a user's profile read (`service.users.services.profile`:
several LanceDB calls) timed with generation idle, with generation in a thread of the same process,
and with the same generation in another process (the same CPU load, no shared GIL). Blocks of
reads alternate between the three, so each sees the same machine.

    python benchmarks/read_contention.py --generator <model folder> --pal-dir <PAL folder> [--blocks 4 --reads 100]

Prints p50 / p90 / p99 per condition (ms). No HTTP: the figures are the read itself.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MESSAGES = [{"role": "user", "content": "Tell me everything about the history of tea. " * 40}]


def generate_until(stop, folder: str) -> None:
    """Generate 4 candidates of 64 tokens for a long prompt, again and again, until `stop` is set."""
    import torch

    from pluralign.policy.generator import Generator, Sampling

    torch.set_num_threads(1)
    generator = Generator.from_folder(folder)
    while not stop.is_set():
        generator.generate(MESSAGES, n=4, sampling=Sampling(max_tokens=64))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, help="a saved causal-LM folder")
    p.add_argument("--pal-dir", required=True)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--reads", type=int, default=100, help="reads per condition per block")
    args = p.parse_args()

    import torch

    from pluralign.embed.encoders import SentenceEncoder
    from pluralign.policy.generator import Generator
    from pluralign.store import StoredPreference
    from service.runtime import Runtime
    from service.settings import Settings
    from service.users import services

    torch.set_num_threads(1)
    settings = Settings(data_dir=tempfile.mkdtemp(prefix="pluralign-contention-"), generator=args.generator, pal_dir=args.pal_dir)
    rt = Runtime.build(settings, generator=Generator.from_folder(args.generator), encoder=SentenceEncoder())
    rt.ingest.submit([StoredPreference(tenant="b", user_id="bea", pref_id="p1", prompt="Tea?", chosen="Yes.", rejected="No.",
                                       kind="comparison", created_at=time.time())])
    rt.wait_for_background()
    services.profile(rt, "b", "bea")

    def reads(n: int) -> list[float]:
        out = []
        for _ in range(n):
            start = time.perf_counter()
            services.profile(rt, "b", "bea")
            out.append((time.perf_counter() - start) * 1000)
        return out

    spawn = mp.get_context("spawn")
    results: dict[str, list[float]] = {"idle": [], "generation in a thread": [], "generation in another process": []}
    for _ in range(args.blocks):
        results["idle"] += reads(args.reads)
        stop = threading.Event()
        thread = threading.Thread(target=generate_until, args=(stop, args.generator))
        thread.start()
        time.sleep(2)  # loaded and generating
        results["generation in a thread"] += reads(args.reads)
        stop.set()
        thread.join()
        pstop = spawn.Event()
        process = spawn.Process(target=generate_until, args=(pstop, args.generator))
        process.start()
        time.sleep(6)  # started, loaded and generating
        results["generation in another process"] += reads(args.reads)
        pstop.set()
        process.join()
    for name, values in results.items():
        ordered = sorted(values)
        p90, p99 = (ordered[min(len(ordered) - 1, int(f * len(ordered)))] for f in (0.9, 0.99))
        print(f"{name:<30} p50 {statistics.median(ordered):6.1f}  p90 {p90:6.1f}  p99 {p99:6.1f} ms  (n={len(ordered)})", flush=True)


if __name__ == "__main__":
    main()
