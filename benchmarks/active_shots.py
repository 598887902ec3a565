"""Issue 16's offline bar with intervals: k actively chosen comparisons against 2k random ones, per user.

    OMP_NUM_THREADS=1 python -m benchmarks.active_shots --populations 4:0 5:2 --json
    OMP_NUM_THREADS=1 python -m benchmarks.active_shots --populations 4:0 5:2 --out benchmarks/results/active-shots.json

For each persona population (groups:seed), PAL + the user model (`pal-a+residual`) is trained on the
seen users once, as `pluralign eval` trains it. Each unseen user's accuracy on their query pairs is
then measured three ways for every k in `--shots`:

- `random_fit`: the pool's first k comparisons (the pool is in random order), fitted by the model
  (`prob_new_users`, what `unseen_acc_by_k` reports);
- `random_seen_users`: the same k comparisons, predicted by the seen users (`prob_new_users_particles`);
- `active`: k comparisons chosen by the information about which group of seen users the user is
  like, predicted by the seen users (`prob_new_users_active(..., target="group")`).

The bar compares `active` at k with both random forms at `--ratio` x k (2 against 4, 5 against 10).
Each comparison is a per-user paired difference; its 95% interval is a bootstrap over the unseen
users (benchmarks/intervals.py, one population = one "seed"), so a difference within the noise of
which users were drawn shows as an interval around 0. The bar counts as met only when the interval's
lower end is at least 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SHOTS = (2, 4, 5, 10)
PAIRS = ((2, 4), (5, 10))  # the bar's (active k, random k)


def per_user(prob: np.ndarray, query) -> dict[str, float]:
    """{user id: accuracy on their query pairs} for probabilities (Q,) of the query batch."""
    from pluralign.evaluation import accuracy, user_accuracy

    return {query.users[i]: acc for i, acc in user_accuracy(accuracy(prob), query.user.numpy()).items()}


def measure(model, protocol, encoder, shots=SHOTS) -> dict[str, dict[str, dict[str, float]]]:
    """Per k and way (`random_fit`, `random_seen_users`, `active`): {user id: query accuracy}, for a
    model already fitted on the protocol's seen users."""
    from pluralign.evaluation import unseen_batches, unseen_pool

    pool, query = unseen_pool(protocol, encoder)
    out = {}
    for k in shots:
        support, q = unseen_batches(protocol, encoder, k)
        active, _ = model.prob_new_users_active(pool, query, k, target="group")
        out[str(k)] = {
            "random_fit": per_user(model.prob_new_users(support, q), q),
            "random_seen_users": per_user(model.prob_new_users_particles(support, q), q),
            "active": per_user(active, query),
        }
    return out


def compare(values: dict, population_seed: int) -> dict:
    """The bar's paired differences, per (active k, random k) and random form: mean and interval."""
    from benchmarks.intervals import summarize

    rows = {}
    for k_active, k_random in PAIRS:
        if str(k_active) not in values or str(k_random) not in values:
            continue
        active = values[str(k_active)]["active"]
        users = sorted(active)
        for way in ("random_seen_users", "random_fit"):
            other = values[str(k_random)][way]
            diff = summarize([[active[u] - other[u] for u in users]], [population_seed])
            rows[f"{k_active} vs {k_random} {way}"] = {
                "active": float(np.mean([active[u] for u in users])), "random": float(np.mean([other[u] for u in users])),
                "difference": diff["mean"], "interval": diff["interval"], "users": len(users), "met": diff["interval"][0] >= 0.0,
            }
    return rows


def run_population(groups: int, seed: int, data_dir: str, encoder, unseen_users_per_group: int = 10, query_size: int = 20) -> dict:
    from pluralign.evaluation import EvalConfig, embed_pairs, load_protocol
    from pluralign.reward.registry import build_model

    start = time.perf_counter()
    protocol = load_protocol(EvalConfig(protocol="persona", data_dir=data_dir, groups=groups, seed=seed,
                                        unseen_users_per_group=unseen_users_per_group, query_size=query_size))
    seen_users = sorted({r.user_id for r in protocol.seen.train})
    attr = protocol.group_attribute
    model = build_model("pal-a+residual", k=None, seed=seed)
    model.fit(embed_pairs(protocol.seen.train, encoder, seen_users, attr), embed_pairs(protocol.seen.val, encoder, seen_users, attr))
    values = measure(model, protocol, encoder)
    return {"groups": groups, "seed": seed, "unseen_users": len(protocol.unseen.support), "query_size": query_size,
            "accuracy": {k: {way: float(np.mean(list(v.values()))) for way, v in ways.items()} for k, ways in values.items()},
            "bar": compare(values, seed), "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    import torch

    from benchmarks.bars import points, span
    from training.common import DEFAULT_DATA_DIR, cached_encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", nargs="+", default=["4:0", "5:2"], help="persona populations as GROUPS:SEED")
    parser.add_argument("--unseen-per-group", type=int, default=10, help="unseen users per group (the eval's default is 10; more users narrow the intervals)")
    parser.add_argument("--query-size", type=int, default=20, help="held-out query comparisons per unseen user (the eval's default is 20)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--cache", default=None, help="embedding cache file (default ~/.cache/pluralign)")
    parser.add_argument("--out", default=None, help="write the results (JSON) to this file")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line last")
    args = parser.parse_args(argv)
    if args.unseen_per_group < 1 or args.query_size < 1:
        parser.error(f"--unseen-per-group ({args.unseen_per_group}) and --query-size ({args.query_size}) must be >= 1")
    populations = []
    for text in args.populations:
        try:
            groups, seed = (int(x) for x in text.split(":"))
        except ValueError:
            parser.error(f"--populations: {text!r} is not GROUPS:SEED (e.g. 4:0)")
        if groups < 2:
            parser.error(f"--populations: {text!r} needs at least 2 groups")
        populations.append((groups, seed))
    torch.set_num_threads(1)
    encoder = cached_encoder(args)
    results = [run_population(g, s, args.data_dir, encoder, args.unseen_per_group, args.query_size) for g, s in populations]
    print("| population | comparison | active | random | difference [95% interval over users] | met |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for name, row in r["bar"].items():
            print(f"| g{r['groups']} s{r['seed']} | {name} | {row['active']:.3f} | {row['random']:.3f} | "
                  f"{points(row['difference'])} {span(row['interval'])} | {'yes' if row['met'] else 'no'} |")
    out = {"benchmark": "active_shots", "populations": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
