"""Review ro43 of rows43 (old millisecond times, date hints, the CLI's edges). A `created_at` in epoch milliseconds that a
release before session rows42 stored keeps its meaning, the seconds it meant, where the store's rows are read by time:
an audit's `--since` and its order of each user's comparisons, and which of a user's labels is their latest."""

from __future__ import annotations

import json

import numpy as np

from pluralign.store import Store, StoredPreference
from tests.unit.clitools import cli

DIM = 4
MS = 1_700_000_000_123.0  # 2023-11-14 in milliseconds, as an import before session rows42 stored it


def stored_rows(folder, times: dict[str, float], attributes=lambda i: {}) -> Store:
    """A store holding one comparison of user `ann` (tenant `t`) at each of `times` (pref_id -> created_at)."""
    store = Store(str(folder), "enc", DIM)
    rows = [StoredPreference(tenant="t", user_id="ann", pref_id=pref_id, prompt=f"q{i}", chosen=f"yes {i}", rejected=f"no {i}",
                             kind="comparison", created_at=at, attributes={"segment": "s", **attributes(i)})
            for i, (pref_id, at) in enumerate(times.items())]
    vectors = np.random.default_rng(0).standard_normal((len(rows), DIM)).astype(np.float32)
    store.add_preferences(rows, vectors, vectors, -vectors)
    return store


def test_an_audit_since_a_date_scores_no_comparison_made_in_milliseconds_before_it(tmp_path, capsys):
    """Before: `pluralign audit --store ... --since T` (the admin route's `since=`) read `created_at` as stored, so a
    comparison of 2023 stored in milliseconds counted as made in the year 55,847: scored by an audit since 2025 (and last
    in its user's order, where each is predicted from the user's earlier ones)."""
    stored_rows(tmp_path / "db", {"old": 1_600_000_000.0, "ms": MS, "new": 1_750_000_000.0})
    code, out, err = cli(capsys, "audit", "--store", str(tmp_path / "db"), "--group-by", "segment", "--since", "1720000000",
                         "--min-comparisons", "1", "--json")
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    assert (report["users"], report["comparisons"]) == (1, 1), report  # the 2025 comparison only
