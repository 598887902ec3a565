"""Serving many per-user LoRA adapters on SmolLM2-135M: size, cold load, switch, mixed-batch speed.

    python benchmarks/adapter_serving.py --users 8 --new-tokens 16

Eight users each get a rank-8 adapter (all attention and MLP projections, random weights: speed
does not depend on what they learned), saved in the registry. Prints JSON: adapter size on disk,
cold load time into the pool, the per-request lookup once loaded, peft's set_adapter time (what a
one-adapter-at-a-time server pays per switch), and generated tokens/s of one mixed batch of all
users (peft `adapter_names`) against one call per user, with their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

PROMPTS = [
    "Give me one tip for staying focused.",
    "What should I cook tonight?",
    "Suggest a name for a cat.",
    "How do I start running?",
    "Recommend a book for a long flight.",
    "What is a good way to learn a language?",
    "Plan a short walk in a city.",
    "How can I sleep better?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args()

    from pluralign.embed.models import SMOLLM2_ID, load_smollm2
    from pluralign.policy.adapters import AdapterMeta, AdapterPool, AdapterRegistry, ModelHost
    from pluralign.policy.fspo import FSPOConfig, add_lora

    model, tokenizer = load_smollm2()
    root = tempfile.mkdtemp(prefix="adapters-")
    registry = AdapterRegistry(root)
    users = [("bench", f"user{i}") for i in range(args.users)]
    trainer = add_lora(model, FSPOConfig(lora_rank=args.rank))
    for i, (tenant, user) in enumerate(users):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in trainer.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        meta = AdapterMeta(kind="user", base_model=SMOLLM2_ID, shots=0, data_version="bench")
        registry.save(tenant, user, trainer, meta)
    base = trainer.unload()
    size = (registry.folder(*users[0]) / "adapter_model.safetensors").stat().st_size

    pool = AdapterPool(ModelHost(base), registry, SMOLLM2_ID, budget_bytes=1 << 30)
    cold = []
    for key in users:
        start = time.perf_counter()
        pool.adapter_for(*key)
        cold.append(time.perf_counter() - start)
    lookups = []
    for key in users * 3:
        start = time.perf_counter()
        pool.adapter_for(*key)
        lookups.append(time.perf_counter() - start)
    switches = []
    for name in list(pool.loaded) * 3:
        start = time.perf_counter()
        pool.model.set_adapter(name)
        switches.append(time.perf_counter() - start)

    conversations = [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(args.users)]
    gen = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    pool.generate(users[:1], conversations[:1], tokenizer, max_new_tokens=2)  # warm-up
    start = time.perf_counter()
    pool.generate(users, conversations, tokenizer, **gen)
    mixed = time.perf_counter() - start
    start = time.perf_counter()
    for key, conversation in zip(users, conversations, strict=True):
        pool.generate([key], [conversation], tokenizer, **gen)
    separate = time.perf_counter() - start
    tokens = args.users * args.new_tokens
    report = {
        "adapter_bytes_on_disk": size,
        "adapter_bytes_in_memory": pool.bytes_used // args.users,
        "cold_load_s_median": statistics.median(cold),
        "loaded_lookup_ms_median": 1000 * statistics.median(lookups),
        "set_adapter_ms_median": 1000 * statistics.median(switches),
        "mixed_batch_tokens_per_s": tokens / mixed,
        "separate_calls_tokens_per_s": tokens / separate,
        "mixed_over_separate": separate / mixed,
        "users": args.users,
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
