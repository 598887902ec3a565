"""`pluralign train pal` end to end on the real persona data with MiniLM (slow: embeds ~3k texts cold)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pluralign.reward.pal import load_pal
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
DATA = next((p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()), None)


@pytest.mark.slow
@pytest.mark.skipif(DATA is None, reason="the shared data folder is not here")
def test_train_pal_writes_a_loadable_checkpoint_and_metrics(tmp_path, capsys):
    out = tmp_path / "pal"
    code = main(["train", "pal", "--variant", "a", "--k", "2", "3", "--protocol", "persona", "--groups", "2",
                 "--epochs", "6", "--threads", "1", "--data-dir", str(DATA), "--out", str(out),
                 "--cache", str(tmp_path / "emb.sqlite")])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["by_k"]) == {"2", "3"} and report["chosen_k"] in (2, 3)
    # several --k: compared by held-out log-likelihood (one-standard-error rule), reported per K
    assert report["k_selected"] == report["chosen_k"] and set(report["k_criterion"]) == {"2", "3"}
    assert all("heldout_log_likelihood" in report["by_k"][k] for k in ("2", "3"))
    assert report["by_k"][str(report["chosen_k"])]["test_macro_acc"] > 0.8  # two opposed groups, told apart
    model, weights, meta = load_pal(out, encoder_id="sentence-transformers/all-MiniLM-L6-v2")
    assert meta.k == report["chosen_k"] and len(weights) == report["seen_users"] == 50
    assert json.loads((out / "metrics.json").read_text())["by_k"] == report["by_k"]
    with pytest.raises(ValueError, match="not 'other-encoder'"):
        load_pal(out, encoder_id="other-encoder")
