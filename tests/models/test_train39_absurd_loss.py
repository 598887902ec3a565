"""A PAL run whose loss stays finite but absurd (lr 1e8: validation loss ~1e33 nats per pair) fails,
saying what was seen and the likely causes, and keeps nothing.

Before: only a NaN or inf loss stopped a run, so at lr 1e8 the epoch with the lowest of those absurd
validation losses was returned, and `pluralign train pal` saved it and exited 0 (a job promoted it if
its validation accuracy, a coin flip, beat the served one's); the NaN message blamed the learning rate
alone. Now a run whose kept epoch scores over 10 x log 2 nats per pair (a constant model scores log 2)
raises TrainingDiverged naming that loss, its accuracy, the first and last training losses and the causes.
"""

from __future__ import annotations

import random

import pytest

from pluralign.losses import ABSURD_BT_LOSS
from pluralign.reward.pal import PALConfig, PALTrainConfig, TrainingDiverged, train_pal
from tests.models.test_artifact38_divergence import pairs, pal_cli_refused
from training.jobs.runner import LOG_LINE_CHARS

CONFIG = PALConfig(variant="a", k=2, input_dim=384, latent_dim=8, hidden=16)


def test_a_run_whose_loss_stays_finite_but_absurd_keeps_nothing_and_says_why():
    seen = []
    with pytest.raises(TrainingDiverged) as caught:
        train_pal(pairs(60, 3, 0), pairs(30, 3, 1), CONFIG, PALTrainConfig(lr_shared=1e8, lr_user=1e8, batch_size=16, max_epochs=3, patience=3),
                  progress=lambda epoch, m: seen.append(m["val_loss"]))
    assert len(seen) == 3 and all(ABSURD_BT_LOSS < loss < float("inf") for loss in seen), seen  # finite, every epoch
    message = str(caught.value)
    assert message == (
        "PAL training diverged at epoch 1: the model kept scores 1.88e+34 nats/pair on its training pairs (accuracy 0.500), "
        "5.35e+33 on validation (accuracy 0.600, 30 pairs), over 6.93 = 10 x log 2 (a 50/50 model scores 0.693); training loss 0.698 "
        "at the first step, 7.48e+33 at the last; nothing was kept. Likely causes: learning rates too high (lr_shared=1e+08, "
        "lr_user=1e+08; defaults 0.002, 0.05), embeddings not normalized, or validation pairs with chosen and rejected swapped")
    # whole in a job's `error` (`exit code 2: ` + the CLI's line, each log line kept to LOG_LINE_CHARS)
    assert len(f"pluralign: error: {message}") <= LOG_LINE_CHARS


def test_the_same_data_at_the_default_rates_is_not_stopped():
    """Random pairs (nothing to learn): the kept epoch scores about log 2, far under the bound."""
    result = train_pal(pairs(60, 3, 0), pairs(30, 3, 1), CONFIG, PALTrainConfig(batch_size=16, max_epochs=3, patience=3))
    assert result.metrics["val_loss"] < 0.75


@pytest.mark.slow
def test_the_cli_exits_2_naming_the_absurd_loss_and_writes_nothing(tmp_path):
    # answers of random words, each user's choice a coin flip: nothing to learn. At lr 1e8 the model kept got its 3
    # validation pairs right (loss 0: the old guard, were it on validation alone, would pass it) and its training pairs not
    rng = random.Random(0)
    words = "tea coffee rain sun river stone cloud music book garden winter summer bread salt ocean hill lamp road".split()
    rows = [{"user_id": f"u{u}", "prompt": f"Say something about {rng.choice(words)}", "chosen": " ".join(rng.sample(words, 4)),
             "rejected": " ".join(rng.sample(words, 4))} for u in range(3) for i in range(10)]
    last = pal_cli_refused(tmp_path, rows, "1e8")
    assert last.startswith("pluralign: error: PAL training diverged at epoch "), last
    assert "on its training pairs" in last and "Likely causes: learning rates too high (lr_shared=1e+08" in last, last
