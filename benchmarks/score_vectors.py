"""What `POST /v1/rewards/score` costs over HTTP when its texts are embedded afresh (every call before session small53)
and when they are read back from the tenant's text vectors in memory (`Runtime.score_vectors`,
`pluralign.embed.cache.ScopedVectors`, as next-comparison pools' are kept; in the pools' own cache in releases before
review small53).

    python -m benchmarks.score_vectors                          # 8 responses of 1-3 sentences, MiniLM, 10 repeats
    python -m benchmarks.score_vectors --responses 32 --json

The tests' tiny service in this process (`benchmarks.serving.tiny_service_of_alice`: MiniLM on torch, the service's
default encoder, one thread; a PAL checkpoint trained here), one user (alice, with 20 stored comparisons, so scored
with her own fitted weights). Side by side, in one run:

- `fresh`: the tenant's text vectors dropped before each call (what each call cost before: every text embedded);
- `again`: the same prompt and responses scored again (an app scoring its candidates for another user, or after a
  refit).

Prints the median and the slowest of `--repeats` calls, in ms, round trip over loopback.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.pool_vectors import SENTENCES, printed


def responses_of(n: int) -> list[str]:
    """`n` distinct answers of one to three sentences."""
    return [f"Answer {j}. " + " ".join(SENTENCES[(j + k) % len(SENTENCES)] for k in range(1 + j % 3)) for j in range(n)]


def main(argv: list[str] | None = None) -> None:
    from benchmarks.serving import tiny_service_of_alice

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=8, help="responses scored per call (the request allows 64)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("responses", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")

    server, svc = tiny_service_of_alice("score_vectors", rows=20)
    body = {"user": "alice", "prompt": "What would you suggest for a relaxed weekend?", "responses": responses_of(args.responses)}
    figures: dict[str, list[float]] = {"fresh": [], "again": []}
    with server, svc.client() as c:
        assert c.post("/v1/rewards/score", json=body).status_code == 200  # warm: the model's first call, alice's fit
        for _ in range(args.repeats):  # interleaved, so the machine's load falls on both alike
            for kind in figures:
                if kind == "fresh":
                    svc.runtime.score_vectors.forget_scope("acme")
                began = time.perf_counter()
                r = c.post("/v1/rewards/score", json=body)
                figures[kind].append((time.perf_counter() - began) * 1000)
                assert r.status_code == 200, r.text
    out = {"responses": args.responses, "texts": args.responses + 1, "encoder": svc.runtime.encoder.encoder_id,
           "repeats": args.repeats}
    printed(figures, out, args.json,
            f"score of {args.responses} responses ({args.responses + 1} texts), {out['encoder']}, {args.repeats} repeats")


if __name__ == "__main__":
    main()
