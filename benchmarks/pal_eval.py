"""PAL beside the Bradley-Terry baselines on one protocol, every model measured by `evaluate()`.

    .venv/bin/python benchmarks/pal_eval.py --protocol persona --groups 4 --models bt pal-a pal-b --k 4 8
    .venv/bin/python benchmarks/pal_eval.py --protocol ukp --models bt per-user-bt pal-a pal-b --k 4

Prints one JSON report per (model, K) and a table: seen macro accuracy, unseen accuracy per k,
worst group, ARI (persona: k-means on ideal points, and argmax of the weights for comparison),
training pairs/s and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pluralign.evaluation import EvalConfig, evaluate, load_protocol  # noqa: E402
from pluralign.reward.pal import PALConfig, PALPreference, PALTrainConfig  # noqa: E402
from pluralign.reward.registry import build_model  # noqa: E402
from training.common import cache_path  # noqa: E402


def argmax_ari(model: PALPreference, true_groups: dict[str, str]) -> float:
    from sklearn.metrics import adjusted_rand_score

    users = model.user_weights.users()
    logits, _ = model.user_weights.stack(users)
    return float(adjusted_rand_score([true_groups[u] for u in users], logits.argmax(-1).tolist()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", default="persona", choices=["persona", "ukp"])
    p.add_argument("--groups", type=int, default=4)
    p.add_argument("--models", nargs="+", default=["bt", "pal-a", "pal-b"])
    p.add_argument("--k", type=int, nargs="+", default=[4], help="PAL prototypes; one run per value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--data-dir", default="/work/shared/data")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--lr-shared", type=float, default=None)
    p.add_argument("--lr-user", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--prior-strength", type=float, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from pluralign.embed.cache import CachedEncoder, EmbeddingCache
    from pluralign.embed.encoders import make_encoder

    encoder = CachedEncoder(make_encoder(args.encoder), EmbeddingCache(cache_path()))
    protocol = load_protocol(EvalConfig(protocol=args.protocol, data_dir=args.data_dir, groups=args.groups, seed=args.seed))
    overrides = {name: getattr(args, name) for name in ("lr_shared", "lr_user", "batch_size", "max_epochs") if getattr(args, name) is not None}
    rows = []
    for name in args.models:
        for k in args.k if name.startswith("pal") else [None]:
            if name.startswith("pal"):
                extra = {"prior_strength": args.prior_strength} if args.prior_strength is not None else {}
                model = PALPreference(PALConfig(variant=name[-1], k=k), PALTrainConfig(seed=args.seed, **overrides), **extra)
            else:
                model = build_model(name, seed=args.seed)
            report = evaluate(model, protocol, encoder)
            if isinstance(model, PALPreference) and protocol.true_groups:
                report["ari_argmax"] = argmax_ari(model, protocol.true_groups)
            report["k_prototypes"] = k
            print(json.dumps(report), flush=True)
            rows.append(report)
    shots = list(rows[0]["unseen_acc_by_k"])
    print("\n| model | K | seen macro | " + " | ".join(f"unseen k={s}" for s in shots) + " | worst group | ARI k-means | ARI argmax | pairs/s | seconds |")
    print("|" + "---|" * (9 + len(shots) - 1))
    for r in rows:
        unseen = " | ".join(f"{r['unseen_acc_by_k'].get(s, float('nan')):.3f}" for s in shots)
        ari = f"{r['ari']:.3f}" if "ari" in r else "-"
        ari_argmax = f"{r['ari_argmax']:.3f}" if "ari_argmax" in r else "-"
        pps = f"{r['fit']['pairs_per_second']:.0f}" if "pairs_per_second" in r["fit"] else "-"
        print(f"| {r['model']} | {r['k_prototypes'] or '-'} | {r['seen_macro_acc']:.3f} | {unseen} | {r['worst_group_acc']:.3f} | {ari} | {ari_argmax} | {pps} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
