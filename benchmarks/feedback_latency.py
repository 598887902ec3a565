"""p99 latency of POST /v1/feedback while an adapter job trains, against idle, in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/feedback_latency.py --requests 150 --rounds 2

The service runs under uvicorn on 127.0.0.1 with the test suite's tiny generator and PAL and the
real MiniLM encoder (feedback embeds texts and refits the user's PAL weights). The busy phase runs
a real `pluralign train adapter` job (SmolLM2-135M, LoRA, DPO) in a worker process at nice 10 with
one thread, as the service queues them. Idle and busy blocks alternate to even out machine noise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.admin.controllers import ADMIN_HANDLERS  # noqa: E402
from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal  # noqa: E402


def feedback_latencies(client, n: int, offset: int) -> list[float]:
    out = []
    for i in range(offset, offset + n):
        body = {"type": "comparison", "user": f"u{i % 20}", "prompt": f"Question number {i}?",
                "chosen": f"A careful answer {i}.", "rejected": f"A careless answer {i}."}
        start = time.perf_counter()
        r = client.post("/v1/feedback", json=body)
        out.append(time.perf_counter() - start)
        assert r.status_code == 201, r.text
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=150, help="feedback requests per block")
    parser.add_argument("--rounds", type=int, default=2, help="idle/busy block pairs")
    parser.add_argument("--base", default="smollm2", help="model the adapter job trains (smollm2 or a folder)")
    args = parser.parse_args()
    from pluralign.embed.encoders import SentenceEncoder

    tmp = Path(tempfile.mkdtemp(prefix="pluralign-latency-"))
    encoder = SentenceEncoder()
    generator = save_tiny_generator(tmp / "generator")
    (tmp / "pal").mkdir()
    pal = train_tiny_pal(tmp / "pal", encoder)
    server, svc = start_service(tmp / "data", generator, pal, encoder, admin_handlers=ADMIN_HANDLERS, adapter_every=10**9)
    idle: list[float] = []
    busy: list[float] = []
    with server, svc.client("acme") as c, svc.client("admin") as admin:
        for i in range(40):  # warm-up, and comparisons for the adapter job to train on
            c.post("/v1/feedback", json={"type": "comparison", "user": "trainee", "prompt": f"Q{i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."})
        offset = 0
        for _ in range(args.rounds):
            idle += feedback_latencies(c, args.requests, offset)
            offset += args.requests
            r = admin.post("/admin/jobs", json={"kind": "adapter", "params": {"tenant": "acme", "user": "trainee", "base": args.base, "steps": 100000}})
            assert r.status_code == 201, r.text
            job = r.json()
            while admin.get(f"/admin/jobs/{job['id']}").json()["state"] != "running":
                time.sleep(0.1)
            time.sleep(3)  # past the worker's start-up: it is loading or training the model
            busy += feedback_latencies(c, args.requests, offset)
            offset += args.requests
            state = admin.get(f"/admin/jobs/{job['id']}").json()
            print(f"  adapter job {job['id']} was {state['state']} during the busy block; last log: {state['log_tail'][-1:]}")
            admin.post(f"/admin/jobs/{job['id']}/cancel")
            while admin.get(f"/admin/jobs/{job['id']}").json()["state"] == "running":
                time.sleep(0.1)
    print(f"feedback latency over {len(idle)} idle and {len(busy)} busy requests (ms):")
    for name, values in (("idle", idle), ("adapter job running", busy)):
        print(f"  {name:<20} p50 {pct(values, 50):7.1f}  p90 {pct(values, 90):7.1f}  p99 {pct(values, 99):7.1f}")
    print(f"  p99 ratio busy/idle: {pct(busy, 99) / pct(idle, 99):.2f}   p50 ratio: {pct(busy, 50) / pct(idle, 50):.2f}")


if __name__ == "__main__":
    main()
