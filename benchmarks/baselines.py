"""The baseline table: `pluralign eval --json` for each model on UKP and persona populations.

    .venv/bin/python benchmarks/baselines.py --models bt per-user-bt --protocols ukp persona:2 persona:4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def run(model: str, protocol: str, extra: list[str]) -> dict:
    name, _, groups = protocol.partition(":")
    cmd = [sys.executable, "-m", "training.cli", "eval", "--model", model, "--protocol", name, "--json", *extra]
    if groups:
        cmd += ["--groups", groups]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["bt", "per-user-bt"])
    parser.add_argument("--protocols", nargs="+", default=["ukp", "persona:2", "persona:4"])
    parser.add_argument("--extra", nargs="*", default=[], help="passed to pluralign eval for every model, e.g. --seed 1 (not --k: bt and per-user-bt refuse it since session trial46a)")
    args = parser.parse_args()
    print("| protocol | model | seen macro | seen pooled | unseen k=1 | k=5 | k=10 | k=50 | worst group | ARI | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for protocol in args.protocols:
        for model in args.models:
            r = run(model, protocol, args.extra)
            u = r["unseen_acc_by_k"]
            ari = f"{r['ari']:.3f}" if "ari" in r else "-"
            print(
                f"| {protocol} | {model} | {r['seen_macro_acc']:.3f} | {r['seen_pooled_acc']:.3f} | {u.get('1', float('nan')):.3f} |"
                f" {u.get('5', float('nan')):.3f} | {u.get('10', float('nan')):.3f} | {u.get('50', float('nan')):.3f} |"
                f" {r['worst_group_acc']:.3f} | {ari} | {r['seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
