"""MaxMin vs single-reward policy on a majority/minority population, judged by each group's own rule.

    OMP_NUM_THREADS=1 python -m benchmarks.maxmin_policy --majority 0.8 --seeds 0 1 2 --json
    OMP_NUM_THREADS=1 python -m benchmarks.maxmin_policy --majority 0.8 0.9 --steps 60 --every 15 --seeds 0 1 2 --out benchmarks/results/maxmin.json

For each seed (the population, EM, the base model's sampled answers and the LoRA's initialization
and batches all follow it):

1. SmolLM2-135M-Instruct (or `--base-model DIR`) answers the training, validation and test
   questions (sampled, short). Three disjoint topic sets: 80 training questions, 24 validation, 48
   test (each topic in both templates).
2. A population of 100 users (majority `enthusiastic`, minority `concise`; see
   pluralign/policy/style_groups.py) compares variants of the training answers.
3. EM learns reward heads from those unlabelled comparisons: K=2 (MaxMin) and K=1 (single reward).
4. Each training question's four candidates are scored by min over the normalized heads (MaxMin)
   or by the single head; `--pairing best` (default) pairs the top-scoring candidate against each
   other one, `--pairing all` pairs every two candidates whose scores differ (written to
   WORK/seed-S/pairs-*.jsonl, the input of `pluralign train maxmin`).
5. A LoRA is trained on each ranking with identical settings. At step 0, every --every steps and at
   the end it answers the validation and the test questions; each group's win rate against the
   base model's answers is measured with that group's rule (ties count half).

Model selection (validation only): with `--select validation` (default) the policy reported at
step S is the checkpoint at or before S with the best validation score of its own objective: the
worst group's validation win rate for MaxMin, the population's (share-weighted) validation win rate
for the single reward; the test questions never choose anything. `--select last` reports the
weights at step S as they are.

Figures per step, over seeds and test questions (benchmarks/intervals.py): each group's win rate
and the MaxMin-minus-single differences `majority_gap` (enthusiastic) and `minority_gain`
(concise): mean, each seed's figure, the standard deviation over seeds, and a 95% bootstrap interval
for the mean over seeds, resampling test questions (the same ones in every seed): `interval`, what
`--json` prints (also the envelope of the per-seed intervals, `seed_interval`, in `--out`). The bar
(benchmarks/bars.py) needs the interval's lower end and every seed's own figure to clear it, so one
seed's failure shows. The last line with `--json` is
`{"steps": {STEP: {"majority_gap": [lo, hi], "minority_gain": [lo, hi]}}}` for one majority share
(for several, `{"majority": {"0.8": {"steps": ...}, ...}}`); `--out FILE` writes the full summary.
"""

from __future__ import annotations

import argparse
import json
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


# topics for choosing checkpoints only, disjoint from both lists above's training and test halves
VALIDATION_TOPICS = [
    "bamboo", "octopuses", "lighthouses", "kites", "origami", "waterfalls", "submarines", "umbrellas", "pianos",
    "sunflowers", "caves", "fireflies",
]


def questions() -> tuple[list[str], list[str], list[str]]:
    """Training (80), validation (24) and test (48) questions on disjoint topics, each topic in both templates."""
    def ask(topics):
        return [t.format(x) for x in topics for t in TEMPLATES]

    return ask(TOPICS[:40]), ask(VALIDATION_TOPICS), ask(TOPICS[40:])


def candidates_and_rewards(prompts, answers, heads):
    from pluralign.policy.style_groups import answer_features, style_variants

    for prompt, answer in zip(prompts, answers, strict=True):
        cands = sorted(set(style_variants(answer).values()))
        feats = answer_features(cands)
        yield prompt, cands, heads.rewards(torch.ones_like(feats), feats).cpu().numpy()  # (n, K)


# sampling seed of each split's answers, base and policy alike, relative to the run's seed: the test
# answers keep the offset of the single-seed runs recorded before (BENCHMARKS.md, issue 5)
SAMPLING_SEED_OFFSET = {"train": 0, "test": 1, "val": 2}


