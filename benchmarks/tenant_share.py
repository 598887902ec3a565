"""Does the request threads' per-tenant share (`service.scheduler.tenant_share`) cost a tenant that is alone
(or alone but for an idle tenant, or one that reads now and then) throughput or latency? Servers of several
checkouts side by side on one machine, driven in alternating rounds of the same run (the machine is shared
and noisy: compare within a round pair, not across runs).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/tenant_share.py --code /tmp/old --code . --rounds 4
    python benchmarks/tenant_share.py --code /tmp/old --code /tmp/cap --code . --clients 10 --seconds 20 --probe 0.5

Each `--code` checkout (`git archive REV | tar -x -C DIR`) runs its own `pluralign serve` on its own empty data
folder (`benchmarks.serving.start_serve`), all started first and left running. Each round runs every server
once, in an order rotated per round, for `seconds`: `clients` threads of tenant A each send, one after
another, a random mix (seeded per client and round, so every server gets the same sequence): comparison
feedback (40%), profile GETs of a user with stored rows (30%), scores of 4 responses of ~600 characters (20%),
imports of 50 comparisons to a new user (10%). With `--probe S`, tenant B reads a profile every S seconds
(its latency: whether a caller arriving finds a thread), from `--probe-clients` threads. An idle tenant C holds a key and sends nothing.

Prints per server and round A's requests per second and per kind median and p90 (ms), then each server's
ratio to the first `--code` (throughput: the sum over rounds; latency: median of the per-round ratios),
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import run_for, start_serve  # noqa: E402
from service.auth import KeyRing  # noqa: E402

KINDS = ("feedback", "profile", "score", "import")
WEIGHTS = (0.4, 0.3, 0.2, 0.1)
LONG = "This answer explains the matter at some length, with care for the reader's time and patience. " * 6


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def request(c: httpx.Client, kind: str, tag: str) -> int:
    if kind == "feedback":
        return c.post("/v1/feedback", json={"type": "comparison", "user": f"u{hash(tag) % 8}", "prompt": f"{tag}: which is kinder?",
                                            "chosen": f"The gentle answer {tag}.", "rejected": f"The curt answer {tag}."}).status_code
    if kind == "profile":
        return c.get("/v1/users/reader").status_code
    if kind == "score":
        return c.post("/v1/rewards/score", json={"user": "reader", "prompt": f"Question {tag}?",
                                                 "responses": [f"{i} {tag} {LONG}" for i in range(4)]}).status_code
    lines = [json.dumps({"prompt": f"{tag} q{i}?", "chosen": f"Kind {i}.", "rejected": f"Curt {i}."}) for i in range(50)]
    return c.post(f"/v1/users/imp-{tag}/import", content="\n".join(lines).encode(), headers={"Content-Type": "application/jsonl"}).status_code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", type=Path, action="append", required=True, help="a checkout to serve (repeat; the first is the baseline)")
    p.add_argument("--clients", type=int, default=10, help="tenant A's concurrent clients")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0, help="each server's turn in a round")
    p.add_argument("--probe", type=float, default=0.0, help="tenant B reads a profile every this many seconds (0: B idle)")
    p.add_argument("--probe-clients", type=int, default=1, help="tenant B's probe threads (each a read every `probe` s)")
    p.add_argument("--port", type=int, default=8861)
    args = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="pluralign-share-"))
    servers = []
    try:
        for n, code in enumerate(args.code):
            data = folder / f"s{n}" / "data"
            data.mkdir(parents=True)
            ring = KeyRing(data / "api_keys.json")
            keys = {who: ring.issue(tenant) for who, tenant in (("a", "acme"), ("b", "bravo"), ("c", "cirrus"))}
            servers.append((code, start_serve(data, args.port + n, {"PLURALIGN_GENERATOR": "smollm2"}, code.resolve()), keys))
            print(f"server {n}: {code} on port {args.port + n}", flush=True)

        def client(n: int, who: str) -> httpx.Client:
            return httpx.Client(base_url=f"http://127.0.0.1:{args.port + n}", headers={"Authorization": f"Bearer {servers[n][2][who]}"}, timeout=600)

        for n in range(len(servers)):  # warm: the encoder, the reader's rows, one of each kind (not timed)
            with client(n, "a") as a, client(n, "b") as b:
                for i in range(6):
                    request(a, "feedback", f"warm{i}")
                for kind in KINDS:
                    request(a, kind, f"warm-{kind}")
                a.post("/v1/feedback", json={"type": "comparison", "user": "reader", "prompt": "Tea?", "chosen": "Yes.", "rejected": "No."})
                a.get("/v1/users/reader/preferences")
                b.get("/v1/users/nobody")

        results: list[dict] = []
        for rnd in range(args.rounds):
            order = [(rnd + k) % len(servers) for k in range(len(servers))]
            for n in order:
                times: dict[str, list[float]] = {k: [] for k in KINDS}
                probes: list[float] = []
                bad: list[str] = []
                stop = threading.Event()

                def loop(c: int, n: int = n, rnd: int = rnd, times=times, bad=bad, stop=stop) -> None:
                    rng = random.Random(f"{rnd}-{c}")
                    i = 0
                    with client(n, "a") as a:
                        while not stop.is_set():
                            kind = rng.choices(KINDS, WEIGHTS)[0]
                            i += 1
                            s = time.perf_counter()
                            code = request(a, kind, f"r{rnd}c{c}i{i}s{n}")
                            if not stop.is_set():
                                times[kind].append((time.perf_counter() - s) * 1000)
                            if code not in (200, 201):
                                bad.append(f"{kind} {code}")

                def probe(n: int = n, stop=stop, probes=probes) -> None:
                    with client(n, "b") as b:
                        while not stop.wait(args.probe):
                            s = time.perf_counter()
                            b.get("/v1/users/nobody")
                            probes.append((time.perf_counter() - s) * 1000)

                threads = [threading.Thread(target=loop, args=(c,)) for c in range(args.clients)]
                if args.probe:
                    threads += [threading.Thread(target=probe) for _ in range(args.probe_clients)]
                load = os.getloadavg()[0]
                run_for(threads, args.seconds, stop)
                done = sum(map(len, times.values()))
                row = {"round": rnd, "server": n, "rps": done / args.seconds, "load": load, "bad": bad[:3], "n_bad": len(bad),
                       "ms": {k: [statistics.median(v), pct(v, 0.9)] if v else None for k, v in times.items()},
                       "probe_ms": [statistics.median(probes), max(probes)] if probes else None}
                results.append(row)
                ms = "  ".join(f"{k} {v[0]:.0f}/{v[1]:.0f}" for k, v in row["ms"].items() if v)
                pr = f"  B probe {row['probe_ms'][0]:.0f}/max {row['probe_ms'][1]:.0f}" if probes else ""
                print(f"round {rnd} server {n}: {row['rps']:.2f} req/s (load {load:.1f}; median/p90 ms) {ms}{pr}"
                      + (f"  BAD {len(bad)} {bad[:3]}" if bad else ""), flush=True)
                time.sleep(1.0)
    finally:
        for _, proc, _ in servers:
            proc.terminate()
        for _, proc, _ in servers:
            proc.wait(timeout=60)

    print(f"\nratios to server 0 ({args.code[0]}), over {args.rounds} rounds:")
    summary = {}
    for n in range(1, len(servers)):
        rps = sum(r["rps"] for r in results if r["server"] == n) / sum(r["rps"] for r in results if r["server"] == 0)
        per_kind = {}
        for k in KINDS:
            ratios = [mine["ms"][k][0] / base["ms"][k][0] for base, mine in zip((r for r in results if r["server"] == 0), (r for r in results if r["server"] == n), strict=True)
                      if base["ms"][k] and mine["ms"][k]]
            per_kind[k] = [round(x, 2) for x in ratios]
        summary[str(args.code[n])] = {"rps_ratio": round(rps, 3), "median_latency_ratios_per_round": per_kind}
        print(f"server {n} ({args.code[n]}): req/s x{rps:.3f}; median latency ratio per round: "
              + "  ".join(f"{k} {statistics.median(v):.2f} {v}" for k, v in per_kind.items() if v))
    print(json.dumps({"clients": args.clients, "rounds": args.rounds, "seconds": args.seconds, "probe": args.probe, "cores": os.cpu_count(),
                      "summary": summary, "results": results}))


if __name__ == "__main__":
    main()
