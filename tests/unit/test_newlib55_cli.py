"""A new user's trial of the command line (session newlib55)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

ENCODERS = "expected `minilm`, `minilm-onnx`, `minilm-onnx-int8` or `smollm2`"


@pytest.mark.parametrize("argv", [
    # a --path that holds no data: read first, the audit would name it ("no UKPConvArg1 XML files under ...") and not --encoder
    ["audit", "--source", "ukp_convarg1", "--path", "no-such-ukp-folder", "--group-by", "worker_stance"],
    ["audit", "--data", "no-such-file.jsonl", "--group-by", "segment"],
    ["eval", "--model", "bt", "--protocol", "persona"],
    ["train", "pal", "--protocol", "persona", "--out", "pal"],
])
def test_a_mistyped_encoder_is_refused_naming_the_option_before_any_data_is_read(tmp_path, argv):
    """`pluralign audit ... --encoder minilm-onx` read all of UKPConvArg1 (84,000 rows, ~9 s on two busy cores) before
    it said "unknown encoder 'minilm-onx'", and eval and the trainers said so naming no option, where every other usage
    error of theirs names it (serve-embeddings': "--encoder minilm-onx: unknown encoder ..."). Now each refuses it at
    once, exit 2, naming --encoder, nothing heavy imported and nothing written."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "training.cli", *argv, "--encoder", "minilm-onx"],
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    said = f"pluralign: error: --encoder minilm-onx: unknown encoder 'minilm-onx': {ENCODERS}"
    assert (result.returncode, lines) == (2, [said]), result.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "lancedb", "pyarrow", "sklearn"}, sorted(imported & {"torch", "lancedb", "pyarrow", "sklearn"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_fspo_refuses_shots_no_unseen_user_can_be_scored_with_before_any_model_loads(capsys, tmp_path):
    """`train fspo --population file` holds some users out of training to score the adapter on (--unseen-fraction).
    With --shots above every held-out user's support comparisons it trained (SmolLM2 loaded, ~45 s on two busy cores),
    wrote the adapter and reported `"unseen_users": 0, "unseen_reward_acc": null`: the held-out users lost to training
    for a score that could not be taken, without a word. Now a usage error naming --shots and how many the unseen users
    have, before the base model loads; --eval-users 0 (no scoring) is not refused."""
    from tests.unit.clitools import cli, write_jsonl

    rows = [{"user_id": f"u{u}", "prompt": f"Pick {i}?", "chosen": "yes", "rejected": f"no {i}"} for u in range(5) for i in range(10)]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    small = ("--steps", "1", "--batch-size", "1", "--lora-layers", "1", "--max-response-tokens", "8")  # (a short run before)
    code, out, err = cli(capsys, "train", "fspo", "--population", "file", "--data", data, "--shots", "9", *small, "--out", str(tmp_path / "fspo"))
    assert code == 2 and out == "", err
    assert "--shots 9: " in err and "(at most 7, among 1 unseen users)" in err, err
    assert not (tmp_path / "fspo").exists()
    code, out, err = cli(capsys, "train", "fspo", "--population", "file", "--data", data, "--shots", "9", "--eval-users", "0",
                         "--base", str(tmp_path / "no-model"), "--out", str(tmp_path / "fspo"))
    assert code == 2 and "--shots" not in err and "no-model" in err, err  # it got as far as loading the base model
