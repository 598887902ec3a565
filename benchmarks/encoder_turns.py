"""Does one tenant's big batches stall another tenant's texts in the shared encoder? Encoding alone
(texts/s), and a victim's one short text while attackers loop over big batches, in one process.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/encoder_turns.py --encoder minilm
    python benchmarks/encoder_turns.py --encoder minilm --code /tmp/before   # another checkout (git archive REV | tar -x -C /tmp/before)

1. Alone: `--rounds` encodes of `--long` texts of `--chars` characters (an attacker's score request:
   its prompt and 32 responses) and of `--short` feedback-like texts (12-40 words), best round timed.
2. Under attack: `--attackers` threads of tenant acme each encode the long texts over and over; one
   thread of tenant globex encodes one short prompt `--probes` times, one after another; its
   latencies (ms) and the attackers' calls finished meanwhile.

Prints both as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

WORDS = ("people weigh values trade offs differently so a reward that fits one user misleads another when the "
         "answers are long careful and kind or short blunt and funny").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def as_tenant(tenant: str):
    """Sets the caller the encoder takes turns by (`pluralign.turns.CALLER`), where the checkout has one."""
    try:
        from pluralign.turns import CALLER
    except ImportError:  # a checkout before turns: one lock, no lanes
        return
    CALLER.set(f"tenant:{tenant}")


def alone(encoder, texts: list[str], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - start)
    return best


def under_attack(encoder, long: list[str], attackers: int, probes: int) -> dict:
    stop, calls, latencies = threading.Event(), [], []

    def attack():
        as_tenant("acme")
        while not stop.is_set():
            encoder.encode(long)
            calls.append(1)

    threads = [threading.Thread(target=attack) for _ in range(attackers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the attackers are inside the encoder
    as_tenant("globex")
    for i in range(probes):
        start = time.perf_counter()
        encoder.encode([f"Suggest a weekend plan number {i}"])
        latencies.append(1000 * (time.perf_counter() - start))
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join()
    return {"victim_p50_ms": round(statistics.median(latencies), 1), "victim_max_ms": round(max(latencies), 1),
            "attacker_calls": len(calls)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="minilm", help="minilm, minilm-onnx or smollm2")
    parser.add_argument("--long", type=int, default=33)
    parser.add_argument("--chars", type=int, default=2200)
    parser.add_argument("--short", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--attackers", type=int, default=2)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--slice-tokens", type=int, default=None, help="the encoder's slice_tokens (default: its own)")
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout whose pluralign runs")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))
    from pluralign.embed.encoders import make_encoder

    rng = random.Random(0)
    long = [text(rng, args.chars // 4)[: args.chars] for _ in range(args.long)]
    short = [text(rng, rng.randint(12, 40)) for _ in range(args.short)]
    encoder = make_encoder(args.encoder)
    if args.slice_tokens is not None:
        encoder.slice_tokens = args.slice_tokens
    encoder.encode(short[:8])  # warm
    long_s, short_s = alone(encoder, long, args.rounds), alone(encoder, short, args.rounds)
    print(json.dumps({
        "encoder": args.encoder, "code": str(args.code), "slice_tokens": getattr(encoder, "slice_tokens", None),
        "alone_long_texts_per_s": round(args.long / long_s, 1), "alone_short_texts_per_s": round(args.short / short_s, 1),
        **under_attack(encoder, long, args.attackers, args.probes),
    }))


if __name__ == "__main__":
    main()
