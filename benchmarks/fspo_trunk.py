"""What the frozen trunk and packing save an FSPO step on SmolLM2-135M (CPU), side by side in one process.

    OMP_NUM_THREADS=2 python benchmarks/fspo_trunk.py --batch-size 16 --queries 8 --lora-layers 8 --repeats 2

Every path trains on `--batch-size` held-out persona comparisons with 4 shots each and the same LoRA
(top `--lora-layers` layers); one DPO step (forward, loss, backward):
- row per answer, whole model: each (shots, answer) its own row; pi and pi_ref each run all layers,
- row per answer, trunk: the frozen layers run once for both, then the head twice (policy, reference),
- packed, 1 query: an episode's chosen and rejected answers share one row holding its shots once,
- packed, Q queries: Q held-out comparisons of one user share one row (`--queries`),
- packed, Q queries, kept: that batch seen before (later epochs), so the head runs alone.
Prints seconds per step (median over `--repeats`), tokens through the model, and each path's speed-up
over the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from pluralign.data.splits import by_user
    from pluralign.embed.models import load_smollm2
    from pluralign.evaluation import EvalConfig, load_protocol
    from pluralign.losses import dpo_loss
    from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, ScoredRows, add_lora, pair_batch, training_episodes
    from pluralign.policy.logprobs import encode_responses

    protocol = load_protocol(EvalConfig(protocol="persona", data_dir=args.data_dir, groups=2, seed=0))
    users = by_user(protocol.seen.train)
    config = FSPOConfig(shots=4, loss="dpo", lora_layers=args.lora_layers, batch_size=args.batch_size)
    single = training_episodes(users, 4, args.batch_size, 0)  # distinct shots per episode
    grouped = training_episodes(users, 4, args.batch_size, 0, queries=args.queries)
    model, tokenizer = load_smollm2()
    policy = add_lora(model, config)
    reference = ReferencePolicy(policy)
    b = args.batch_size
    rows_per_answer = encode_responses(
        tokenizer, [e.messages() for e in single] * 2, [e.chosen for e in single] + [e.rejected for e in single]
    )
    packed_single, packed_grouped = pair_batch(tokenizer, single, config), pair_batch(tokenizer, grouped, config)

    def step(rows: ScoredRows) -> None:
        policy.train()
        logp = rows.policy_logprobs(policy)
        loss = dpo_loss(logp[:b], logp[b:], rows.reference[:b], rows.reference[b:], config.beta).mean()
        policy.zero_grad(set_to_none=True)
        loss.backward()

    kept_rows = ScoredRows.build(reference, packed_grouped)
    paths = {
        "row_per_answer_whole_model": lambda: step(ScoredRows(rows_per_answer, None, None, reference.logprobs(rows_per_answer))),
        "row_per_answer_trunk": lambda: step(ScoredRows.build(reference, rows_per_answer)),
        "packed_1_query_trunk": lambda: step(ScoredRows.build(reference, packed_single)),
        f"packed_{args.queries}_queries_trunk": lambda: step(ScoredRows.build(reference, packed_grouped)),
        f"packed_{args.queries}_queries_kept": lambda: step(kept_rows),
    }
    timings = {}
    for name, fn in paths.items():
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        timings[name] = statistics.median(seconds)
    baseline = timings["row_per_answer_whole_model"]
    print(json.dumps({
        "held_out_pairs_per_step": b, "queries": args.queries, "lora_layers": args.lora_layers,
        "layers": policy.config.num_hidden_layers, "threads": torch.get_num_threads(),
        "row_tokens": {
            "row_per_answer": int(rows_per_answer.attention_mask.sum()),
            "packed_1_query": real_tokens(packed_single),
            f"packed_{args.queries}_queries": real_tokens(packed_grouped),
        },
        "seconds_per_step": timings,
        "speedup": {name: baseline / t for name, t in timings.items()},
    }, indent=1))


def real_tokens(batch) -> int:
    """Tokens of a packed batch that are not padding (a pad attends to itself only, and only it to itself)."""
    attends, attended = batch.allowed.sum(-1), batch.allowed.sum(-2)
    return int(((attends > 1) | (attended > 1)).sum())


if __name__ == "__main__":
    main()
