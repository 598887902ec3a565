"""Why `pluralign.compare` almost never disappears with the real models (issue 16, session 48).

Simulated users with known rules (`benchmarks.closed_loop.RULES`) answer n comparisons of real
generated answers (the closed loop's cached generations, `--generation-cache`), in the real user
model's coordinates (MiniLM, a PAL checkpoint trained as the service bootstraps it, the named
features and PAL's latent direction). After n = 0, 10, 25, 50, 100, 200 answers the user's Laplace
posterior is fitted (`fit_posterior`, the model's prior) and, on held-out candidate sets of the same
kind (4 answers each, 6 pairs), the script records:

- `bits`: the median and 90th percentile over the held-out sets of the best pair's bits, by the
  criterion `most_informative_pair` uses (`--target`), the figure chat's `compare_min_bits` (0.1) reads;
- `asked`: the share of held-out sets whose best pair carries at least 0.1 bits (chat would show `compare`);
- `pool_bits`: onboarding's `worth_asking` read with the held-out sets as a supplied `pool` (each set an item of 4
  answers to its prompt; `worth_asking` is the figure >= 0.1): `bald`, the bits of BALD's best pair of the pool (the
  rule of releases before session 50), `best`, the most any pair carries about which answer of its own set is best
  (`best_information`, chat's gate);
- `share`: of the best pairs' margin variance z' S z, the part each block of coefficients carries
  (`prototypes`: pal_origin and the K prototype weights, `features`: the named features, `latent`:
  PAL's latent direction, `cross`: the covariances between blocks), summed over the held-out sets;
- `tied`: the share of those best pairs whose two answers the user's rule scores alike (the user
  has no preference between them: in the closed loop such a pair gets no choice);
- `curvature`: the mean of p (1 - p) over the n answered comparisons at the posterior mode, what
  each answer adds to the posterior precision (times z z'); 0.25 for an answer the model could not
  predict, near 0 for one it already predicted;
- `feature_sd`: the median posterior sd of the named features' weights (prior: `feature_scale`, 5);
- `prior_share`: the same split of the best pairs' margin variance under the prior (n = 0), and
  `latent_left`: the latent block's variance along the best pairs' latent differences after n
  answers as a fraction of its prior value (1.0: the answers taught nothing in those directions).

With `--ties` the user also answers the pairs their rule scores alike, as ties (`ties_answered`),
and the posterior is fitted on them too (`fit_posterior`'s `tied`, Davidson's tie likelihood, as a
refit fits a user's stored ties). `--target best` chooses the pair by `best_information` (chat's `compare_target = best`)
instead of BALD; `--gate best` reads `bits` and `asked` by `best_information` whatever chose the
pair, as chat's `compare` decides whether to ask (without it, by `--target`).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 python -m benchmarks.compare_bits \\
        --generation-cache runs/gen_fast.pkl --pal runs/pal --json            # add --target best, --ties, --gate best

`--loop U` runs chat's `compare` offline instead (`active_loop`): U simulated users per rule and pair
chooser (BALD, best, random), each answering the pair shown every round (a tie as "no preference"),
asked only while the best gate lets `compare` through, with the held-out pick rate after 5, 10, 20
and 40 rounds: which criterion should pick the pair (BENCHMARKS.md, session 49).

The PAL checkpoint is trained into `--pal` when that folder is empty (about a minute, as the
service's first start). The last line with `--json` is `{"rules": {RULE: {n: {...}}}}`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import time
from pathlib import Path

import numpy as np

COUNTS = (0, 10, 25, 50, 100, 200)
RULE_NAMES = ("short", "lists", "formal", "persona_majority")


def candidate_sets(cache: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """{"style": [(prompt, 4 texts)], "persona": [...]} from the closed loop's generation cache."""
    entries = pickle.loads(cache.read_bytes())
    out: dict[str, list[tuple[str, list[str]]]] = {"style": [], "persona": []}
    for key, value in entries.items():
        if key[0] != "styled":
            continue
        prompt = json.loads(key[1])[-1]["content"]
        texts = [c.text for c in value[0]]
        kind = "persona" if prompt.startswith("Do you agree") else "style"
        out[kind].append((prompt, texts))
    return out


def blocks(names: list[str]) -> dict[str, np.ndarray]:
    from pluralign.user.features import FEATURE_NAMES

    named = np.array([n in FEATURE_NAMES for n in names])
    latent = np.array([n.startswith("latent_") for n in names])
    return {"prototypes": ~named & ~latent, "features": named, "latent": latent}


def variance_split(z: np.ndarray, cov: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, float]:
    """z (D,) a pair's difference: z' S z split into each block's own z_B' S_BB z_B and the rest (`cross`)."""
    total = float(z @ cov @ z)
    out = {name: float(z[m] @ cov[np.ix_(m, m)] @ z[m]) for name, m in parts.items()}
    out["cross"] = total - sum(out.values())
    return out


