"""`pluralign data stats|import|export`.

    pluralign data stats --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --json
    pluralign data stats --source jsonl --path prefs.jsonl --json
    pluralign data export --source ukp_convarg1 --path ../shared/data/ukp_convarg1 --out ukp.jsonl
"""

from __future__ import annotations

import argparse

from training.common import print_json


def _load(args):
    from pluralign.data.io import read_preferences
    from pluralign.data.ukp import load_ukp

    if args.source == "ukp_convarg1":
        return load_ukp(args.path)
    if args.source in ("jsonl", "parquet", "file"):
        records, report = read_preferences(args.path, skip_bad=args.skip_bad)
        if report.skipped:
            import sys

            print(f"skipped {report.skipped} bad rows; first: {report.errors[:3]}", file=sys.stderr)
        return records, len(records)
    raise ValueError(f"unknown --source {args.source!r}: expected ukp_convarg1, jsonl or parquet")


def stats(args: argparse.Namespace) -> int:
    records, pairs = _load(args)
    users = {r.user_id for r in records}
    ties = sum(r.tie for r in records)
    report = {"source": args.source, "pairs": pairs, "judgments": len(records), "users": len(users), "ties": ties}
    if args.source == "ukp_convarg1":
        from collections import Counter

        per_user = Counter(r.user_id for r in records if not r.tie)
        report["users_ge_100_non_tie"] = sum(c >= 100 for c in per_user.values())
        report["users_50_to_99_non_tie"] = sum(50 <= c < 100 for c in per_user.values())
    if args.json:
        print_json(report)
    else:
        for key, value in report.items():
            print(f"{key:>24}  {value}")
    return 0


def export(args: argparse.Namespace) -> int:
    from pluralign.data.io import write_jsonl, write_parquet

    records, _ = _load(args)
    n = write_parquet(records, args.out) if args.out.endswith(".parquet") else write_jsonl(records, args.out)
    print(f"wrote {n} records to {args.out}")
    return 0


def register(sub) -> None:
    data = sub.add_parser("data", help="inspect, import and export preference data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, func in (("stats", stats), ("export", export)):
        p = data_sub.add_parser(name)
        p.add_argument("--source", required=True, help="ukp_convarg1, jsonl or parquet")
        p.add_argument("--path", required=True)
        p.add_argument("--skip-bad", action="store_true", help="skip malformed rows and report how many")
        if name == "stats":
            p.add_argument("--json", action="store_true")
        else:
            p.add_argument("--out", required=True, help="a .jsonl or .parquet file")
        p.set_defaults(func=func)
