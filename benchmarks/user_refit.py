"""How long a refit of one user's model takes: PAL's K logits, then the per-user residual posterior.

    python -m benchmarks.user_refit                 # 10, 50 and 200 comparisons, 300 refits each
    python -m benchmarks.user_refit --repeats 1000 --json

The model has the service's bootstrap shape (PAL variant a, K=4, 384-d MiniLM inputs, latent 64,
hidden 256; D = 1 + 4 + 6 + 64 = 75 coefficients). Inputs are the user's stored comparisons as
the service holds them (vectors in memory, answer texts from the history). Timed per refit, on one
thread: `logits` (PAL's few-shot fit alone, what a refit cost before the residual) and `total`
(`UserModel.fit_user`: PAL's logits, the named features, the residual's Laplace fit and covariance,
and the state's msgpack encoding written to the users table). Prints median and p99 in ms. The named
features of a stored answer are cached after its first refit (`text_features`), as in the service.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.user import UserModel

ANSWERS = [
    "Sure thing! Here are a few ideas:\n- Go for a walk\n- Read a book",
    "Certainly. A balanced plan would include rest, some exercise and time with friends.",
    "Try a short hike.",
    "There are many ways to think about this, and it's worth weighing each of them before you decide!",
]


def service_shaped_user_model() -> UserModel:
    """A user model over an untrained PAL of the service's bootstrap shape (variant a, K = 4, 384-d,
    latent 64), on one torch thread: what a refit or a pair choice costs, not what it learns."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return UserModel(PALModel(PALConfig(variant="a", k=4, input_dim=384, latent_dim=64, hidden=256)), population="bench")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    um = service_shaped_user_model()
    rng = np.random.default_rng(0)
    out = {}
    for n in args.sizes:
        prompt, chosen, rejected = (rng.normal(size=(n, 384)).astype(np.float32) for _ in range(3))
        chosen_t = [ANSWERS[i % 4] + f" ({i})" for i in range(n)]
        rejected_t = [ANSWERS[(i + 1) % 4] + f" ({i})" for i in range(n)]
        times = {"logits": [], "total": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            um.fit_logits(prompt, chosen, rejected, prior_logits=np.zeros(4))
            t1 = time.perf_counter()
            um.fit_user(prompt, chosen, rejected, chosen_t, rejected_t, prior_logits=np.zeros(4))[1].encode()  # a refit
            t2 = time.perf_counter()
            times["logits"].append((t1 - t0) * 1000)
            times["total"].append((t2 - t1) * 1000)
        out[str(n)] = {k: {"median_ms": round(float(np.median(v)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3)} for k, v in times.items()}
    print(f"refit of one user ({args.repeats} refits per size, 1 thread; D = {um.dim} residual coefficients)")
    print(f"{'comparisons':>11s} {'PAL logits only':>18s} {'whole refit':>18s}   (median/p99 ms)")
    for n, row in out.items():
        cells = " ".join(f"{row[k]['median_ms']:>8.2f}/{row[k]['p99_ms']:<8.2f}" for k in ("logits", "total"))
        print(f"{n:>11s} {cells}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
