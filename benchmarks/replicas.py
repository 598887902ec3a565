"""Two `pluralign serve` replicas on one store (loopback, tiny generator, MiniLM), side by side with
8 writers: the delay until a feedback acknowledged by one replica is used by the other, acknowledged
feedback lost across a `kill -9` of a replica, and duplicate adapter jobs.

    OMP_NUM_THREADS=1 python benchmarks/replicas.py --probes 30 --rate 1 --sync-ms 500 --adapter-every 10

Writers: 8 threads, 4 on each replica, each posting `--rate` comparisons/s for 32 users (the
delay measured is only bounded while the replicas' embedding keeps up with the writes: past that
it is the backlog's drain time, which grows with the backlog).
Probes, meanwhile: a comparison for a fresh user through one replica, then that user's preferences
polled on the other (the read a chat's retrieval does) until the row is there. Halfway, replica 0
is killed (SIGKILL) and restarted on its folder; writers on it reconnect once it is back. At the
end every acknowledged row is looked for in the shared tables, and adapter job records of both
replicas are counted per user (jobs stay queued: `job_workers=0`, so a second one for a user
would be a duplicate).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_replicas import Pair, comparison  # noqa: E402
from tests.service.tiny import save_tiny_generator, train_tiny_pal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=1.0, help="feedbacks/s per writer")
    parser.add_argument("--probe-timeout", type=float, default=120.0)
    parser.add_argument("--sync-ms", type=int, default=500)
    parser.add_argument("--adapter-every", type=int, default=10)
    parser.add_argument("--store-uri", help="default: a folder beside the replicas' folders")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="pluralign-replicas-"))
    from pluralign.embed.encoders import SentenceEncoder

    generator = save_tiny_generator(root / "tiny")
    pal = train_tiny_pal(root / "pal", SentenceEncoder())
    import tests.e2e.test_replicas as spec

    spec.SYNC_MS = args.sync_ms
    pair = Pair(root, generator, pal, PLURALIGN_ADAPTER_EVERY=str(args.adapter_every), PLURALIGN_STORE_SYNC_MS=str(args.sync_ms))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    down = threading.Event()  # replica 0 is down
    counts = {"writes": 0, "refused": 0}

    def writer(index: int, w: int) -> None:
        rng = random.Random(w)
        i = 0
        while not stop.is_set():
            if index == 0 and down.is_set():
                time.sleep(0.1)
                continue
            try:
                with pair.client(index) as c:
                    while not stop.is_set() and not (index == 0 and down.is_set()):
                        time.sleep(rng.expovariate(args.rate))
                        user = f"writer{rng.randrange(32)}"
                        r = c.post("/v1/feedback", json=comparison(user, 10_000 * w + i))
                        i += 1
                        with lock:
                            counts["writes"] += 1
                            if r.status_code == 201:
                                acked.extend((user, p) for p in r.json()["stored"])
            except httpx.TransportError:
                with lock:
                    counts["refused"] += 1
                time.sleep(0.1)

    try:
        threads = [threading.Thread(target=writer, args=(w % 2, w), daemon=True) for w in range(8)]
        began = time.monotonic()
        for t in threads:
            t.start()
        delays = []
        for n in range(args.probes):
            if n == args.probes // 2:  # kill -9 of replica 0, and back on its folder
                down.set()
                pair.procs[0].kill9()
                killed_at = time.monotonic()
                pair.procs[0] = pair.start(0)
                down.clear()
                print(f"replica 0 killed and back in {time.monotonic() - killed_at:.1f} s", flush=True)
            src = n % 2
            user = f"probe{n}"
            with pair.client(src) as a, pair.client(1 - src) as b:
                b.get(f"/v1/users/{user}/preferences")  # the other replica has read the (empty) user once
                stored = a.post("/v1/feedback", json=comparison(user, n)).json()["stored"]
                t0 = time.monotonic()
                while [p["pref_id"] for p in b.get(f"/v1/users/{user}/preferences").json()["data"]] != stored:
                    if time.monotonic() - t0 > args.probe_timeout:
                        break
                    time.sleep(0.01)
                delays.append(time.monotonic() - t0)
                print(f"probe {n}: replica {src} -> {1 - src}: {delays[-1] * 1000:.0f} ms", flush=True)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        elapsed = time.monotonic() - began
        # every acknowledged row in the shared tables
        wanted: dict[str, set[str]] = {}
        for user, pref in acked:
            wanted.setdefault(user, set()).add(pref)
        lost, deadline = None, time.monotonic() + 300
        with pair.client(1) as b:
            while time.monotonic() < deadline:
                lost = 0
                for user, prefs in wanted.items():
                    have, offset = set(), 0
                    while True:
                        page = b.get(f"/v1/users/{user}/preferences", params={"limit": 500, "offset": offset}).json()
                        have |= {p["pref_id"] for p in page["data"]}
                        if page["next_offset"] is None:
                            break
                        offset = page["next_offset"]
                    lost += len(prefs - have)
                if lost == 0:
                    break
                time.sleep(1.0)
        jobs: dict[str, int] = {}
        for index in range(2):
            for path in (root / f"r{index}" / "jobs").glob("*.job.json"):
                job = msgspec.json.decode(path.read_bytes())
                if job["kind"] == "adapter":
                    jobs[job["params"]["user"]] = jobs.get(job["params"]["user"], 0) + 1

    finally:
        pair.stop()
    ms = lambda q: f"{np.percentile(delays, q) * 1000:.0f}"  # noqa: E731
    print(f"load average at end: {os.getloadavg()}")
    print(f"writes: {counts['writes']} in {elapsed:.0f} s at {8 * args.rate:g}/s offered ({counts['writes'] / elapsed:.0f}/s), {len(acked)} acknowledged rows, "
          f"{counts['refused']} connection failures while replica 0 was down")
    print(f"cross-replica delay over {len(delays)} probes: p50 {ms(50)} ms, p90 {ms(90)} ms, p99 {ms(99)} ms, max {max(delays) * 1000:.0f} ms (sync {args.sync_ms} ms)")
    print(f"acknowledged rows lost: {lost} of {len(acked)}")
    print(f"adapter jobs: {sum(jobs.values())} for {len(jobs)} users; duplicates: {sum(n - 1 for n in jobs.values())}")


if __name__ == "__main__":
    main()
