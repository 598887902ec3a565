"""Does one tenant's long prompt stall another tenant's chat? A prompt's prefill in one forward (session 47) against
the prefill in slices taking turns (session 48), side by side in one run, on one in-process `Generator` (the code the
generation child runs), the modes' order rotated each round.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/prefill_turns.py
    python benchmarks/prefill_turns.py --prompt-tokens 1600 --n 4 --slices 32,64,128 --rounds 1

"off": `prefill_slice_tokens` past the prompt (one forward of n rows x the prompt, as before); "on<k>": k (the prompt
forwarded once for its n identical rows, in slices of k tokens, another lane's step between two).

1. Victim: tenant bravo sends one chat of `--n` candidates x `--long-tokens` tokens with a prompt of ~`--prompt-tokens`
   tokens; once it holds the model, tenant acme sends one chat of 1 x `--short-tokens` tokens: acme's latency (s), and
   acme's alone (`acme_alone_s`).
2. Alone: bravo's chat alone: its seconds (prefill and all), and its tokens (greedy: the same in both modes, or the
   line says `same_tokens: false`).

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

SHORT = [{"role": "user", "content": "Say hello."}]
ONE_FORWARD = 1 << 30


def long_messages(generator, tokens: int) -> list[dict[str, str]]:
    """A user message whose chat prompt is about `tokens` tokens long."""
    sentence = "The lighthouse keeper walked along the cliffs and counted the ships in the bay. "
    one, two = (generator.prompt_tokens([{"role": "user", "content": sentence * k}]) for k in (1, 2))
    repeats = max(1, (tokens - one) // max(1, two - one) + 1)
    return [{"role": "user", "content": sentence * repeats + "Tell the story of that night."}]


def in_lane(tenant: str, fn):
    from pluralign.turns import CALLER

    out: list = []

    def run():
        CALLER.set(f"tenant:{tenant}")
        started = time.perf_counter()
        out.append((fn(), time.perf_counter() - started))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def round_of(generator, mode: str, messages, args) -> dict:
    from pluralign.policy.generator import Sampling

    generator.prefill_slice_tokens = ONE_FORWARD if mode == "off" else int(mode.removeprefix("on"))
    short = Sampling(max_tokens=args.short_tokens, temperature=0)
    long = Sampling(max_tokens=args.long_tokens, temperature=0)
    thread, alone_short = in_lane("acme", lambda: generator.generate(SHORT, sampling=short))
    thread.join()
    thread, alone_long = in_lane("bravo", lambda: generator.generate(messages, n=args.n, sampling=long))
    thread.join()

    forwards = []
    hook = generator.model.register_forward_pre_hook(lambda *a: forwards.append(1))
    try:
        bravo, bravo_out = in_lane("bravo", lambda: generator.generate(messages, n=args.n, sampling=long))
        while not forwards:  # bravo holds the model: its prefill began
            time.sleep(0.001)
        acme, acme_out = in_lane("acme", lambda: generator.generate(SHORT, sampling=short))
        acme.join()
        bravo.join()
    finally:
        hook.remove()
    return {"acme_alone_s": round(alone_short[0][1], 2), "acme_s": round(acme_out[0][1], 2),
            "bravo_alone_s": round(alone_long[0][1], 2), "bravo_s": round(bravo_out[0][1], 2),
            "tokens": [c.text for c in alone_long[0][0][0]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=4, help="candidates of bravo's chat")
    parser.add_argument("--prompt-tokens", type=int, default=1600)
    parser.add_argument("--long-tokens", type=int, default=16)
    parser.add_argument("--short-tokens", type=int, default=16)
    parser.add_argument("--slices", default="64", help="prefill_slice_tokens of the modes on<slice>, separated by commas")
    args = parser.parse_args()

    import torch

    from pluralign.embed.models import smollm2_dir
    from pluralign.policy.generator import Generator, Sampling

    generator = Generator.from_folder(args.model or smollm2_dir(), device=torch.device("cpu"))
    messages = long_messages(generator, args.prompt_tokens)
    generator.generate(SHORT, sampling=Sampling(max_tokens=4, temperature=0))  # warm
    modes = ["off", *(f"on{int(size)}" for size in args.slices.split(","))]
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    texts: dict[str, list] = {}
    for r in range(args.rounds):
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            row = {"round": r + 1, "mode": mode, **round_of(generator, mode, messages, args)}
            texts.setdefault(mode, row.pop("tokens"))
            results[mode].append(row)
            print(json.dumps(row), flush=True)
    summary = {mode: {key: statistics.median(row[key] for row in rows) for key in ("acme_s", "acme_alone_s", "bravo_alone_s", "bravo_s")}
               for mode, rows in results.items()}
    same = all(texts[mode] == texts["off"] for mode in modes)
    print(json.dumps({"summary": summary, "same_tokens": same, "prompt_tokens": generator.prompt_tokens(messages),
                      "n": args.n, "long_tokens": args.long_tokens, "short_tokens": args.short_tokens}), flush=True)


if __name__ == "__main__":
    main()