def answered(sets_x, sets_score, held: int, count: int, seed: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    """(strict rows (N, D), tied rows (M, D)): `count` comparisons drawn with replacement from the pairs of
    the sets after the first `held`; without `ties` only pairs the rule does not score alike (as the
    closed loop sends no choice for them), with `ties` every pair, a tie answered as a tie."""
    from pluralign.user.active import all_pairs

    pairs = [(s, i, j) for s in range(held, len(sets_x)) for i, j in zip(*all_pairs(4), strict=True)
             if ties or sets_score[s][i] != sets_score[s][j]]
    rng = random.Random(seed)
    order = [pairs[rng.randrange(len(pairs))] for _ in range(count)]
    dim = sets_x[0].shape[1]
    strict = [(sets_x[s][i] - sets_x[s][j]) * (1 if sets_score[s][i] > sets_score[s][j] else -1)
              for s, i, j in order if sets_score[s][i] != sets_score[s][j]]
    tied = [sets_x[s][i] - sets_x[s][j] for s, i, j in order if sets_score[s][i] == sets_score[s][j]]
    return np.array(strict).reshape(-1, dim), np.array(tied).reshape(-1, dim)


def measure(model, sets_x: list[np.ndarray], sets_score: list[list[float]], rule_seed: int, counts, target: str,
            ties: bool = False, gate: str | None = None) -> dict[int, dict]:
    """For one rule: the figures after each count of answers (module docstring)."""
    from scipy.special import expit

    from pluralign.user.active import all_pairs, best_information, most_informative_pair, pair_information
    from pluralign.user.model import fit_posterior

    held = len(sets_x) // 3
    parts = blocks(model.names)
    mean0, prec0 = model.prior_mean(), model.prior_precision()
    cov0 = np.diag(1.0 / prec0)
    out = {}
    for n in counts:
        strict, tied = answered(sets_x, sets_score, held, n, rule_seed, ties)
        if not n:
            mean, cov = mean0, cov0
        else:
            mean, cov = fit_posterior(strict, mean0, prec0, tied=tied)
        bits, split, prior_split, lat_now, lat_prior = [], dict.fromkeys((*parts, "cross"), 0.0), dict.fromkeys((*parts, "cross"), 0.0), 0.0, 0.0
        on_tied, pool_bald, pool_best = [], 0.0, 0.0
        for x, score in zip(sets_x[:held], sets_score[:held], strict=True):
            pool_bald = max(pool_bald, float(pair_information(x[all_pairs(len(x))[0]] - x[all_pairs(len(x))[1]], mean, cov).max()))
            pool_best = max(pool_best, float(best_information(x, *all_pairs(len(x)), mean, cov).max()))
            choice = most_informative_pair(x, mean, cov, 0.0, target)
            if choice is None:
                bits.append(0.0)
                continue
            bits.append(choice.bits if gate in (None, target) else float(best_information(x, *all_pairs(len(x)), mean, cov).max()))
            on_tied.append(score[choice.first] == score[choice.second])
            z = x[choice.first] - x[choice.second]
            for k, v in variance_split(z, cov, parts).items():
                split[k] += v
            for k, v in variance_split(z, cov0, parts).items():
                prior_split[k] += v
            m = parts["latent"]
            lat_now += float(z[m] @ cov[np.ix_(m, m)] @ z[m])
            lat_prior += float(z[m] @ cov0[np.ix_(m, m)] @ z[m])
        total, ptotal = sum(split.values()) or 1.0, sum(prior_split.values()) or 1.0
        b = np.array(bits)
        fitted = expit(strict @ mean)  # (N,) P(the answer given) at the mode
        out[n] = {"bits_median": round(float(np.median(b)), 3), "bits_p90": round(float(np.quantile(b, 0.9)), 3),
                  "asked": round(float((b >= 0.1).mean()), 2),
                  "pool_bits": {"bald": round(pool_bald, 3), "best": round(pool_best, 3)},
                  "share": {k: round(v / total, 2) for k, v in split.items()},
                  "prior_share": {k: round(v / ptotal, 2) for k, v in prior_split.items()},
                  "latent_left": round(lat_now / lat_prior, 2) if lat_prior else None,
                  "tied": round(float(np.mean(on_tied)), 2) if on_tied else None,
                  "ties_answered": len(tied),
                  "curvature": round(float((fitted * (1 - fitted)).mean()), 4) if len(strict) else None,
                  "feature_sd": round(float(np.median(np.sqrt(np.diag(cov)[parts["features"]]))), 2),
                  "train_acc": round(float((fitted > 0.5).mean()), 2) if len(strict) else None}
    return out


LOOP_CHECKS = (5, 10, 20, 40)  # rounds after which `active_loop` reads the held-out pick rate


def active_loop(model, sets_x: list[np.ndarray], sets_score: list[list[float]], chooser: str, seed: int,
                rounds: int = max(LOOP_CHECKS)) -> dict:
    """Chat's `compare` offline, one simulated user: each round a set of the last two thirds (in an order drawn
    from `seed`) is served, the pair `chooser` names is shown (`coefficients` or `best`: `most_informative_pair`
    gated by `best` at 0.1 bits, as chat asks; `random`: two at random, always asked), and the user answers it by
    their rule, "no preference" (a tie) where it scores the two alike; the posterior is refitted with the ties
    (`fit_posterior`). Returns, after each of LOOP_CHECKS rounds, the held-out pick rate (the share of the first
    third's sets, all-tied ones left out, whose best-scored answer under the posterior mean is one the rule
    scores highest), the answers given, how many of them were ties, and how many rounds asked."""
    from pluralign.user.active import most_informative_pair
    from pluralign.user.model import fit_posterior

    held = len(sets_x) // 3
    rng = random.Random(seed)
    train = list(range(held, len(sets_x)))
    rng.shuffle(train)
    mean0, prec0 = model.prior_mean(), model.prior_precision()
    mean, cov = mean0, np.diag(1.0 / prec0)
    strict, tied, asked, out = [], [], 0, {}
    scored = [s for s in range(held) if max(sets_score[s]) != min(sets_score[s])]
    for rnd in range(1, rounds + 1):
        s = train[(rnd - 1) % len(train)]
        x, score = sets_x[s], sets_score[s]
        if chooser == "random":
            pair = tuple(rng.sample(range(len(x)), 2))
        else:
            choice = most_informative_pair(x, mean, cov, 0.1, chooser, gate="best")
            pair = None if choice is None else (choice.first, choice.second)
        if pair is not None:
            asked += 1
            i, j = pair
            if score[i] == score[j]:
                tied.append(x[i] - x[j])
            else:
                strict.append((x[i] - x[j]) * (1 if score[i] > score[j] else -1))
            dim = x.shape[1]
            mean, cov = fit_posterior(np.array(strict).reshape(-1, dim), mean0, prec0, tied=np.array(tied).reshape(-1, dim))
        if rnd in LOOP_CHECKS:
            hits = [sets_score[h][int(np.argmax(sets_x[h] @ mean))] == max(sets_score[h]) for h in scored]
            out[rnd] = {"pick_rate": round(float(np.mean(hits)), 3), "answers": len(strict) + len(tied), "ties": len(tied), "asked": asked}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generation-cache", type=Path, required=True, help="the closed loop's cached generations (pickle)")
    parser.add_argument("--pal", type=Path, required=True, help="a PAL checkpoint folder (trained there when empty)")
    parser.add_argument("--shared-data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--rules", nargs="+", default=list(RULE_NAMES))
    parser.add_argument("--target", default="coefficients", help="`most_informative_pair`'s criterion")
    parser.add_argument("--ties", action="store_true",
                        help="the user also answers pairs their rule scores alike, as ties (Davidson's tie likelihood, `fit_posterior`'s `tied`)")
    parser.add_argument("--gate", default=None, choices=("best", "coefficients"),
                        help="the criterion `bits` and `asked` read (chat's: best); default: --target's")
    parser.add_argument("--loop", type=int, default=0,
                        help="instead: chat's compare offline (`active_loop`) for this many simulated users per rule and chooser")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks.closed_loop import RULES
    from pluralign.embed.encoders import SentenceEncoder
    from service.rewards import UserRewards

    start = time.time()
    encoder = SentenceEncoder()
    model = UserRewards.load_or_bootstrap(args.pal, encoder, args.shared_data).user_model
    sets = candidate_sets(args.generation_cache)
    coords = {}
    for kind, items in sets.items():
        prompts = encoder.encode([p for p, _ in items])
        answers = encoder.encode([t for _, texts in items for t in texts]).reshape(len(items), 4, -1)
        coords[kind] = [model.candidates(prompts[i], answers[i], texts).x for i, (_, texts) in enumerate(items)]
    result = {}
    if args.loop:
        for rule in args.rules:
            kind = "persona" if rule.startswith("persona") else "style"
            scores = [[RULES[rule](t) for t in texts] for _, texts in sets[kind]]
            result[rule] = {}
            for chooser in ("coefficients", "best", "random"):
                runs = [active_loop(model, coords[kind], scores, chooser, seed) for seed in range(args.loop)]
                result[rule][chooser] = {n: {k: round(float(np.mean([r[n][k] for r in runs])), 3) for k in runs[0][n]} for n in LOOP_CHECKS}
                print(f"{rule:18s} {chooser:12s} " + "  ".join(f"{n}: {v['pick_rate']:.2f} ({v['ties']:.1f} ties, asked {v['asked']:.1f})"
                                                           for n, v in result[rule][chooser].items()))
        print(f"# {time.time() - start:.0f} s, loop of {args.loop} users per rule and chooser")
        if args.json:
            print(json.dumps({"loop": result}))
        return
    for r, rule in enumerate(args.rules):
        kind = "persona" if rule.startswith("persona") else "style"
        scores = [[RULES[rule](t) for t in texts] for _, texts in sets[kind]]
        result[rule] = measure(model, coords[kind], scores, r, COUNTS, args.target, args.ties, args.gate)
        for n, row in result[rule].items():
            print(f"{rule:18s} n={n:3d} {json.dumps(row)}")
    print(f"# {time.time() - start:.0f} s, {sum(map(len, sets.values()))} candidate sets, target {args.target}, ties {args.ties}, "
          f"gate {args.gate or args.target}")
    if args.json:
        print(json.dumps({"rules": result}))


if __name__ == "__main__":
    main()
