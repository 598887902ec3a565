"""`pluralign audit --group-by em_cluster`: groups from a trained EM mixture's reward heads."""

from __future__ import annotations

import json

import pytest
import torch

from tests.e2e.test_audit_cli import DATA
from training.cli import main


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "anthropic_persona").is_dir(), reason="shared persona data not present")
def test_em_clusters_as_audit_groups_recover_the_known_groups(tmp_path, capsys, monkeypatch, request):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    cache = ["--cache", str(tmp_path / "emb.sqlite"), "--data-dir", str(DATA)]
    assert main(["train", "em", "--k", "2", "--protocol", "persona", "--groups", "2", "--out", str(tmp_path / "em"), "--quiet", *cache]) == 0
    capsys.readouterr()
    by_attribute = ["audit", "--source", "persona", "--groups", "2", "--group-weights", "0.5,0.5", "--json", *cache]
    assert main([*by_attribute, "--group-by", "group"]) == 0
    truth = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*by_attribute, "--group-by", "em_cluster", "--em", str(tmp_path / "em")]) == 0
    learned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the two clusters are the two true groups (in some order): same sizes, same accuracies
    assert sorted(g["users"] for g in learned["groups"]) == sorted(g["users"] for g in truth["groups"])
    assert sorted(round(g["base_accuracy"], 6) for g in learned["groups"]) == sorted(round(g["base_accuracy"], 6) for g in truth["groups"])
    assert all(g["group"].startswith("cluster-") for g in learned["groups"])
