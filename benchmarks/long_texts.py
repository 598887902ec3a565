"""Time to embed one long text, and another tenant's wait while one tenant embeds long texts: the encoder reading each
text whole before the model cuts it to its window (before) against cutting it first to the start whose word pieces
are the same (`pluralign.embed.base.window_texts`, after), side by side in one process, rounds interleaved.

"before" is the same encoder with `window_texts` replaced by the whole text and its whole count (what
`pluralign.embed.encoders.in_turns` did), so both sides run the same model, turns and slices; every vector of both is
checked equal. Prints one JSON line per size and kind, then one for the two tenants.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m benchmarks.long_texts
    python -m benchmarks.long_texts --encoder minilm-onnx --sizes 1000000,10000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from benchmarks.serving import run_for

SENTENCE = "The committee met on Tuesday; its members, weary, argued until dawn about the budget and its trade-offs. "
CJK = "我们今天讨论了预算问题，委员会成员一直争论到天亮。这是一个很长的句子没有空格"
KINDS = {"latin": SENTENCE, "cjk": CJK}


def text_of(kind: str, chars: int) -> str:
    unit = KINDS[kind]
    return (unit * (chars // len(unit) + 1))[:chars]


@contextmanager
def reading_whole(encoder_module):
    """The encoders as before: every text read whole (counted, then tokenized by the model's call)."""
    from pluralign.embed.base import word_pieces

    cut = encoder_module.window_texts
    encoder_module.window_texts = lambda counter, texts, max_length: (list(texts), word_pieces(counter, texts))
    try:
        yield
    finally:
        encoder_module.window_texts = cut


def one_text(encoder, module, sizes: list[int], rounds: int) -> None:
    for kind in KINDS:
        for size in sizes:
            text, times = text_of(kind, size), {"before": [], "after": []}
            vectors = {}
            for _ in range(rounds):
                for side in ("before", "after"):
                    with reading_whole(module) if side == "before" else nullcontext():
                        start = time.perf_counter()
                        vectors[side] = encoder.encode([text])
                        times[side].append(time.perf_counter() - start)
            before, after = statistics.median(times["before"]), statistics.median(times["after"])
            print(json.dumps({"kind": kind, "chars": size, "before_s": round(before, 4), "after_s": round(after, 4),
                              "speedup": round(before / after, 1), "identical": bool(np.array_equal(vectors["before"], vectors["after"])),
                              "rounds": rounds}), flush=True)


def two_tenants(encoder, module, chars: int, seconds: float, every: float) -> None:
    """Tenant acme embeds a text of `chars` characters every `every` seconds, or at once when the last took longer (a
    chat message near the service's 1 MB body limit: its prompt is embedded to personalize the answer); tenant globex
    embeds one short text every 50 ms, in its own lane of the encoder's turns: globex's latency, before and after."""
    for side in ("before", "after"):
        with reading_whole(module) if side == "before" else nullcontext():
            acme_texts, waits = tenants_side(encoder, chars, seconds, every)
        waits.sort()
        print(json.dumps({"side": side, "acme_chars": chars, "acme_texts": acme_texts, "acme_every_s": every, "seconds": seconds,
                          "globex_calls": len(waits), "globex_p50_ms": round(1000 * waits[len(waits) // 2], 1),
                          "globex_p90_ms": round(1000 * waits[int(len(waits) * 0.9)], 1),
                          "globex_max_ms": round(1000 * waits[-1], 1)}), flush=True)


def tenants_side(encoder, chars: int, seconds: float, every: float) -> tuple[int, list[float]]:
    """(acme's texts embedded, globex's latencies in seconds) over `seconds`."""
    from pluralign.turns import CALLER

    stop, waits, acme_calls = threading.Event(), [], [0]

    def acme():
        CALLER.set("tenant:acme")
        while not stop.is_set():
            start = time.perf_counter()
            encoder.encode([text_of("latin", chars - acme_calls[0])])  # a new text each time, as a tenant's would be
            acme_calls[0] += 1
            stop.wait(max(0.0, every - (time.perf_counter() - start)))

    def globex():
        CALLER.set("tenant:globex")
        while not stop.is_set():
            start = time.perf_counter()
            encoder.encode(["Suggest a weekend plan for a rainy day"])
            waits.append(time.perf_counter() - start)
            time.sleep(0.05)

    run_for([threading.Thread(target=acme), threading.Thread(target=globex)], seconds, stop)
    return acme_calls[0], waits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="minilm", choices=["minilm", "minilm-onnx", "smollm2"])
    parser.add_argument("--sizes", default="1000000,100000,10000,1000", help="characters of the one text, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenant-chars", type=int, default=900_000)
    parser.add_argument("--tenant-seconds", type=float, default=20.0, help="0: skip the two tenants")
    parser.add_argument("--tenant-every", type=float, default=1.0, help="seconds between the long texts acme sends")
    args = parser.parse_args()
    from pluralign.embed import encoders, onnx
    from pluralign.embed.encoders import make_encoder

    encoder = make_encoder(args.encoder)
    module = onnx if args.encoder == "minilm-onnx" else encoders
    encoder.encode(["warm up"])
    one_text(encoder, module, [int(s) for s in args.sizes.split(",")], args.rounds)
    if args.tenant_seconds > 0 and args.encoder != "minilm-onnx":  # ONNX Runtime's encoder takes no turns
        two_tenants(encoder, module, args.tenant_chars, args.tenant_seconds, args.tenant_every)


if __name__ == "__main__":
    main()
