"""What a next-comparison `pool` costs to lay out, embedded afresh (every call before session pool52) or read back
from the tenant's pool vectors (`Runtime.pool_vectors`, `pluralign.embed.cache.ScopedVectors`).

    python -m benchmarks.pool_vectors                     # 32 items of 2 answers (96 texts), MiniLM, 5 repeats
    python -m benchmarks.pool_vectors --items 16 --answers 4 --json

Times `service.users.services._supplied_pairs`, the step of `POST /v1/users/{id}/next-comparison` that embeds the
pool (MiniLM on torch, the service's default encoder), for a questionnaire's pool of `--items` prompts with
`--answers` answers each (a sentence to a short paragraph, as an app's calibration pool has):

- `fresh`: the tenant's pool vectors dropped before each call (what each call cost before: every text embedded);
- `first`: the first call after a drop, which fills them (embedding plus keeping);
- `again`: the second and later calls with the same pool (what each further question of a questionnaire costs).

Prints the median and the slowest of `--repeats` calls, in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

SENTENCES = [
    "Keep a regular bedtime and put screens away an hour before you sleep.",
    "Research the company beforehand and prepare a few questions of your own.",
    "Bring the water to a rolling boil, lower the egg in gently and cook it nine minutes.",
    "A long hike on Saturday, then brunch with friends and a film on Sunday.",
    "Dune, a sweeping novel about politics, ecology and religion on a desert planet.",
]


def pool_of(items: int, answers: int) -> list[tuple[str, list[str]]]:
    """`items` distinct prompts, each with `answers` distinct answers of one to three sentences."""
    return [(f"Question {i}: what would you suggest about topic {i}?",
             [f"Answer {j} to {i}. " + " ".join(SENTENCES[(i + j + k) % len(SENTENCES)] for k in range(1 + j % 3))
              for j in range(answers)])
            for i in range(items)]


def timed(call, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        out.append((time.perf_counter() - began) * 1000)
    return out


def main(argv: list[str] | None = None) -> None:
    from pluralign.embed.cache import ScopedVectors
    from pluralign.embed.encoders import make_encoder
    from service.runtime import POOL_VECTOR_BYTES
    from service.users.services import _supplied_pairs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=32, help="prompts in the pool (the request allows 64)")
    parser.add_argument("--answers", type=int, default=2, help="answers per prompt (2-8; 64 answers in all at most)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("items", "answers", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    encoder = make_encoder("minilm")
    rt = SimpleNamespace(encoder=encoder, pool_vectors=ScopedVectors(POOL_VECTOR_BYTES))
    pool = pool_of(args.items, args.answers)
    encoder.encode(["warm up the model"])  # its first call loads the weights

    def fresh():
        rt.pool_vectors.forget_scope("bench")
        _supplied_pairs(rt, "bench", pool)

    figures = {"fresh": timed(fresh, args.repeats)}
    figures["first"] = timed(fresh, 1)
    figures["again"] = timed(lambda: _supplied_pairs(rt, "bench", pool), args.repeats)
    texts = args.items * (args.answers + 1)
    out = {"items": args.items, "texts": texts, "encoder": encoder.encoder_id, "repeats": args.repeats}
    printed(figures, out, args.json, f"pool of {args.items} items, {texts} texts, {encoder.encoder_id}, {args.repeats} repeats")


def printed(figures: dict[str, list[float]], out: dict, as_json: bool, head: str) -> None:
    """Prints `out` with each kind's median and slowest call in ms (`{kind}_ms_median`, `{kind}_ms_max`) as one JSON
    line, or `head` and a line a kind."""
    if as_json:
        print(json.dumps({**out, **{f"{k}_ms_median": round(statistics.median(v), 2) for k, v in figures.items()},
                          **{f"{k}_ms_max": round(max(v), 2) for k, v in figures.items()}}))
        return
    print(head)
    for k, v in figures.items():
        print(f"  {k:6s} median {statistics.median(v):9.2f} ms   max {max(v):9.2f} ms")


if __name__ == "__main__":
    main()
