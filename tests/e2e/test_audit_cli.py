"""`pluralign audit` on a persona population with a 90/10 majority/minority written to a preference file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pluralign.data.io import write_jsonl
from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.fairness.report import decode_report
from training.cli import main

REPO = Path(__file__).resolve().parents[2]
DATA = next((p for p in (REPO.parent / "shared" / "data", REPO.parents[1] / "shared" / "data") if p.is_dir()), REPO.parent / "shared" / "data")


@pytest.mark.skipif(not (DATA / "anthropic_persona").is_dir(), reason="shared persona data not present")
def test_audit_of_a_preference_file_reports_the_minority_gap(tmp_path, capsys, monkeypatch, request):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared 2-core machine: MiniLM on busy threads is far slower than on one
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    config = PersonaConfig(groups=2, group_weights=(0.8, 0.2), users_per_group=5, comparisons_per_user=30, seed=1)
    protocol = build_persona(config, DATA)
    records = [*protocol.seen.train, *protocol.seen.val, *protocol.seen.test]
    write_jsonl(records, tmp_path / "prefs.jsonl")
    out = tmp_path / "report.json"
    # the session's embedding cache (the `minilm` fixture's file, tests/unit/test_cli.py's `--cache`): the persona texts
    # other tests embed are read from it, not embedded again (~4 CPU-s); what is checked is the report
    cache = Path(os.environ.get("PLURALIGN_CACHE_DIR", REPO / ".cache" / "pluralign")) / "test-embeddings.sqlite"
    argv = ["audit", "--data", str(tmp_path / "prefs.jsonl"), "--group-by", "group", "--min-comparisons", "20",
            "--cache", str(cache), "--out", str(out), "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = decode_report(out.read_bytes())
    assert printed["groups"] == json.loads(out.read_text())["groups"]
    by = {g.group: g for g in report.groups}
    assert by["g0"].users == 8 and by["g1"].users == 2  # (9 and 1 until session 49: a group of one user is suppressed now)
    # g1 holds the opposite stance on the only trait: the one-size-fits-all model fails it
    assert by["g1"].base_accuracy < 0.25 < 0.8 < by["g0"].base_accuracy  # (0.85 with a 10% minority until session 49)
    assert by["g1"].personalized_accuracy > 0.8
    assert report.base_worst_group == "g1" and report.base_gap > 0.6 and report.gap < 0.2

    # the same population with groups of fewer than 3 users suppressed: g1 (two users) disappears, and so do the overall
    # figures, which less g0's would give g1's back (session 49)
    assert main([*argv[:-3], "--min-group-size", "3", "--json"]) == 0
    hidden = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [g["group"] for g in hidden["groups"]] == ["g0"] and hidden["suppressed_groups"] == 1
    assert hidden["overall"] is None
