"""Personalized reward accuracy on unseen users: FSPO vs the untrained base vs DPO without shots,
and how much a per-user adapter adds on top of FSPO for one user.

    OMP_NUM_THREADS=1 python benchmarks/fspo_reward.py --population persona --groups 2 --steps 30 --eval-users 6 --eval-per-user 4

Prints one JSON object. Accuracy is the share of held-out comparisons of unseen users whose chosen
answer gets the higher reward given the user's first k support comparisons as shots:
- base: log pi_base(y | shots, x) (the untrained model reading the same shots; no reference),
- fspo: beta * log(pi_fspo / pi_base)(y | shots, x), trained with `--shots` and scored at each k,
- dpo-no-shots: beta * log(pi_dpo / pi_base)(y | x), trained on the same users without shots.

With `--lora-layers N` the bottom layers are a frozen trunk shared by the policy and pi_ref: its
states are computed once per batch (and kept when `--episodes` makes batches come round again),
and the base's scores are pi_ref's, taken in the same pass as FSPO's. Each accuracy comes with its
binomial standard error.

Over seeds (issue 17): each seed draws its own population split, unseen users, training episodes
and LoRA initialization. `--seeds 0 1 2 --summary FILE` runs them one after another; seeds run as
separate processes (`--seed N --out RUN.json`) are combined afterwards with
`--summarize RUN.json ... --summary FILE`. The summary (benchmarks/results/fspo-persona.json, read
by benchmarks/bars.py) gives, per k, the base's and FSPO's accuracy and their difference per unseen
user: mean over seeds, each seed's figure, the spread over seeds, and a 95% bootstrap interval
resampling each seed's users on their own (benchmarks/intervals.py `summarize_unpaired`; the units
are users, the mean of each user's held-out comparisons). Nothing here is chosen on the test users:
the 240-step schedule is fixed and the last weights are scored.

    OMP_NUM_THREADS=1 python benchmarks/fspo_reward.py --data-dir ../shared/data --population persona --groups 2 \
        --shots 4 --eval-shots 4,8 --steps 240 --batch-size 32 --queries 8 --lora-layers 8 --lr 1e-3 --loss dpo \
        --beta 0.1 --eval-users 20 --eval-per-user 16 --skip-no-shot --seed 1 --out /tmp/fspo-seed1.json
    python benchmarks/fspo_reward.py --summarize /tmp/fspo-seed0.json /tmp/fspo-seed1.json /tmp/fspo-seed2.json \
        --summary benchmarks/results/fspo-persona.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import msgspec
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks.intervals, run as a script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--population", default="persona", choices=["persona", "ukp"])
    parser.add_argument("--groups", type=int, default=2)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--shots", type=int, default=4, help="shots during FSPO training")
    parser.add_argument("--eval-shots", default="4,8")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=0, help="distinct training episodes (0: steps x batch size)")
    parser.add_argument("--queries", type=int, default=1, help="held-out comparisons per set of shots in training (packed in one row)")
    parser.add_argument("--skip-fspo", action="store_true", help="train and score only the DPO-without-shots baseline")
    parser.add_argument("--skip-no-shot", action="store_true", help="skip the DPO-without-shots baseline")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--loss", default="ipo")
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-layers", type=int, default=0)
    parser.add_argument("--eval-users", type=int, default=6)
    parser.add_argument("--eval-per-user", type=int, default=4)
    parser.add_argument("--adapter-comparisons", default="", help="e.g. 8,16: per-user adapter sizes to try")
    parser.add_argument("--adapter-steps", type=int, default=10)
    parser.add_argument("--adapter-users", type=int, default=2, help="unseen users that get their own adapter")
    parser.add_argument("--out", default="", help="also write the report with every held-out comparison's outcome here (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run one after another (default: --seed)")
    parser.add_argument("--summarize", nargs="+", default=None, metavar="RUN", help="only combine per-seed reports written with --out")
    parser.add_argument("--summary", default="", help="write the summary over seeds (JSON) here")
    args = parser.parse_args()
    if args.summarize:
        reports = [json.loads(Path(f).read_text()) for f in args.summarize]
    else:
        reports, seeds = [], args.seeds or [args.seed]
        for seed in seeds:
            report = run(args, seed)
            if args.out:
                out = Path(args.out) if len(seeds) == 1 else Path(args.out).with_suffix(f".seed{seed}.json")
                out.write_text(json.dumps(report, indent=1))
            print(json.dumps({k: v for k, v in report.items() if k != "outcomes"}, indent=1), flush=True)
            reports.append(report)
    if args.summary:
        summary = summarize_seeds(reports)
        Path(args.summary).write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))


FIXED_SETTING = ("population", "groups", "eval_users", "pairs_per_k")  # must agree between the seeds' reports


def user_means(user_ids: list[str], wins: list[float]) -> dict[str, float]:
    """Mean of each user's wins, in first-seen order: {user: mean}."""
    per: dict[str, list[float]] = {}
    for u, w in zip(user_ids, wins, strict=True):
        per.setdefault(u, []).append(w)
    return {u: sum(w) / len(w) for u, w in per.items()}


