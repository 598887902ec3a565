"""What choosing `pluralign.compare` adds to a chat request: the most informative pair among 8 returned choices.

    python -m benchmarks.compare_latency                # 1000 choices per case, one thread
    python -m benchmarks.compare_latency --json
    python -m benchmarks.compare_latency --target best  # compare_target = best (256 posterior samples)

Times the service's own `service.chat.services.choose_compare` (what `complete` calls after
reranking) on the bootstrap shape (PAL variant a, K=4, 384-d MiniLM inputs, latent 64; D = 75
coefficients), with 8 candidates all returned (28 pairs), in two cases:

- `known`: a user with a fitted posterior (50 comparisons): the candidates' coordinates were
  computed for reranking, so the choice reads the stored mean and covariance and scores 28 pairs;
- `new`: a user on the prior (served by MaxMin, no coordinates yet): the choice also computes the
  8 candidates' coordinates (one pass of PAL's networks and the named text features).

Prints median and p99 in ms. The embeddings are computed for reranking in both cases and are not
counted (the choice reuses them).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np

from benchmarks.user_refit import ANSWERS, service_shaped_user_model
from pluralign.user.stated import StatedPreferences
from service.chat.schemas import Timings
from service.chat.services import Plan, choose_compare
from service.settings import Settings
from service.users.services import UserWeights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--target", choices=["coefficients", "best"], default="coefficients",
                        help="the service's compare_target: BALD (default) or information about the best choice")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    um = service_shaped_user_model()
    rng = np.random.default_rng(0)
    n = args.candidates
    texts = [ANSWERS[i % 4] + f" ({i})" for i in range(n)]
    prompt_vec, vectors = rng.normal(size=384).astype(np.float32), rng.normal(size=(n, 384)).astype(np.float32)
    p50, c50, r50 = (rng.normal(size=(50, 384)).astype(np.float32) for _ in range(3))
    _, state = um.fit_user(p50, c50, r50, [ANSWERS[i % 4] for i in range(50)], [ANSWERS[(i + 1) % 4] for i in range(50)], np.zeros(4))
    state = type(state).decode(state.encode())  # as read back from the users table
    rt = SimpleNamespace(settings=Settings(compare_target=args.target), rewards=SimpleNamespace(user_model=um))
    rewards = SimpleNamespace(user_model=um)

    def plan(known: bool) -> Plan:
        weights = UserWeights(logits=np.zeros(4), prior=not known, record=None, state=state if known else None,
                              rewards=rewards, stated=StatedPreferences())
        p = Plan(response_id="r", tenant="t", user_id="u", prompt="q", prompt_vec=prompt_vec, messages=[], context=[], history=[],
                 adapter=None, weights=weights, candidates=n, rerank=True, timings=Timings(), returned=n)
        p.candidate_vectors = vectors
        if known:  # computed by reranking with the user model
            p.candidate_x = um.candidates(prompt_vec, vectors, texts).x
        return p

    out = {}
    for case in ("known", "new"):
        times, asked = [], 0
        for _ in range(args.repeats):
            p = plan(case == "known")
            t0 = time.perf_counter()
            choice = choose_compare(rt, p, texts, list(range(n)))
            times.append((time.perf_counter() - t0) * 1000)
            asked += choice is not None
        out[case] = {"median_ms": round(float(np.median(times)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3),
                     "asked": asked / args.repeats}
    print(f"choosing a pair among {n} returned choices ({n * (n - 1) // 2} pairs, D = {um.dim}; {args.repeats} per case, 1 thread)")
    for case, row in out.items():
        print(f"  {case:6s} median {row['median_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms (compare offered in {row['asked']:.0%})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
