"""UKP seen-user macro accuracy of every model against the converged single BT, over seeds.

    OMP_NUM_THREADS=1 python -m benchmarks.ukp_seeds --models bt pal-a pal-b pal-a+residual --seeds 0 1 2 --out benchmarks/results/ukp_seen.json

For each seed: the UKP protocol's seen users (the 3,815 workers' judgments; workers with >= 100
non-tie judgments) have their pairs split train / validation / test by that seed
(`pluralign.data.splits.ukp_protocol`); each model is built with that seed, trained on the train
pairs and measured on the test pairs by `pluralign.evaluation.evaluate`, the same code as
`pluralign eval --model M --protocol ukp --seed S` (only the unseen-user curve is skipped here).

Model selection, validation only: the single BT and per-user BT stop at the validation optimum
(their early stopping reads the validation pairs, issue 12); PAL and EM choose K by the held-out
log-likelihood of the same validation pairs when `--k` is not given; the user model
(`pal-a+residual`) fits on PAL's train pairs. The test pairs choose nothing.

Figures (benchmarks/intervals.py): per model, seen macro accuracy (mean over seeds of the mean
over users), its standard deviation over seeds, a bootstrap interval over users (the same users in
every seed: resampled together), and the same for the per-user difference model minus BT
(`vs_bt`), so "not below BT" is read off the difference's interval. `--json` prints the summary as
the last line; `--out FILE` writes it too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def summarize_models(per_user: dict, models: list[str], args, runs: list[dict]) -> dict:
    """Seen macro accuracy of each finished model over seeds, and its per-user difference to the baseline."""
    from benchmarks.intervals import summarize

    users = sorted(set.intersection(*(set(per_user[m][s]) for m in models for s in args.seeds)))
    summary: dict = {"benchmark": "ukp_seeds", "setting": {"seeds": args.seeds, "k": args.k, "baseline": args.baseline, "users": len(users)},
                     "models": {}, "runs": [r for r in runs if r["model"] in models]}
    base = [[per_user[args.baseline][s][u] for u in users] for s in args.seeds]
    for name in models:
        acc = [[per_user[name][s][u] for u in users] for s in args.seeds]
        entry = {"seen_macro_acc": summarize(acc, args.seeds)}
        if name != args.baseline:
            entry["vs_bt"] = summarize([[a - b for a, b in zip(x, y, strict=True)] for x, y in zip(acc, base, strict=True)], args.seeds)
        summary["models"][name] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["bt", "per-user-bt", "pal-a", "pal-b", "pal-a+residual"])
    parser.add_argument("--baseline", default="bt", help="the model the others are compared with (run first)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=None, help="mixtures' K (default: chosen on the validation pairs)")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", default=None, help="write the summary (JSON) here, rewritten after every model")
    parser.add_argument("--work", default="runs/ukp-seeds", help="one JSON per finished (model, seed); a rerun resumes from them")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from pluralign.evaluation import EvalConfig, evaluate, load_protocol
    from pluralign.reward.registry import WITHOUT_COMPONENTS, build_model
    from training.common import cached_encoder

    torch.set_num_threads(args.threads)
    models = [args.baseline] + [m for m in args.models if m != args.baseline]
    encoder = cached_encoder(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    per_user: dict[str, dict[int, dict[str, float]]] = {m: {} for m in models}
    runs = []
    protocols: dict = {}
    summary: dict = {}
    for name in models:  # model by model, so that a run cut short still compares whole models over every seed
        for seed in args.seeds:
            done = work / f"{name}-seed{seed}.json"  # one finished (model, seed): a rerun resumes after it
            if done.exists():
                run = json.loads(done.read_text())
            else:
                if seed not in protocols:
                    protocols[seed] = load_protocol(EvalConfig(protocol="ukp", data_dir=args.data_dir, seed=seed))
                start = time.perf_counter()
                k = None if name in WITHOUT_COMPONENTS else args.k  # the mixtures' K: bt and per-user-bt have none
                report = evaluate(build_model(name, k=k, seed=seed), protocols[seed], encoder, shots=(), per_user=True)
                run = {"model": name, "seed": seed, "seen_macro_acc": report["seen_macro_acc"], "seen_pooled_acc": report["seen_pooled_acc"],
                       "k_selected": report.get("k_selected"), "seconds": round(time.perf_counter() - start, 1), "seen_user_acc": report["seen_user_acc"]}
                done.write_text(json.dumps(run))
            per_user[name][seed] = run.pop("seen_user_acc")
            runs.append(run)
            print(f"  seed {seed} {name:16s} seen macro {run['seen_macro_acc']:.4f}  pooled {run['seen_pooled_acc']:.4f}"
                  f"  K {run['k_selected'] or '-'}  {run['seconds']:.0f} s", flush=True)
        summary = summarize_models(per_user, [m for m in models if len(per_user[m]) == len(args.seeds)], args, runs)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")

    print(f"\nUKP seen macro accuracy, {summary['setting']['users']} users x seeds {args.seeds}: mean +- sd over seeds [95% bootstrap over users]; minus {args.baseline} per user")
    print(f"| model | seen macro | per seed | minus {args.baseline} |")
    print("|---|---|---|---|")
    for name, entry in summary["models"].items():
        s = entry["seen_macro_acc"]
        diff = entry.get("vs_bt")
        diff_text = f"{diff['mean'] * 100:+.1f} points [{diff['interval'][0] * 100:+.1f}, {diff['interval'][1] * 100:+.1f}]" if diff else "-"
        print(f"| {name} | {s['mean']:.3f} +- {s['sd_over_seeds']:.3f} [{s['interval'][0]:.3f}, {s['interval'][1]:.3f}] | "
              f"{' / '.join(f'{v:.3f}' for v in s['per_seed'].values())} | {diff_text} |")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