def summarize_seeds(reports: list[dict]) -> dict:
    """Per k, base and FSPO accuracy and their difference over seeds, units = unseen users
    (benchmarks/intervals.py `summarize_unpaired`). Raises ValueError when a report lacks the
    per-comparison outcomes (`--out`), two reports share a seed, or their settings differ."""
    from benchmarks.intervals import summarize_unpaired

    if not reports:
        raise ValueError("no report to summarize")
    seeds = [r.get("seed") for r in reports]
    if None in seeds or any("outcomes" not in r for r in reports):
        raise ValueError("every report needs its seed and per-comparison outcomes (written with --out)")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed appears twice: {seeds}")
    config = {k: v for k, v in reports[0]["config"].items() if k != "seed"}
    for r in reports[1:]:
        other = {k: v for k, v in r["config"].items() if k != "seed"}
        differ = [k for k in FIXED_SETTING if r.get(k) != reports[0].get(k)] + [k for k in config if other.get(k) != config[k]]
        if differ:
            raise ValueError(f"seed {r['seed']}'s setting differs from seed {seeds[0]}'s in {differ}")
    out: dict = {"benchmark": "fspo_reward", "setting": {**{k: reports[0][k] for k in FIXED_SETTING}, "config": config}, "seeds": seeds, "k": {}}
    for key in reports[0]["outcomes"]:
        per = {name: [] for name in ("base", "fspo", "gain")}
        for r in reports:
            o = r["outcomes"][key]
            base, fspo = user_means(o["user"], o["base"]), user_means(o["user"], o["fspo"])
            per["base"].append(list(base.values()))
            per["fspo"].append(list(fspo.values()))
            per["gain"].append([fspo[u] - base[u] for u in base])
        out["k"][key.removeprefix("k")] = {name: summarize_unpaired(v, seeds) for name, v in per.items()}
    # per-user adapters over FSPO (--adapter-comparisons): each user's accuracy with FSPO alone and with the adapter
    out["user_adapters"] = {
        str(r["seed"]): {k.removeprefix("user_adapter_").removesuffix("_per_user"): v for k, v in r.items() if k.startswith("user_adapter_n") and k.endswith("_per_user")}
        for r in reports
    }
    out["train_seconds"] = {str(r["seed"]): r.get("fspo_train_seconds") for r in reports}
    return out


