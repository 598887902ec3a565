"""What one chat's prompt costs the generation worker before its first token: the prefill of
`candidates` copies of a prompt of T tokens, with the default generator (SmolLM2 on the CPU).

A prefill cannot be interrupted (a disconnect is seen between tokens) and every tenant's chats wait
behind it, so the service bounds it: `max_prompt_tokens` per prompt and `max_prefill_tokens` summed
over a chat's candidates (docs/api.md). This prints the seconds of `generate` with max_tokens 1 for
each prompt length and candidate count, and each one's ratio to the smallest (one run each, in one
process: the machine is shared, so read the ratios).

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.prefill_cost --json
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 2048], help="prompt lengths (about; tokens)")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--generator", default="smollm2")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from pluralign.policy.generator import Sampling
    from service.runtime import make_generator

    generator = make_generator(args.generator)
    generator.generate([{"role": "user", "content": "Hi"}], n=1, sampling=Sampling(max_tokens=1, seed=0))  # warm up
    rows = []
    for target in args.tokens:
        messages = [{"role": "user", "content": "word " * target + "?"}]
        tokens = generator.prompt_tokens(messages)
        for n in args.candidates:
            start = time.perf_counter()
            generator.generate(messages, n=n, sampling=Sampling(temperature=0.8, max_tokens=1, seed=1))
            rows.append({"prompt_tokens": tokens, "candidates": n, "prefill_tokens": tokens * n,
                         "seconds": round(time.perf_counter() - start, 2)})
            print(f"{tokens:5d} tokens x {n} candidates: {rows[-1]['seconds']:6.2f} s", flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = round(row["seconds"] / base, 1)
    if args.json:
        print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
