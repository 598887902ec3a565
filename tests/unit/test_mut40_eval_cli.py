"""`pluralign eval --shots active` run as a user runs it (a subprocess): what survived mutation testing (session 40)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.unit.test_cli import run_cli


@pytest.mark.slow  # one persona eval of pal-a+residual with active shots: 25 s of CPU, minutes on a loaded 2-core machine
def test_eval_with_active_shots_measures_k_4_and_chooses_by_the_active_target_asked_for(shared_data):
    """`--shots active` adds k = 4 to the measured shots (issue 16's bar compares 2 and 5 active shots
    with 4 and 10 random ones), and `--active-target predictive` is the criterion the report names."""
    cache = str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")
    result = run_cli("eval", "--model", "pal-a+residual", "--protocol", "persona", "--groups", "2", "--shots", "active",
                     "--active-target", "predictive", "--unseen-per-group", "1", "--query-size", "2", "--json", "--threads", "1",
                     "--data-dir", str(shared_data), "--cache", cache)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["active_target"] == "predictive"
    assert "4" in report["unseen_acc_by_k"] and "4" in report["unseen_active_acc_by_k"], report
