"""Time a fairness audit of 1M comparisons over 10k users (synthetic 384-d embeddings).

    .venv/bin/python benchmarks/audit_scale.py --users 10000 --per-user 100

Synthetic: each comparison's chosen-minus-rejected embedding is random (spread decaying with the
dimension), labelled by a noisy Bradley-Terry choice of the user's group (90/10 majority/minority).
Prints the audit time at 10% and 100% of the size (the ratio shows how it scales) and the report.
"""

from __future__ import annotations

import argparse
import time

from pluralign.fairness.audit import AuditConfig, audit
from pluralign.fairness.synthetic import SyntheticConfig, synthetic_comparisons


def timed(users: int, per_user: int) -> tuple[float, object]:
    c = synthetic_comparisons(SyntheticConfig(users=users, comparisons_per_user=per_user, dim=384, minority_share=0.1))
    start = time.perf_counter()
    report = audit(c, "group", AuditConfig())
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=100)
    args = parser.parse_args()
    small_s, _ = timed(args.users // 10, args.per_user)
    full_s, report = timed(args.users, args.per_user)
    n = args.users * args.per_user
    print(f"audit of {n // 10:,} comparisons ({args.users // 10:,} users): {small_s:.1f} s")
    print(f"audit of {n:,} comparisons ({args.users:,} users): {full_s:.1f} s  (x{full_s / small_s:.1f} for x10 data)")
    for g in report.groups:
        print(f"  {g.group:<9} users {g.users:>6} pairs {g.comparisons:>8}  personalized {g.personalized_accuracy:.3f}  "
              f"base {g.base_accuracy:.3f}  ECE {g.personalized_ece:.3f}/{g.base_ece:.3f}")
    print(f"  gap personalized {report.gap:.3f}, one-size-fits-all {report.base_gap:.3f}")


if __name__ == "__main__":
    main()
