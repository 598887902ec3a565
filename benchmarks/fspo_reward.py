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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import msgspec
import torch


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
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

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

    torch.manual_seed(args.seed)
    protocol = load_protocol(
        EvalConfig(protocol=args.population, data_dir=args.data_dir, groups=args.groups, seed=args.seed)
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
        seed=args.seed,
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

    def accuracy(chosen, rejected) -> tuple[float, float]:
        wins = (chosen > rejected).float() + 0.5 * (chosen == rejected).float()
        acc = wins.mean().item()
        return acc, (acc * (1 - acc) / max(1, len(wins))) ** 0.5

    n_episodes = args.episodes or config.steps * config.batch_size
    model, tokenizer = load_smollm2()
    if not args.skip_no_shot:  # DPO without shots, on the same users and steps
        no_shot = dataclasses.replace(config, shots=0)
        dpo = add_lora(model, no_shot)
        ref = ReferencePolicy(dpo)
        stats = train(dpo, ref, tokenizer, training_episodes(train_users, 0, n_episodes, args.seed, queries=config.queries), no_shot)
        plain = [msgspec.structs.replace(e, shots=[]) for e in tests[ks[0]]]
        report["dpo_no_shots_acc"], report["dpo_no_shots_se"] = accuracy(*personalized_rewards(dpo, ref, tokenizer, plain, no_shot))
        report["dpo_no_shots_train_seconds"] = stats["train_seconds"]
        log(f"dpo no shots: {report['dpo_no_shots_acc']:.3f} ({stats['train_seconds']:.0f}s)")
        model = dpo.unload()  # the bare base model again, for FSPO
    if args.skip_fspo:
        print(json.dumps(report, indent=1))
        return

    fspo = add_lora(model, config)
    ref = ReferencePolicy(fspo)
    episodes = training_episodes(train_users, config.shots, n_episodes, args.seed, queries=config.queries)
    report["train_episodes"] = len(episodes)
    stats = train(fspo, ref, tokenizer, episodes, config, on_step=lambda s, st: log(f"fspo step {s} {st}"))
    report["fspo_train_seconds"] = stats["train_seconds"]
    report["fspo_final_train_reward_acc"] = stats["final_train_reward_acc"]
    for k in ks:
        start = time.perf_counter()
        logp, ref_logp = episode_logprobs(fspo, ref, tokenizer, tests[k], config)  # (N, 2) each
        reward = config.beta * (logp - ref_logp)
        report[f"base_acc_k{k}"], report[f"base_se_k{k}"] = accuracy(ref_logp[:, 0], ref_logp[:, 1])
        report[f"fspo_acc_k{k}"], report[f"fspo_se_k{k}"] = accuracy(reward[:, 0], reward[:, 1])
        log(f"k={k}: base {report[f'base_acc_k{k}']:.3f} fspo {report[f'fspo_acc_k{k}']:.3f} ({time.perf_counter() - start:.0f}s)")

    # per-user adapters on top of FSPO: DPO on n of one user's support comparisons (FSPO's shots in context)
    for n in [int(x) for x in args.adapter_comparisons.split(",") if x]:
        accs = {"fspo": [], "fspo+adapter": []}
        for user in eval_users[:2]:
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
        log(f"user adapters n={n}: {report[f'user_adapter_n{n}']}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
