"""`pluralign train maxmin`: a LoRA policy trained with DPO on comparisons ranked by a MaxMin reward.

    pluralign train maxmin --pairs /tmp/mm80maxmin/pairs-maxmin-80.jsonl --objective maxmin --heads 2 --out runs/maxmin-80
    pluralign train maxmin --pairs /tmp/mm80single/pairs-single-80.jsonl --objective single --heads 1 --out runs/single-80 \\
        --steps 30 --batch-size 4 --lr 2e-3 --chosen-nll 1.0 --lora-layers 4

`--pairs` holds comparisons (pluralign JSONL/Parquet, or TRL prompt/chosen/rejected) already ranked
by the objective's reward: `benchmarks/maxmin_policy.py` writes them, scoring each prompt's
candidates by min over the EM group heads (maxmin) or by one pooled head (single) and pairing the
top-scoring candidate against each other one (`--pairing best`, its default) or every two
(`--pairing all`); `pluralign.policy.maxmin.ranked_pairs` does the same for your own candidates. Ties
(`"tie": true`) are not trained on, as by every trainer (the report counts them, `ties_skipped`). The base model is
SmolLM2-135M-Instruct unless `--base` names another causal LM folder. Each comparison is read as at most 160 tokens
(`max_length`), its prompt's last 80 (`max_prompt_length`) and the answer's first within what is left. Writes
OUT/adapter (peft), OUT/meta.json (schema version, base model id, objective, heads, steps, beta, LoRA rank and the
two lengths) and OUT/metrics.json (loss per step, seconds and peak memory per step).
"""

from __future__ import annotations

import argparse
import sys

from training.common import SEED_HELP, check_base, check_out, number, print_json, read_preference_file, seed_number

MAXMIN_FILES = ("meta.json", "adapter", "metrics.json")  # pluralign.policy.maxmin.save_policy's, and this command's metrics


def load_base(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pluralign.device import default_device
    from pluralign.embed.models import load_smollm2

    if name == "smollm2":
        return load_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name).to(default_device()).eval(), tokenizer


def run(args: argparse.Namespace) -> int:
    if args.heads is None:
        args.heads = 1 if args.objective == "single" else 2
    if args.objective == "single" and args.heads != 1:  # recorded in meta.json: an artifact that contradicts itself
        raise ValueError(f"--heads {args.heads}: a single-reward ranking (--objective single) has 1 head; "
                         "give --heads 1 (or --objective maxmin)")
    import msgspec
    from tqdm import tqdm

    from pluralign.policy.maxmin import (
        SCHEMA_VERSION,
        MaxMinConfig,
        PolicyMeta,
        base_model_id,
        save_policy,
        tokenize_pairs,
        train_maxmin,
        trained_lengths,
        with_lora,
    )

    check_base(args.base)
    check_out(args.out, MAXMIN_FILES, "MaxMin policy", SCHEMA_VERSION)  # before any training: a wrong --out costs nothing
    rows = read_preference_file("--pairs", args.pairs)
    # a tie prefers neither answer: DPO on it would push the policy toward whichever one is `chosen`
    records = [r for r in rows if not r.tie]
    if not records:
        raise ValueError(f"--pairs {args.pairs}: no strict comparisons to train on, only {len(rows)} ties (ties are not trained on)")
    config = MaxMinConfig(objective=args.objective, beta=args.beta, lr=args.lr, steps=args.steps, batch_size=args.batch_size, lora_r=args.lora_r, lora_layers=args.lora_layers, chosen_nll_weight=args.chosen_nll, seed=args.seed)
    base, tokenizer = load_base(args.base)
    base_id = base_model_id(base)
    tokens = tokenize_pairs(records, tokenizer, max_length=config.max_length, max_prompt_length=config.max_prompt_length)
    policy = with_lora(base, config)
    bar = tqdm(total=config.steps, desc=f"{args.objective} DPO", file=sys.stderr, disable=args.quiet)
    log = train_maxmin(policy, tokens, config, step_callback=lambda step, loss: (bar.update(), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    lengths = trained_lengths(config)
    meta = PolicyMeta(
        schema_version=1, kind="maxmin-lora", base_model=base_id, objective=args.objective, heads=args.heads,
        steps=config.steps, beta=config.beta, lora_r=config.lora_r, **lengths,
    )
    report = {
        "objective": args.objective, "heads": args.heads, "base_model": base_id, "pairs": len(records),
        "ties_skipped": len(rows) - len(records), **lengths,
        "steps": config.steps, "final_loss": log.loss[-1], "loss": log.loss, "reward_accuracy": log.reward_accuracy,
        "seconds_per_step": log.seconds_per_step, "peak_memory_mb": log.peak_memory_mb, "out": str(args.out),
    }
    # the metrics go in with the policy: a kill or another save never pairs one run's with another's
    save_policy(policy, args.out, meta, extra={"metrics.json": msgspec.json.format(msgspec.json.encode(report))})
    print_json(report)
    return 0


def register(sub) -> None:
    p = sub.add_parser("maxmin", help="LoRA policy by DPO on MaxMin-ranked (or single-reward-ranked) comparisons", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="ranked comparisons (JSONL or Parquet)")
    p.add_argument("--objective", default="maxmin", choices=["maxmin", "single"], help="the reward that ranked the pairs (recorded)")
    p.add_argument("--heads", type=number(int, minimum=1), default=None,
                   help="reward heads behind the ranking (recorded; default 2 for maxmin, 1 for single)")
    p.add_argument("--base", default="smollm2", help="smollm2 (default) or a local causal-LM folder")
    p.add_argument("--steps", type=number(int, minimum=1), default=60, help="optimizer steps (default %(default)s)")
    p.add_argument("--batch-size", type=number(int, minimum=1), default=8, help="comparisons per step (default %(default)s)")
    p.add_argument("--lr", type=number(float, above=0), default=5e-4, help="AdamW learning rate of the LoRA weights (default %(default)g)")
    p.add_argument("--beta", type=number(float, above=0), default=0.1,
                   help="DPO's beta: how far the policy may move from the base model (smaller: further; default %(default)g)")
    p.add_argument("--lora-r", type=number(int, minimum=1), default=8, help="LoRA rank (default %(default)s)")
    p.add_argument("--lora-layers", type=number(int, minimum=0), default=0, help="adapt only the last N layers (0: all; 4 is quick on CPU)")
    p.add_argument("--chosen-nll", type=number(float, minimum=0), default=0.0, help="weight of the chosen answer's NLL next to DPO (RPO)")
    p.add_argument("--seed", type=seed_number, default=0, help=SEED_HELP)
    p.add_argument("--out", required=True, help="artifact folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