def run(args, seed: int) -> dict:
    """Train and score FSPO (and the baselines asked for) for one seed; the report, with every
    held-out comparison's outcome under "outcomes"."""

    from pluralign.data.splits import by_user
    from pluralign.embed.models import load_smollm2
    from pluralign.evaluation import EvalConfig, load_protocol
    from pluralign.policy.fspo import (
        FSPOConfig,
        ReferencePolicy,
        add_lora,
        episode,
        episode_logprobs,
        personalized_rewards,
        query_episodes,
        reward_accuracy,
        train,
        training_episodes,
    )

    torch.manual_seed(seed)
    protocol = load_protocol(
        EvalConfig(protocol=args.population, data_dir=args.data_dir, groups=args.groups, seed=seed)
    )
    train_users = by_user(protocol.seen.train)
    ks = [int(k) for k in args.eval_shots.split(",")]
    eval_users = sorted(u for u in protocol.unseen.query if len(protocol.unseen.support[u]) >= max(ks))
    # interleave groups so a small --eval-users still covers both sides of an opposed population
    eval_users = sorted(eval_users, key=lambda u: (u.split("-u")[-1], u))[: args.eval_users]
    query = {u: protocol.unseen.query[u] for u in eval_users}
    tests = {k: query_episodes(protocol.unseen.support, query, k, per_user=args.eval_per_user) for k in ks}
    config = FSPOConfig(
        shots=args.shots,
        loss=args.loss,
        beta=args.beta,
        lora_rank=args.lora_rank,
        lora_layers=args.lora_layers,
        lr=args.lr,
        steps=args.steps,
        batch_size=args.batch_size,
        queries=args.queries,
        seed=seed,
    )
    report: dict = {
        "population": args.population,
        "groups": args.groups,
        "eval_users": len(eval_users),
        "pairs_per_k": len(tests[ks[0]]),
        "config": dataclasses.asdict(config),
    }

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def wins_of(chosen, rejected) -> list[float]:
        """1 where the chosen answer gets the higher reward, 0.5 on a tie, else 0; (N,) per episode."""
        return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).tolist()

    def accuracy(chosen, rejected) -> tuple[float, float]:
        wins = wins_of(chosen, rejected)
        acc = sum(wins) / max(1, len(wins))
        return acc, (acc * (1 - acc) / max(1, len(wins))) ** 0.5

    n_episodes = args.episodes or config.steps * config.batch_size
    model, tokenizer = load_smollm2()
    if not args.skip_no_shot:  # DPO without shots, on the same users and steps
        no_shot = dataclasses.replace(config, shots=0)
        dpo = add_lora(model, no_shot)
        ref = ReferencePolicy(dpo)
        stats = train(dpo, ref, tokenizer, training_episodes(train_users, 0, n_episodes, seed, queries=config.queries), no_shot)
        plain = [msgspec.structs.replace(e, shots=[]) for e in tests[ks[0]]]
        report["dpo_no_shots_acc"], report["dpo_no_shots_se"] = accuracy(*personalized_rewards(dpo, ref, tokenizer, plain, no_shot))
        report["dpo_no_shots_train_seconds"] = stats["train_seconds"]
        log(f"dpo no shots: {report['dpo_no_shots_acc']:.3f} ({stats['train_seconds']:.0f}s)")
        model = dpo.unload()  # the bare base model again, for FSPO
    report["seed"] = seed
    if args.skip_fspo:
        return report

    fspo = add_lora(model, config)
    ref = ReferencePolicy(fspo)
    episodes = training_episodes(train_users, config.shots, n_episodes, seed, queries=config.queries)
    report["train_episodes"] = len(episodes)
    stats = train(fspo, ref, tokenizer, episodes, config, on_step=lambda s, st: log(f"fspo step {s} {st}"))
    report["fspo_train_seconds"] = stats["train_seconds"]
    report["fspo_final_train_reward_acc"] = stats["final_train_reward_acc"]
    outcomes: dict[str, dict[str, list]] = {}  # per k: each held-out comparison's user and wins (for intervals over users)
    for k in ks:
        start = time.perf_counter()
        logp, ref_logp = episode_logprobs(fspo, ref, tokenizer, tests[k], config)  # (N, 2) each
        reward = config.beta * (logp - ref_logp)
        report[f"base_acc_k{k}"], report[f"base_se_k{k}"] = accuracy(ref_logp[:, 0], ref_logp[:, 1])
        report[f"fspo_acc_k{k}"], report[f"fspo_se_k{k}"] = accuracy(reward[:, 0], reward[:, 1])
        outcomes[f"k{k}"] = {
            "user": [e.user_id for e in tests[k]],
            "base": wins_of(ref_logp[:, 0], ref_logp[:, 1]),
            "fspo": wins_of(reward[:, 0], reward[:, 1]),
        }
        log(f"k={k}: base {report[f'base_acc_k{k}']:.3f} fspo {report[f'fspo_acc_k{k}']:.3f} ({time.perf_counter() - start:.0f}s)")

    # per-user adapters on top of FSPO: DPO on n of one user's support comparisons (FSPO's shots in context)
    for n in [int(x) for x in args.adapter_comparisons.split(",") if x]:
        accs = {"fspo": [], "fspo+adapter": []}
        for user in eval_users[: args.adapter_users]:
            pairs = protocol.unseen.support[user][:n]
            shots = pairs[: config.shots]
            user_eps = [episode([p for p in pairs if p is not q][: config.shots], q) for q in pairs]
            test = [episode(shots, q) for q in protocol.unseen.query[user][: 2 * args.eval_per_user]]
            accs["fspo"].append(reward_accuracy(fspo, ref, tokenizer, test, config))
            saved = {k: v.detach().clone() for k, v in fspo.named_parameters() if v.requires_grad}
            train(fspo, ref, tokenizer, user_eps, dataclasses.replace(config, steps=args.adapter_steps))
            accs["fspo+adapter"].append(reward_accuracy(fspo, ref, tokenizer, test, config))
            with torch.no_grad():  # back to the population FSPO weights for the next user
                for k, v in fspo.named_parameters():
                    if k in saved:
                        v.copy_(saved[k])
        report[f"user_adapter_n{n}"] = {k: sum(v) / len(v) for k, v in accs.items()}
        report[f"user_adapter_n{n}_per_user"] = accs
        log(f"user adapters n={n}: {report[f'user_adapter_n{n}']}")
    report["outcomes"] = outcomes
    return report


if __name__ == "__main__":
    main()
