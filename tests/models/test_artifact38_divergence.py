"""A PAL run whose loss becomes NaN or inf fails, naming the epoch and the loss, and keeps nothing.

Before: a run whose first epoch was finite (an absurd 1.7e37 validation loss) and whose second was NaN
returned the first epoch's model as its result, and `pluralign train pal` saved and reported it; a run
NaN from the start went on for `patience` epochs and then said only "not finite at any of 4 epochs".
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pluralign.reward.features import PairBatch
from pluralign.reward.pal import PALConfig, PALTrainConfig, TrainingDiverged, train_pal
from tests.conftest import REPO


def pairs(n: int, users: int, seed: int) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    unit = lambda: torch.nn.functional.normalize(torch.randn(n, 384, generator=g), dim=-1)  # noqa: E731
    return PairBatch(unit(), unit(), unit(), torch.arange(n) % users, [f"u{i}" for i in range(users)], ["g"] * n)


def test_a_run_that_turns_nan_after_a_finite_epoch_keeps_no_epoch():
    seen = []
    with pytest.raises(TrainingDiverged) as caught:
        train_pal(pairs(15, 3, 0), pairs(6, 3, 1), PALConfig(variant="a", k=2, input_dim=384, latent_dim=8, hidden=16),
                  PALTrainConfig(lr_shared=1e9, lr_user=1e9, batch_size=4, max_epochs=6, patience=6),
                  progress=lambda epoch, m: seen.append((epoch, m["val_loss"])))
    assert seen[0][0] == 1 and seen[0][1] < float("inf")  # epoch 1 was finite: it used to be returned as the model
    message = str(caught.value)
    assert message.startswith("PAL training diverged at epoch 2: the training loss is nan at step "), message
    assert "lr_shared=1e+09" in message and "\n" not in message


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_naming_the_epoch_and_the_loss_and_writes_nothing(tmp_path):
    rows = [{"user_id": f"u{u}", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}."}
            for u in range(3) for i in range(8)]
    last = pal_cli_refused(tmp_path, rows, "1e12")
    # one step an epoch (15 pairs): the validation loss is the first to be NaN
    assert re.match(r"pluralign: error: PAL training diverged at epoch 1: the (training|validation) loss is nan", last), last


def pal_cli_refused(folder: Path, rows: list[dict], lr: str) -> str:
    """`pluralign train pal --protocol file --k 2` (latent 8, hidden 16) on `rows` (written as `folder`/p.jsonl), both
    learning rates `lr`, run as a child process offline (the tests' embedding cache; 120 s at most): asserts that it
    exits 2 with nothing on stdout, no traceback and nothing written into its --out. Returns its last line on stderr."""
    data = folder / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = folder / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "pal", "--protocol", "file", "--data", str(data), "--k", "2",
         "--lr-shared", lr, "--lr-user", lr, "--latent-dim", "8", "--hidden", "16", "--out", str(out),
         "--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and done.stdout == "", (done.returncode, done.stdout, done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    assert not out.exists() or list(out.iterdir()) == []
    return done.stderr.replace("\r", "\n").strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from tests.service.tiny import save_tiny_generator

    return save_tiny_generator(tmp_path_factory.mktemp("tiny-base"))


def test_train_adapter_whose_loss_turns_nan_fails_naming_the_step_and_saves_nothing(tmp_path, capsys, tiny_base, one_torch_thread):
    """Before: `--lr 1e30` trained 4 steps into NaN weights, saved the adapter and exited 0 with
    `final_loss: null` and `held_out_acc_after: 0.0`, a finite figure a job's promotion would take."""
    from tests.unit.clitools import cli, write_jsonl

    data = write_jsonl(tmp_path / "p.jsonl", [
        {"user_id": "u0", "prompt": f"Tell me about topic {i}", "chosen": f"Short {i}.", "rejected": f"A much longer answer {i}."}
        for i in range(10)])
    registry = tmp_path / "adapters"
    code, out, err = cli(capsys, "train", "adapter", "--user", "u0", "--data", data, "--base", str(tiny_base),
                         "--registry", str(registry), "--steps", "4", "--lr", "1e30")
    assert code == 2 and out == "" and "Traceback" not in err, (out, err)
    line = err.strip().splitlines()[-1]
    assert re.match(r"pluralign: error: training diverged at step \d of 4: the dpo loss is nan \(lr=1e\+30\); nothing was kept", line), line
    # session 40: it said 'lower the learning rate' alone; now the data, the dtype and the pair too (seen failing before)
    assert "Likely causes: the learning rate too high (lower it), the data" in line and "dtype (float32" in line, line
    assert "first non-finite pair: user 'u0', prompt 'Tell me about topic" in line, line
    assert not (registry / "default" / "u0").exists()
    assert not (registry / "default").exists() or list((registry / "default").iterdir()) == []
