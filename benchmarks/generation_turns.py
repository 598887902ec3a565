"""Does one tenant's long chat stall another tenant's chat? Generation in turns (session 47) against one chat at a time,
side by side in one run, with the service's own pieces: its generation scheduler (`service.scheduler.FairScheduler`,
one chat of a tenant at a time while another's waits) and its generation process (`ProcessGenerator`).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/generation_turns.py
    python benchmarks/generation_turns.py --model /path/to/folder --long-tokens 1024 --n 8   # the trial's chats

"off": `--workers-off` generation workers (1: each chat runs to its end, the service before session 47); "on":
`--workers-on` (4: the default since), the chats running taking the model in turns a token step at a time. Each round
runs both, in rotated order, on the same child process:

1. Victim: tenant bravo keeps its chats of `--n` candidates x `--long-tokens` tokens queued (as many as the scheduler
   lets it hold); once one runs, tenant acme sends one chat of 1 x `--short-tokens` tokens, `--probes` times, one
   after another: its latencies (s), and how many of bravo's chats ended meanwhile; first, one such chat of acme's
   with no other chat (`acme_alone_s`).
2. Alone: acme alone sends `--lone-chats` chats of `--n` x `--lone-tokens` at once: completion tokens a second.

Prints one JSON line per round and mode, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MESSAGES = [{"role": "user", "content": "Write a long, detailed story about a lighthouse keeper and the sea, chapter by chapter."}]
SHORT = [{"role": "user", "content": "Say hello."}]


def chat(generator, messages, n: int, tokens: int, cancel: threading.Event):
    from pluralign.policy.generator import Sampling

    candidates, _ = generator.generate(messages, n=n, sampling=Sampling(max_tokens=tokens, temperature=1.0), cancel=cancel)
    return sum(c.tokens for c in candidates)


def submit(scheduler, tenant: str, fn):
    """As the service submits a chat: the work runs in the tenant's lane of the generator's turns."""
    from pluralign.turns import CALLER

    def in_lane():
        CALLER.set(f"tenant:{tenant}")
        return fn()

    return scheduler.submit(tenant, in_lane)


def victim(generator, workers: int, args) -> dict:
    from service.scheduler import Busy, FairScheduler

    scheduler = FairScheduler(workers, 4, 32, running_per_tenant=1, kept_free=workers // 2)  # as `Runtime` builds it
    stop, ended = threading.Event(), []
    started = time.perf_counter()
    submit(scheduler, "acme", lambda: chat(generator, SHORT, 1, args.short_tokens, threading.Event())).result()
    alone = time.perf_counter() - started  # acme's short chat with no other chat

    def flood() -> None:  # bravo keeps its slots full
        futures = []
        while not stop.is_set():
            futures = [f for f in futures if not f.done()]
            try:
                future = submit(scheduler, "bravo", lambda: chat(generator, MESSAGES, args.n, args.long_tokens, stop))
                future.add_done_callback(lambda f: ended.append(1) if not f.cancelled() and f.exception() is None else None)
                futures.append(future)
            except Busy:
                time.sleep(0.05)
        for future in futures:
            future.cancel()

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    while scheduler.stats()["running"] < 1:
        time.sleep(0.01)
    time.sleep(0.5)  # bravo's first chat is past its prefill
    latencies, ended_before = [], len(ended)
    for _ in range(args.probes):
        started = time.perf_counter()
        submit(scheduler, "acme", lambda: chat(generator, SHORT, 1, args.short_tokens, threading.Event())).result()
        latencies.append(time.perf_counter() - started)
    stop.set()
    flooder.join()
    scheduler.close("done")
    scheduler.shutdown(wait=True)
    return {"acme_alone_s": round(alone, 2), "acme_s": [round(s, 2) for s in latencies], "acme_p50_s": round(statistics.median(latencies), 2),
            "acme_max_s": round(max(latencies), 2), "bravo_chats_ended_meanwhile": len(ended) - ended_before}


def lone(generator, workers: int, args) -> dict:
    from service.scheduler import FairScheduler

    kept_free = workers // 2 if args.kept_free is None else args.kept_free
    scheduler = FairScheduler(workers, args.lone_chats, 32, running_per_tenant=1, kept_free=kept_free)
    started = time.perf_counter()
    futures = [submit(scheduler, "acme", lambda: chat(generator, MESSAGES, args.n, args.lone_tokens, threading.Event()))
               for _ in range(args.lone_chats)]
    tokens = sum(f.result() for f in futures)
    seconds = time.perf_counter() - started
    scheduler.shutdown(wait=True)
    return {"lone_tokens": tokens, "lone_s": round(seconds, 1), "lone_tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=4, help="candidates of bravo's (and the lone tenant's) chats")
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--short-tokens", type=int, default=16)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--lone-chats", type=int, default=4)
    parser.add_argument("--lone-tokens", type=int, default=64)
    parser.add_argument("--workers-off", type=int, default=1)
    parser.add_argument("--workers-on", type=int, default=4)
    parser.add_argument("--kept-free", type=int, default=None,
                        help="workers a tenant alone leaves free in the lone test (default: half, as `Runtime` since session 48)")
    args = parser.parse_args()

    from pluralign.embed.models import smollm2_dir
    from pluralign.policy.process import ProcessGenerator

    generator = ProcessGenerator(args.model or smollm2_dir())
    modes = {"off": args.workers_off, "on": args.workers_on}
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        chat(generator, SHORT, 1, 4, threading.Event())  # warm
        for r in range(args.rounds):
            for mode in (list(modes) if r % 2 == 0 else list(reversed(modes))):
                row = {"round": r + 1, "mode": mode, "workers": modes[mode], **victim(generator, modes[mode], args),
                       **lone(generator, modes[mode], args)}
                results[mode].append(row)
                print(json.dumps(row), flush=True)
    finally:
        generator.close()
    summary = {mode: {"acme_p50_s": statistics.median(s for row in rows for s in row["acme_s"]),
                      "acme_max_s": max(row["acme_max_s"] for row in rows),
                      "lone_tokens_per_s": statistics.median(row["lone_tokens_per_s"] for row in rows)}
               for mode, rows in results.items()}
    print(json.dumps({"summary": summary, "n": args.n, "long_tokens": args.long_tokens, "short_tokens": args.short_tokens,
                      "lone_chats": args.lone_chats, "lone_tokens": args.lone_tokens}), flush=True)


if __name__ == "__main__":
    main()
