"""Audits of real-text populations with MiniLM embeddings: a persona population with a 90/10
majority/minority (known groups), and UKPConvArg1 by the worker's stance.

    .venv/bin/python benchmarks/audit_populations.py --persona-users 50 --per-user 60 --ukp

Prints each group's prequential personalized accuracy next to the one-size-fits-all model's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.data.ukp import load_ukp
from pluralign.embed.cache import CachedEncoder, EmbeddingCache
from pluralign.embed.encoders import SentenceEncoder
from pluralign.fairness.audit import AuditConfig, audit, comparisons_from_records
from training.common import cache_path

REPO = Path(__file__).resolve().parents[1]
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data") if p.is_dir()), Path("../shared/data"))


def show(title: str, report) -> None:
    print(f"{title}: {report.users} users, {report.comparisons} comparisons, audit {report.seconds:.1f} s")
    for g in report.groups:
        flag = " (too few comparisons)" if g.too_few_comparisons else ""
        print(f"  {g.group:<10} users {g.users:>5} pairs {g.comparisons:>6}  personalized {g.personalized_accuracy:.3f}  "
              f"one-size-fits-all {g.base_accuracy:.3f}  ECE {g.personalized_ece:.3f}/{g.base_ece:.3f}{flag}")
    print(f"  worst group: personalized {report.worst_group} {report.worst_group_accuracy:.3f} (gap {report.gap:.3f}); "
          f"one-size-fits-all {report.base_worst_group} {report.base_worst_group_accuracy:.3f} (gap {report.base_gap:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--persona-users", type=int, default=50, help="seen users in all")
    parser.add_argument("--per-user", type=int, default=60)
    parser.add_argument("--ukp", action="store_true", help="also audit UKPConvArg1 by worker_stance")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = CachedEncoder(SentenceEncoder(), EmbeddingCache(cache_path()))
    config = PersonaConfig(groups=2, group_weights=(0.9, 0.1), users_per_group=args.persona_users // 2,
                           comparisons_per_user=args.per_user, seed=0)
    protocol = build_persona(config, args.data_dir)
    records = [*protocol.seen.train, *protocol.seen.val, *protocol.seen.test]
    show("persona 90/10 (g1 is the minority)", audit(comparisons_from_records(records, encoder, "group"), "group"))
    if args.ukp:
        start = time.perf_counter()
        records, _ = load_ukp(Path(args.data_dir) / "ukp_convarg1")
        c = comparisons_from_records(records, encoder, "worker_stance")
        print(f"UKP loaded and embedded in {time.perf_counter() - start:.1f} s")
        show("UKPConvArg1 by worker_stance", audit(c, "worker_stance", AuditConfig(min_comparisons=100)))


if __name__ == "__main__":
    main()
