"""MaxMin vs single-reward policy on a majority/minority population, judged by each group's own rule.

    OMP_NUM_THREADS=1 python -m benchmarks.maxmin_policy --majority 0.8 0.9 --steps 30 --work runs/maxmin-bench

1. SmolLM2-135M-Instruct answers the training and evaluation questions (sampled, short).
2. A population of 100 users (majority `enthusiastic`, minority `concise`; see
   pluralign/policy/style_groups.py) compares variants of the training answers.
3. EM learns reward heads from those unlabelled comparisons: K=2 (MaxMin) and K=1 (single reward).
4. Each training question's four candidates are scored by min over the normalized heads (MaxMin)
   or by the single head; `--pairing best` (default) pairs the top-scoring candidate against each
   other one, `--pairing all` pairs every two candidates whose scores differ (written to
   WORK/pairs-*.jsonl, the input of `pluralign train maxmin`).
5. A LoRA is trained on each ranking with identical settings; at step 0, every --every steps and at
   the end, it answers the 48 held-out questions and each group's win rate against the base model's
   answers is measured with that group's rule (ties count half), with its standard error.
Prints a markdown table, the curves, and seconds / peak memory per training step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

TOPICS = [
    "rainbows", "volcanoes", "honey bees", "the moon", "tides", "earthquakes", "photosynthesis", "clouds",
    "lightning", "glaciers", "coral reefs", "comets", "deserts", "rivers", "owls", "penguins", "whales",
    "mushrooms", "bread", "cheese", "coffee", "tea", "chocolate", "bicycles", "trains", "airplanes",
    "bridges", "castles", "pyramids", "libraries", "maps", "clocks", "compasses", "batteries", "magnets",
    "telescopes", "microscopes", "vaccines", "sleep", "dreams", "memory", "music", "painting", "chess",
    "soccer", "marathons", "gardening", "recycling", "wind power", "solar panels", "the internet",
    "email", "passwords", "robots", "rockets", "satellites", "dinosaurs", "fossils", "diamonds", "salt",
    "snowflakes", "rain", "thunder", "hurricanes",
]
TEMPLATES = ["Tell me about {}.", "What should I know about {}?"]


def questions() -> tuple[list[str], list[str]]:
    """Training (80) and evaluation (48) questions on disjoint topics, each topic in both templates."""
    train_topics, eval_topics = TOPICS[:40], TOPICS[40:]
    train = [t.format(x) for x in train_topics for t in TEMPLATES]
    evaluate = [t.format(x) for x in eval_topics for t in TEMPLATES]
    return train, evaluate


def candidates_and_rewards(prompts, answers, heads):
    from pluralign.policy.style_groups import answer_features, style_variants

    for prompt, answer in zip(prompts, answers, strict=True):
        cands = sorted(set(style_variants(answer).values()))
        feats = answer_features(cands)
        yield prompt, cands, heads.rewards(torch.ones_like(feats), feats).cpu().numpy()  # (n, K)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--majority", type=float, nargs="+", default=[0.8, 0.9], help="majority shares to run")
    parser.add_argument("--objectives", nargs="+", default=["single", "maxmin"], choices=["single", "maxmin"])
    parser.add_argument("--pairing", default="best", choices=["best", "all"], help="best: the objective's top candidate vs each other; all: every pair")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=10, help="evaluate win rates every N steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--nll", type=float, default=1.0, help="weight of the chosen answer's NLL next to DPO")
    parser.add_argument("--lora-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--work", default="runs/maxmin-bench")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sklearn.metrics import adjusted_rand_score

    from pluralign.data.io import write_jsonl
    from pluralign.embed.models import load_smollm2
    from pluralign.policy.maxmin import (
        PAIRINGS,
        MaxMinConfig,
        PolicyMeta,
        base_model_id,
        generate,
        maxmin_scores,
        ranked_pairs,
        save_policy,
        tokenize_pairs,
        train_maxmin,
        with_lora,
    )
    from pluralign.policy.style_groups import (
        exclamations,
        feature_pairs,
        length,
        preference_pairs,
        win_rate_errors,
        win_rates,
    )
    from pluralign.reward.em import EMConfig, EMMixture

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train_q, eval_q = questions()
    base, tokenizer = load_smollm2()
    answers_file = work / f"base-answers-{args.max_new_tokens}.json"
    answers = json.loads(answers_file.read_text()) if answers_file.exists() else {}
    for part, prompts, seed in [("train", train_q, args.seed), ("eval", eval_q, args.seed + 1)]:
        if len(answers.get(part, [])) != len(prompts):  # a cache from an older question list
            t0 = time.perf_counter()
            answers[part] = generate(base, tokenizer, prompts, args.max_new_tokens, seed=seed)
            answers[f"{part}_seconds"] = time.perf_counter() - t0
            answers_file.write_text(json.dumps(answers, indent=1))
    base_eval = answers["eval"]
    print(f"base answers: {len(train_q)} train, {len(eval_q)} eval questions, max {args.max_new_tokens} new tokens")

    results = []
    curve_at_start: dict = {}
    for majority in args.majority:
        shares = {"enthusiastic": majority, "concise": round(1 - majority, 6)}
        comparisons = preference_pairs(train_q, answers["train"], shares, users=100, pairs_per_user=12, seed=args.seed)
        batch = feature_pairs(comparisons)
        truth = {r.user_id: r.attributes["group"] for r in comparisons}
        for objective, k in [(o, {"single": 1, "maxmin": 2}[o]) for o in args.objectives]:
            heads = EMMixture(EMConfig(k=k, restarts=4, seed=args.seed))
            heads.fit(batch, batch.select([]))
            clusters = heads.user_clusters()
            ari = adjusted_rand_score([truth[u] for u in batch.users], [clusters[u] for u in batch.users]) if k > 1 else None
            pairs = []
            for prompt, cands, rewards in candidates_and_rewards(train_q, answers["train"], heads):
                pairs += ranked_pairs(prompt, cands, maxmin_scores(rewards), source=f"{objective}-{k}-heads", pairing=PAIRINGS[args.pairing])
            tag = f"{objective}-{round(majority * 100)}"
            write_jsonl(pairs, work / f"pairs-{tag}.jsonl")

            config = MaxMinConfig(objective=objective, beta=args.beta, lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_layers=args.lora_layers, chosen_nll_weight=args.nll, seed=args.seed)
            base, tokenizer = load_smollm2()  # a fresh base: peft wraps it in place
            policy = with_lora(base, config)
            curve = []

            def measure(step, model, curve=curve, tokenizer=tokenizer, tag=tag):
                if step == 0 and results:  # the untrained LoRA is the base: its answers are the base's
                    curve.append({**curve_at_start, "step": 0})
                    return
                said = generate(model, tokenizer, eval_q, args.max_new_tokens, seed=args.seed + 1)
                rates = win_rates(said, base_eval)
                errors = {f"{g}_se": e for g, e in win_rate_errors(said, base_eval).items()}
                curve.append({"step": step, **rates, **errors, "chars": sum(map(length, said)) / len(said), "exclaims": sum(map(exclamations, said)) / len(said), "sample": said[0]})
                print(f"  {tag} step {step:3d}: win enthusiastic {rates['enthusiastic']:.2f} concise {rates['concise']:.2f} | {said[0][:70]!r}", flush=True)

            log = train_maxmin(policy, tokenize_pairs(pairs, tokenizer, config.max_length), config, callback=measure, every=args.every)
            meta = PolicyMeta(schema_version=1, kind="maxmin-lora", base_model=base_model_id(base), objective=objective, heads=k, steps=config.steps, beta=config.beta, lora_r=config.lora_r)
            save_policy(policy, work / f"policy-{tag}", meta)
            results.append({
                "majority": majority, "objective": objective, "heads": k, "pairing": args.pairing, "ari": ari, "pairs": len(pairs), "curve": curve,
                "seconds_per_step": log.seconds_per_step, "peak_memory_mb": log.peak_memory_mb, "loss": log.loss,
            })
            curve_at_start.update(curve[0])
            print(f"  {tag}: {len(pairs)} pairs, {log.seconds_per_step:.2f} s/step, peak {log.peak_memory_mb:.0f} MB, ARI {ari}", flush=True)
            (work / "results.json").write_text(json.dumps(results, indent=1))

    print("\n| majority/minority | policy | enthusiastic (majority) win | concise (minority) win | chars | '!' | s/step | peak MB |")
    print("|---|---|---|---|---|---|---|---|")  # win rates as rate +- standard error over the held-out questions
    for r in results:
        end = r["curve"][-1]
        split = f"{round(r['majority'] * 100)}/{round((1 - r['majority']) * 100)}"
        print(f"| {split} | {r['objective']} (K={r['heads']}) | {end['enthusiastic']:.2f} +- {end['enthusiastic_se']:.2f} | {end['concise']:.2f} +- {end['concise_se']:.2f} | {end['chars']:.0f} | {end['exclaims']:.1f} | {r['seconds_per_step']:.2f} | {r['peak_memory_mb']:.0f} |")
    print("\ncurves (step: majority win / minority win)")
    for r in results:
        points = ", ".join(f"{c['step']}: {c['enthusiastic']:.2f}/{c['concise']:.2f}" for c in r["curve"])
        print(f"  {round(r['majority'] * 100)}/{round((1 - r['majority']) * 100)} {r['objective']}: {points}")


if __name__ == "__main__":
    main()