def selection_score(objective: str, rates: dict[str, float], shares: dict[str, float]) -> float:
    """A checkpoint's validation score under its own objective: the worst group's win rate (MaxMin)
    or the population's share-weighted win rate (single reward)."""
    if objective == "maxmin":
        return min(rates[g] for g in shares)
    return sum(shares[g] * rates[g] for g in shares)


def load_base(folder: str | None):
    """(model, tokenizer): SmolLM2-135M-Instruct, or a causal LM saved with save_pretrained in `folder`."""
    if folder is None:
        from pluralign.embed.models import load_smollm2

        return load_smollm2()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pluralign.device import default_device

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder).to(default_device()).eval()
    model.config.name_or_path = str(folder)
    return model, tokenizer


def base_answers(work: Path, splits: dict[str, list[str]], seed: int, max_new_tokens: int, base_model: str | None) -> dict[str, list[str]]:
    """The base model's sampled answers per split, cached in WORK (one file per seed and length)."""
    from pluralign.policy.maxmin import generate

    cache = work / f"base-answers-{max_new_tokens}-seed{seed}.json"
    answers = json.loads(cache.read_text()) if cache.exists() else {}
    loaded = None
    for part, prompts in splits.items():
        if answers.get(f"{part}_questions") != prompts:  # a cache from another question list
            loaded = loaded or load_base(base_model)
            model, tokenizer = loaded
            answers[part] = generate(model, tokenizer, prompts, max_new_tokens, seed=seed + SAMPLING_SEED_OFFSET[part])
            answers[f"{part}_questions"] = prompts
            cache.write_text(json.dumps(answers, indent=1))
    return {part: answers[part] for part in splits}


def run_seed(args, seed: int, majority: float, splits: dict[str, list[str]], work: Path) -> list[dict]:
    """Train every objective for one seed and majority share; returns one result per objective."""
    from sklearn.metrics import adjusted_rand_score

    from pluralign.data.io import write_jsonl
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
    from pluralign.policy.style_groups import exclamations, feature_pairs, length, preference_pairs, win_scores
    from pluralign.reward.em import EMConfig, EMMixture

    answers = base_answers(work, splits, seed, args.max_new_tokens, args.base_model)
    shares = {"enthusiastic": majority, "concise": round(1 - majority, 6)}
    comparisons = preference_pairs(splits["train"], answers["train"], shares, users=args.users, pairs_per_user=12, seed=seed)
    batch = feature_pairs(comparisons)
    truth = {r.user_id: r.attributes["group"] for r in comparisons}
    results = []
    for objective in args.objectives:
        k = {"single": 1, "maxmin": 2}[objective]
        heads = EMMixture(EMConfig(k=k, restarts=4, seed=seed))
        heads.fit(batch, batch.select([]))
        clusters = heads.user_clusters()
        ari = adjusted_rand_score([truth[u] for u in batch.users], [clusters[u] for u in batch.users]) if k > 1 else None
        pairs = []
        for prompt, cands, rewards in candidates_and_rewards(splits["train"], answers["train"], heads):
            pairs += ranked_pairs(prompt, cands, maxmin_scores(rewards), source=f"{objective}-{k}-heads", pairing=PAIRINGS[args.pairing])
        tag = f"{objective}-{round(majority * 100)}"
        write_jsonl(pairs, work / f"pairs-{tag}.jsonl")

        config = MaxMinConfig(objective=objective, beta=args.beta, lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_layers=args.lora_layers, chosen_nll_weight=args.nll, seed=seed)
        base, tokenizer = load_base(args.base_model)  # a fresh base: peft wraps it in place
        policy = with_lora(base, config)
        curve: list[dict] = []
        best: dict = {}

        def measure(step, model, curve=curve, best=best, tokenizer=tokenizer, tag=tag, objective=objective):
            from peft import get_peft_model_state_dict

            if step == 0:  # the fresh LoRA is the identity (B = 0): its samples are the base's, same seeds
                said = {part: answers[part] for part in ("val", "test")}
            else:  # the base's seeds per split (base_answers), so a policy that changed nothing ties everywhere
                said = {part: generate(model, tokenizer, splits[part], args.max_new_tokens, seed=seed + SAMPLING_SEED_OFFSET[part])
                        for part in ("val", "test")}
            val = {g: sum(w) / len(w) for g, w in win_scores(said["val"], answers["val"]).items()}
            score = selection_score(objective, val, shares)
            if not best or score > best["score"]:  # the earliest best checkpoint is kept
                best.update(step=step, score=score, test=win_scores(said["test"], answers["test"]), said=said["test"],
                            weights={n: t.detach().clone() for n, t in get_peft_model_state_dict(model).items()})
            last = win_scores(said["test"], answers["test"])
            shown = best["test"] if args.select == "validation" else last
            shown_said = best["said"] if args.select == "validation" else said["test"]
            curve.append({
                "step": step, "selected_step": best["step"] if args.select == "validation" else step,
                "val": val, "val_score": score, "test_scores": shown, "last_test_scores": last,
                "chars": sum(map(length, shown_said)) / len(shown_said), "exclaims": sum(map(exclamations, shown_said)) / len(shown_said),
                "sample": shown_said[0],
            })
            rates = {g: sum(w) / len(w) for g, w in shown.items()}
            print(f"  seed {seed} {tag} step {step:3d} (reports step {curve[-1]['selected_step']}): test win enthusiastic {rates['enthusiastic']:.2f} "
                  f"concise {rates['concise']:.2f} | val {val['enthusiastic']:.2f}/{val['concise']:.2f} | {shown_said[0][:60]!r}", flush=True)

        log = train_maxmin(policy, tokenize_pairs(pairs, tokenizer, config.max_length), config, callback=measure, every=args.every)
        if args.select == "validation":
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(policy, best["weights"])
        meta = PolicyMeta(schema_version=1, kind="maxmin-lora", base_model=base_model_id(base), objective=objective, heads=k, steps=best.get("step", config.steps) if args.select == "validation" else config.steps, beta=config.beta, lora_r=config.lora_r)
        save_policy(policy, work / f"policy-{tag}", meta)
        results.append({
            "seed": seed, "majority": majority, "objective": objective, "heads": k, "pairing": args.pairing, "ari": ari, "pairs": len(pairs),
            "curve": curve, "seconds_per_step": log.seconds_per_step, "peak_memory_mb": log.peak_memory_mb, "loss": log.loss,
        })
        print(f"  seed {seed} {tag}: {len(pairs)} pairs, {log.seconds_per_step:.2f} s/step, peak {log.peak_memory_mb:.0f} MB, ARI {ari}", flush=True)
    return results


