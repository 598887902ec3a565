"""What the frozen trunk saves an FSPO step on SmolLM2-135M (CPU), side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/fspo_trunk.py --batch-size 8 --lora-layers 4 --repeats 2

The same persona episodes (4 shots) and the same LoRA (top `--lora-layers` layers), three ways:
- whole model: pi and pi_ref each run all layers on every step (the path without a trunk),
- trunk, first visit: the frozen layers run once for both, then the head twice (policy, reference),
- trunk, kept: a batch seen before (later epochs) runs the head only.
Prints seconds per step (median over `--repeats`) and the ratios to the whole-model path.
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
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lora-layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from pluralign.data.splits import by_user
    from pluralign.embed.models import load_smollm2
    from pluralign.evaluation import EvalConfig, load_protocol
    from pluralign.losses import dpo_loss
    from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, ScoredRows, add_lora, pair_batch, training_episodes

    protocol = load_protocol(EvalConfig(protocol="persona", data_dir=args.data_dir, groups=2, seed=0))
    config = FSPOConfig(shots=4, loss="dpo", lora_layers=args.lora_layers, batch_size=args.batch_size)
    episodes = training_episodes(by_user(protocol.seen.train), 4, args.batch_size, 0)
    model, tokenizer = load_smollm2()
    policy = add_lora(model, config)
    reference = ReferencePolicy(policy)
    batch = pair_batch(tokenizer, episodes, config)
    b = len(episodes)

    def step(rows: ScoredRows) -> None:
        policy.train()
        logp = rows.policy_logprobs(policy)
        loss = dpo_loss(logp[:b], logp[b:], rows.reference[:b], rows.reference[b:], config.beta).mean()
        policy.zero_grad(set_to_none=True)
        loss.backward()

    def whole() -> None:
        step(ScoredRows(batch, None, None, reference.logprobs(batch)))

    def first_visit() -> None:
        step(ScoredRows.build(reference, batch))

    kept_rows = ScoredRows.build(reference, batch)

    def kept() -> None:
        step(kept_rows)

    timings = {}
    for name, fn in [("whole_model", whole), ("trunk_first_visit", first_visit), ("trunk_kept", kept)]:
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
        timings[name] = statistics.median(seconds)
    tokens = int(batch.attention_mask.sum())
    print(json.dumps({
        "batch_episodes": b, "rows": 2 * b, "tokens": tokens, "lora_layers": args.lora_layers,
        "layers": policy.config.num_hidden_layers, "threads": torch.get_num_threads(),
        "seconds_per_step": timings,
        "speedup_first_visit": timings["whole_model"] / timings["trunk_first_visit"],
        "speedup_kept": timings["whole_model"] / timings["trunk_kept"],
    }, indent=1))


if __name__ == "__main__":
    main()
