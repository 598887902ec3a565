"""FSPO vs an untrained model vs DPO without shots, and per-user adapters on top, on the toy
colour-groups population with a tiny random model (what fits a 2-core CPU in a few minutes).

    OMP_NUM_THREADS=1 python benchmarks/fspo_colours.py --steps 30 --seed 0

Prints JSON. Accuracy is on unseen users' held-out comparisons (two groups' favourites), given k
shots from each user's history. Per-user adapters: LoRA on the FSPO model, DPO on n of the user's
history comparisons, scored on 8 held-out comparisons of that user, averaged over 8 users.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import time

import msgspec
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--adapter-comparisons", default="4,16")
    parser.add_argument("--adapter-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pluralign.data.colour_groups import held_out, history
    from pluralign.embed.models import smollm2_dir
    from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, add_lora, episode, reward_accuracy, train

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    torch.manual_seed(args.seed)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden,
            intermediate_size=2 * args.hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    rng = random.Random(args.seed)
    seen = [f"seen-{i}" for i in range(16)]
    new = [f"new-{i}" for i in range(8)]
    train_eps = [
        episode(history(u, 4, rng), held_out(u, 1, rng)[0]) for u in (seen[i % 16] for i in range(8 * args.steps))
    ]
    user_history = {u: history(u, 32, rng) for u in new}
    user_test = {u: held_out(u, 8, rng) for u in new}
    tests = {k: [episode(user_history[u][:k], q) for u in new for q in user_test[u][:4]] for k in (4, 8)}
    config = FSPOConfig(
        shots=4, loss="dpo", beta=1.0, full_finetune=True, lr=1e-2, steps=args.steps, batch_size=8, seed=args.seed
    )
    report: dict = {"steps": args.steps, "hidden": args.hidden, "pairs_per_k": len(tests[4])}

    for k in (4, 8):
        report[f"untrained_likelihood_acc_k{k}"] = reward_accuracy(base, None, tokenizer, tests[k], config)

    start = time.perf_counter()
    no_shot = copy.deepcopy(base)
    ref = ReferencePolicy(no_shot, full_copy=base)
    train(
        no_shot,
        ref,
        tokenizer,
        [msgspec.structs.replace(e, shots=[]) for e in train_eps],
        dataclasses.replace(config, shots=0),
    )
    report["dpo_no_shots_acc"] = reward_accuracy(
        no_shot, ref, tokenizer, [msgspec.structs.replace(e, shots=[]) for e in tests[4]], config
    )
    report["dpo_no_shots_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    fspo = copy.deepcopy(base)
    ref = ReferencePolicy(fspo, full_copy=base)
    train(fspo, ref, tokenizer, train_eps, config)
    report["fspo_seconds"] = time.perf_counter() - start
    for k in (4, 8):
        report[f"fspo_acc_k{k}"] = reward_accuracy(fspo, ref, tokenizer, tests[k], config)

    adapter_config = dataclasses.replace(config, full_finetune=False, lora_rank=8, lr=1e-2, steps=args.adapter_steps)
    for n in [int(x) for x in args.adapter_comparisons.split(",") if x]:
        before, after = [], []
        for u in new:
            test = [episode(user_history[u][:4], q) for q in user_test[u]]
            before.append(reward_accuracy(fspo, ref, tokenizer, test, config))
            pairs = user_history[u][:n]
            mine = [
                episode(random.Random(i).sample([p for p in pairs if p is not q], min(4, n - 1)), q)
                for i, q in enumerate(pairs)
            ]
            policy = add_lora(fspo, adapter_config)
            user_ref = ReferencePolicy(policy, full_copy=base)  # rewards stay relative to the base model
            train(policy, user_ref, tokenizer, mine, adapter_config)
            after.append(reward_accuracy(policy, user_ref, tokenizer, test, config))
            fspo = policy.unload()  # FSPO weights without this user's LoRA, for the next user
        report[f"user_adapter_n{n}"] = {"fspo": sum(before) / len(before), "fspo_plus_adapter": sum(after) / len(after)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
