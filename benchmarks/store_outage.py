"""What a tenant waits for while the object store is down, hung or throttling, by timeout setting.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/store_outage.py

The service (the test suite's tiny generator and PAL, the real MiniLM encoder, under uvicorn on
127.0.0.1) keeps its tables on moto's S3 on loopback, reached through `tests/s3.py`'s `FaultyProxy`.
For each store fault and each pair of settings (`PLURALIGN_STORE_TIMEOUT_S`, `PLURALIGN_STORE_RETRIES`),
a fresh service and bucket prefix: a healthy chat of a user whose history is not cached (the
baseline), then, with the fault on, the time to the 503 of that chat, of a second tenant's chat
sent right after (answered at once while the store is known down), of a feedback POST (201: the
local feedback log takes it), and, with the fault off again, how long until the feedback is moved
into the table and a chat is answered 200. Each fault and setting is one sample: the figures are
seconds on a shared machine, read side by side with the baseline in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.s3 import FaultyProxy, S3Server  # noqa: E402
from tests.service.tiny import save_tiny_generator, start_service, train_tiny_pal  # noqa: E402

FAULTS = {  # name -> what the proxy answers every request with
    "refused (dropped connections)": "drop",
    "hung (no answer)": "hang",
    "throttling (503 SlowDown)": (503, "SlowDown"),
}


def chat(client, user: str):
    return client.post("/v1/chat/completions", json={"model": "pluralign", "user": user, "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": "Hello?"}]})


def timed(call, want: int) -> float:
    start = time.perf_counter()
    r = call()
    took = time.perf_counter() - start
    assert r.status_code == want, (want, r.status_code, r.text[:300])
    return took


def until(condition, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.perf_counter() - start


def one_case(tmp: Path, s3: S3Server, generator: Path, pal: Path, encoder, fault, timeout_s: float, retries: int, case: int) -> dict:
    with FaultyProxy(s3.endpoint) as proxy:
        settings = {**s3.settings(f"case{case}", proxy.endpoint), "store_timeout_s": timeout_s, "store_retries": retries}
        server, svc = start_service(tmp / f"data{case}", generator, pal, encoder, deletion_sweep_s=3600, **settings)
        rt = svc.runtime
        with server, svc.client("acme") as acme, svc.client("globex") as globex:
            for i in range(4):
                body = {"type": "comparison", "user": "ann", "prompt": f"Which drink {i}?", "chosen": f"Tea {i}.", "rejected": f"Coffee {i}."}
                assert acme.post("/v1/feedback", json=body).status_code == 201
            rt.wait_for_background()
            rt.store.histories.invalidate([("acme", "ann")])
            healthy = timed(lambda: chat(acme, "ann"), 200)
            rt.store.histories.invalidate([("acme", "ann")])  # as after a restart: the next read goes to the store
            proxy.fault = lambda method, path, headers: fault
            first = timed(lambda: chat(acme, "ann"), 503)
            other = timed(lambda: chat(globex, "bea"), 503)
            feedback = timed(lambda: acme.post("/v1/feedback", json={"type": "comparison", "user": "bob", "prompt": "Which drink?",
                                                                     "chosen": "Tea.", "rejected": "Coffee."}), 201)
            proxy.fault = lambda method, path, headers: None
            proxy.release.set()
            moved = until(lambda: acme.get("/health").json()["feedback_pending"] == 0)
            back = until(lambda: chat(acme, "ann").status_code == 200)
    return {"healthy": healthy, "first": first, "other": other, "feedback": feedback, "moved": moved, "back": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="10:3,2:1", help="store_timeout_s:store_retries pairs, comma-separated")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    args = parser.parse_args()
    from pluralign.embed.encoders import SentenceEncoder

    pairs = [(float(t), int(r)) for t, r in (p.split(":") for p in args.settings.split(","))]
    names = [n.strip() for n in args.faults.split(",")]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"--faults: unknown {unknown}; known: {list(FAULTS)}")
    tmp = Path(tempfile.mkdtemp(prefix="pluralign-outage-"))
    encoder = SentenceEncoder()
    generator = save_tiny_generator(tmp / "generator")
    (tmp / "pal").mkdir()
    pal = train_tiny_pal(tmp / "pal", encoder)
    rows = []
    with S3Server("pluralign-outage") as s3:
        for name in names:
            for timeout_s, retries in pairs:
                got = one_case(tmp, s3, generator, pal, encoder, FAULTS[name], timeout_s, retries, len(rows))
                rows.append((name, f"{timeout_s:g} s, {retries}", got))
                print(f"  {name}, timeout {timeout_s:g} s, retries {retries}: " + ", ".join(f"{k} {v:.2f} s" for k, v in got.items()), flush=True)
    print("\nseconds (one sample each): healthy chat | fault on: chat to 503, another tenant's chat to 503, feedback 201 "
          "| fault off: feedback moved in, chat 200 again")
    print(f"{'store':<30} {'timeout, retries':<17} {'healthy':>8} {'chat 503':>9} {'other 503':>10} {'feedback':>9} {'moved':>7} {'back':>6}")
    for name, setting, got in rows:
        print(f"{name:<30} {setting:<17} {got['healthy']:8.2f} {got['first']:9.2f} {got['other']:10.2f} {got['feedback']:9.3f} "
              f"{got['moved']:7.2f} {got['back']:6.2f}")


if __name__ == "__main__":
    main()
