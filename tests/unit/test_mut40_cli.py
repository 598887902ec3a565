"""The `pluralign` CLI's entry point (`training.cli.main`) in this process, as `tests.unit.clitools.cli` runs it (a
subprocess reports the same and pays ~1 CPU-s of imports a run): what survived mutation testing (session 40)."""

from __future__ import annotations

import json

from tests.conftest import REPO
from tests.unit.clitools import cli, write_jsonl

CACHE = ("--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"))


def test_an_audit_scores_the_comparison_made_at_since_and_flags_only_groups_below_min_comparisons(tmp_path, capsys):
    """`--since T` scores comparisons created at or after T (T itself included), and `--min-comparisons N`
    flags groups with fewer than N scored comparisons (a group of exactly N is ranked). Four users in two
    segments (two a segment: an audit shows no group of one user), 6 comparisons each at t = 1000..1005; --since
    1002: 4 scored each, 8 a segment, 16 in all; with --min-comparisons 8 neither group is flagged, so the worst group and the gap are drawn from both."""
    rows = [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}.",
             "created_at": 1000.0 + i, "attributes": {"segment": f"s{u % 2}"}} for u in range(4) for i in range(6)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    code, out, err = cli(capsys, "audit", "--data", data, "--group-by", "segment", "--since", "1002", "--min-comparisons", "8", "--json", *CACHE)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["comparisons"] == 16 and report["since"] == 1002.0 and report["overall"]["comparisons"] == 16
    assert {g["group"]: (g["comparisons"], g["too_few_comparisons"]) for g in report["groups"]} == {"s0": (8, False), "s1": (8, False)}
    assert report["worst_group"] in ("s0", "s1") and report["gap"] is not None