def summarize_runs(results: list[dict], seeds: list[int], majority: float) -> dict:
    """Per step: each objective's win rates and the MaxMin-minus-single gaps over seeds and test questions."""
    from benchmarks.intervals import summarize

    runs = {(r["seed"], r["objective"]): r for r in results if r["majority"] == majority}
    objectives = sorted({o for _, o in runs})
    steps = [c["step"] for c in runs[(seeds[0], objectives[0])]["curve"] if c["step"] > 0]
    out: dict = {"majority": majority, "seeds": seeds, "steps": {}}
    for step in steps:
        def scores(objective, group, step=step):
            return [next(c for c in runs[(s, objective)]["curve"] if c["step"] == step)["test_scores"][group] for s in seeds]

        row: dict = {}
        for objective in objectives:
            row[objective] = {g: summarize(scores(objective, g), seeds) for g in ("enthusiastic", "concise")}
            row[objective]["selected_step"] = {str(s): next(c for c in runs[(s, objective)]["curve"] if c["step"] == step)["selected_step"] for s in seeds}
        if set(objectives) == {"maxmin", "single"}:
            for name, group in (("majority_gap", "enthusiastic"), ("minority_gain", "concise")):
                row[name] = summarize([[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(scores("maxmin", group), scores("single", group), strict=True)], seeds)
        out["steps"][str(step)] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--majority", type=float, nargs="+", default=[0.8, 0.9], help="majority shares to run")
    parser.add_argument("--objectives", nargs="+", default=["single", "maxmin"], choices=["single", "maxmin"])
    parser.add_argument("--pairing", default="best", choices=["best", "all"], help="best: the objective's top candidate vs each other; all: every pair")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=15, help="evaluate win rates every N steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--nll", type=float, default=1.0, help="weight of the chosen answer's NLL next to DPO")
    parser.add_argument("--lora-layers", type=int, default=4, help="adapt only the last N layers (0: all)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--select", default="validation", choices=["validation", "last"], help="validation: report each step's best checkpoint so far on the validation questions; last: the weights at that step")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N questions of each split (0: all; a cheaper, noisier setting)")
    parser.add_argument("--users", type=int, default=100, help="simulated users comparing training answers")
    parser.add_argument("--base-model", default=None, help="a causal LM folder (save_pretrained) instead of SmolLM2-135M-Instruct")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    parser.add_argument("--work", default="runs/maxmin-bench")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: --seed)")
    parser.add_argument("--seed", type=int, default=0, help="one seed (the same as --seeds N)")
    parser.add_argument("--out", default=None, help="write the summary over seeds (JSON) to this file")
    parser.add_argument("--json", action="store_true", help="print the contract line last: {\"steps\": {STEP: {\"majority_gap\": [lo, hi], \"minority_gain\": [lo, hi]}}}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else [args.seed]
    if args.json and set(args.objectives) != {"single", "maxmin"}:
        parser.error("--json reports MaxMin minus single: run both --objectives")

    train_q, val_q, test_q = questions()
    limit = args.limit or None
    splits = {"train": train_q[:limit], "val": val_q[:limit], "test": test_q[:limit]}
    print(f"questions: {len(splits['train'])} train, {len(splits['val'])} validation, {len(splits['test'])} test; seeds {seeds}; max {args.max_new_tokens} new tokens")
    results: list[dict] = []
    setting = {k: v for k, v in vars(args).items() if k not in ("json", "out", "work", "seed", "seeds")} | {"questions": {p: len(q) for p, q in splits.items()}}
    for done, seed in enumerate(seeds, 1):
        work = Path(args.work) / f"seed-{seed}"
        work.mkdir(parents=True, exist_ok=True)
        for majority in args.majority:
            results += run_seed(args, seed, majority, splits, work)
            (Path(args.work) / "results.json").write_text(json.dumps(results, indent=1))
        # the summary over the seeds finished so far: a run cut short still leaves its figures
        summaries = {str(m): summarize_runs(results, seeds[:done], m) for m in args.majority}
        full = {"benchmark": "maxmin_policy", "setting": setting | {"seeds": seeds[:done]}, "majority": summaries,
                "seconds_per_step": {f"{r['seed']}-{r['objective']}-{r['majority']}": r["seconds_per_step"] for r in results}}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(full, indent=1) + "\n")

    print(f"\nwin rate vs the base over {len(seeds)} seed(s) x {len(splits['test'])} test questions: mean +- sd over seeds [95% interval] (per seed), {'validation-selected checkpoint' if args.select == 'validation' else 'last weights'}")
    print("| majority/minority | step | policy | enthusiastic (majority) | concise (minority) |")
    print("|---|---|---|---|---|")
    for m, summary in summaries.items():
        split = f"{round(float(m) * 100)}/{round((1 - float(m)) * 100)}"
        for step, row in summary["steps"].items():
            for name in [o for o in ("single", "maxmin", "majority_gap", "minority_gain") if o in row]:
                cells = [row[name]] * 2 if name in ("majority_gap", "minority_gain") else [row[name]["enthusiastic"], row[name]["concise"]]
                text = [f"{c['mean']:+.2f} +- {c['sd_over_seeds']:.2f} [{c['interval'][0]:+.2f}, {c['interval'][1]:+.2f}] ({' / '.join(f'{v:+.2f}' for v in c['per_seed'].values())})" for c in cells]
                if name == "majority_gap":
                    text[1] = ""
                if name == "minority_gain":
                    text[0] = ""
                print(f"| {split} | {step} | {name} | {text[0]} | {text[1]} |")
    if args.json:
        def contract(summary):
            return {"steps": {step: {name: row[name]["interval"] for name in ("majority_gap", "minority_gain")} for step, row in summary["steps"].items()}}

        line = contract(summaries[str(args.majority[0])]) if len(args.majority) == 1 else {"majority": {m: contract(s) for m, s in summaries.items()}}
        print(json.dumps(line))


if __name__ == "__main__":
    main()
