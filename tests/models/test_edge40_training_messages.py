"""Session 40, training messages. PAL's absurd-loss guard refused a legitimate if odd data set: one user's
comparison answered the same way in training and the other way in the one validation pair scores ~25 nats
on validation after an epoch at the default rates (a confident model, contradicted once), and the run
failed blaming the learning rates. (The adapter/FSPO NaN message, which named only the learning rate:
test_artifact38_divergence.)"""

from __future__ import annotations

import json
import random

import torch

from pluralign.losses import MIN_JUDGED_VAL_PAIRS
from pluralign.reward.features import PairBatch
from pluralign.reward.pal import PALConfig, PALTrainConfig, TrainingDiverged, train_pal
from tests.conftest import REPO
from tests.unit.clitools import cli

PROMPT, TEA, COFFEE = "Tea or coffee in the morning?", "Tea, always.", "Coffee, black."


def contradicted(n_val: int, n_train: int = 20) -> tuple[PairBatch, PairBatch]:
    """One user, one comparison: answered one way `n_train` times in training, the other way in all
    `n_val` validation pairs (unit vectors, as an encoder's)."""
    g = torch.Generator().manual_seed(0)
    prompt, a, b = torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1)

    def batch(n: int, chosen, rejected) -> PairBatch:
        return PairBatch(prompt.repeat(n, 1), chosen.repeat(n, 1), rejected.repeat(n, 1), torch.zeros(n, dtype=torch.long), ["odd"], ["g"] * n)

    return batch(n_train, a, b), batch(n_val, b, a)


CONFIG = PALConfig(variant="a", k=1, input_dim=64, latent_dim=16, hidden=64)
RATES = PALTrainConfig(batch_size=1, max_epochs=2, patience=1)


def test_a_few_validation_pairs_contradicting_training_do_not_stop_the_run():
    train, val = contradicted(1)
    result = train_pal(train, val, CONFIG, RATES)
    assert result.metrics["val_loss"] > 10 * 0.6932, result.metrics  # absurd, judged by one pair: kept all the same


def test_enough_validation_pairs_contradicting_training_still_stop_it_naming_the_data():
    train, val = contradicted(MIN_JUDGED_VAL_PAIRS)
    try:
        train_pal(train, val, CONFIG, RATES)
    except TrainingDiverged as exc:
        message = str(exc)
    else:
        raise AssertionError("trained")
    assert "on validation" in message and "Likely cause: the validation pairs contradict the training pairs" in message, message
    assert "learning rates too high" not in message, message  # the training pairs score well: the rates are not it


def odd_user_rows(n: int = 14) -> list[dict]:
    """One user's 14 comparisons (3 go to test, 1 to validation, 10 to train): the same question, asked on 14
    days, answered tea 13 times and coffee once, the coffee row where `split_seen` (seed 0) puts the validation
    pair. Each day's question is its own comparison: since session trial44 one comparison given 14 times counts
    once (`comparison_key`), its copies split together, and the file protocol refuses a user of one comparison."""
    for i in range(10_000):
        order = list(range(n))
        random.Random(f"0:odd{i}").shuffle(order)
        if order.index(n - 1) == 3:
            user = f"odd{i}"
            break
    rows = [{"user_id": user, "prompt": f"{PROMPT} (day {day})", "chosen": TEA, "rejected": COFFEE} for day in range(1, n)]
    return rows + [{"user_id": user, "prompt": f"{PROMPT} (day {n})", "chosen": COFFEE, "rejected": TEA}]


def test_the_cli_trains_pal_on_a_user_whose_one_validation_pair_contradicts_training(tmp_path, capsys):
    """Seen failing before: exit 2, 'PAL training diverged at epoch 1: the model kept scores 7.36e-12
    nats/pair on its training pairs (accuracy 1.000), 25.6 on validation (accuracy 0.000) ... Likely
    causes: learning rates too high (lr_shared=0.002, lr_user=0.05; defaults 0.002, 0.05)': the defaults.
    The CLI runs in-process, as tests/unit/clitools.py's do (until session 46 a `python -m training.cli` of its own:
    ~20 s of a worker's time, nearly all of it torch's and the CLI's imports, for 0.1 s of training)."""
    data = tmp_path / "odd.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in odd_user_rows()))
    out = tmp_path / "out"
    code, stdout, stderr = cli(capsys, "train", "pal", "--protocol", "file", "--data", str(data), "--k", "1", "--batch-size", "1",
                               "--epochs", "3", "--out", str(out), "--cache", str(REPO / ".cache" / "pluralign" / "test-embeddings.sqlite"))
    assert code == 0, stderr[-3000:]
    report = json.loads(stdout)
    assert report["val_pairs"] == 1 and report["train_pairs"] == 10, report
    assert (out / "metrics.json").is_file()
