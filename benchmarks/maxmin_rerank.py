"""Inference-time MaxMin (no training): pick among candidate answers with the EM group heads.

    python -m benchmarks.maxmin_rerank --answers WORK/seed-0/base-answers-24-min4-seed0.json --seed 0

(`--answers`: a base-answers cache written by benchmarks.maxmin_policy for the same seed; its test
answers are the held-out ones, or `eval` in the caches written before the validation split.)
For each held-out question, the candidates are the four style variants of the base model's own
answer (see pluralign/policy/style_groups.py). `select_with_heads` picks the one maximizing the
minimum normalized group reward under EM's K=2 heads (ties to EM's mixing weights); the
single-reward pick maximizes the one pooled head (K=1). It is the selector of the service's users
with no history, and the same pick as `maxmin_policy --ceiling` makes. Each group's win rate of the
pick against the base answer, under that group's rule, is printed for 80/20 and 90/10 populations. No LM is run: this measures the selector, on candidates that
differ only in style.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", required=True, help="base-answers JSON written by benchmarks.maxmin_policy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from benchmarks.maxmin_policy import questions
    from pluralign.policy.rerank_maxmin import select_with_heads
    from pluralign.policy.style_groups import (
        answer_features,
        feature_pairs,
        preference_pairs,
        style_variants,
        win_rates,
    )
    from pluralign.reward.em import EMConfig, EMMixture

    answers = json.loads(open(args.answers).read())
    held_out = answers["test"] if "test" in answers else answers["eval"]
    train_q = questions()[0]
    print("| majority/minority | selector | enthusiastic (majority) win | concise (minority) win |")
    print("|---|---|---|---|")
    for majority in (0.8, 0.9):
        shares = {"enthusiastic": majority, "concise": round(1 - majority, 6)}
        batch = feature_pairs(preference_pairs(train_q, answers["train"], shares, users=100, pairs_per_user=12, seed=args.seed))
        for name, k in (("single reward (K=1)", 1), ("MaxMin (K=2)", 2)):
            heads = EMMixture(EMConfig(k=k, restarts=4, seed=args.seed))
            heads.fit(batch, batch.select([]))
            picks = []
            for answer in held_out:
                candidates = sorted(set(style_variants(answer).values()))
                picks.append(candidates[select_with_heads(heads, np.ones(2, np.float32), answer_features(candidates).numpy())])
            rates = win_rates(picks, held_out)
            print(f"| {round(majority * 100)}/{round((1 - majority) * 100)} | {name} | {rates['enthusiastic']:.2f} | {rates['concise']:.2f} |")


if __name__ == "__main__":
    main()
