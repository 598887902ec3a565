"""EM over BT heads vs the baselines on persona populations (and UKP): accuracy, worst group, ARI.

    python -m benchmarks.em_groups --data-dir /work/shared/data

Each row trains a model with the evaluation protocol of `pluralign eval` (same split, same encoder,
same cache) and prints seen accuracy, worst-group accuracy, unseen accuracy at k = 1, 5, 20 and,
on persona populations, the ARI of the learned user clusters against the true groups.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--runs", nargs="+", default=["persona:4:em:4", "persona:4:em-soft:4", "persona:4:per-user-bt:0", "persona:4:bt:0", "persona:2:em:2", "ukp:0:em:2"], help="protocol:groups:model:k")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.encoders import make_encoder
    from pluralign.evaluation import EvalConfig, evaluate, load_protocol
    from pluralign.reward.em import EMConfig, EMMixture
    from pluralign.reward.registry import build_model
    from training.common import cache_path

    encoder = CachedEncoder(make_encoder("minilm"), EmbeddingCache(cache_path()))
    print("| protocol | model | K | seen acc | worst group | unseen k=1 | k=5 | k=20 | ARI | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        protocol_name, groups, name, k = run.split(":")
        protocol = load_protocol(EvalConfig(protocol=protocol_name, data_dir=args.data_dir, groups=int(groups) or 4))
        if name == "em-soft":
            model = EMMixture(EMConfig(k=int(k), assignment="soft"))
        else:
            model = build_model(name, k=int(k) or None)
        start = time.perf_counter()
        report = evaluate(model, protocol, encoder, shots=(1, 5, 20))
        unseen = report["unseen_acc_by_k"]
        ari = f"{report['ari']:.3f}" if "ari" in report else "-"
        label = f"{protocol_name} {groups} groups" if protocol_name == "persona" else protocol_name
        print(
            f"| {label} | {name} | {k if int(k) else '-'} | {report['seen_macro_acc']:.3f} | {report['worst_group_acc']:.3f} | "
            f"{unseen.get('1', float('nan')):.3f} | {unseen.get('5', float('nan')):.3f} | {unseen.get('20', float('nan')):.3f} | {ari} | "
            f"{time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
