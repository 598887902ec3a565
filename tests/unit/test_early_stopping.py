"""Early stopping ends at the validation optimum: a plateau longer than the base patience does not
stop a run that later improves, and the state at the lowest loss is what is kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.reward.bt import BTConfig, SingleBT
from pluralign.reward.early_stopping import EarlyStopping, StoppingRule
from tests.pal_synthetic import opposed_groups, split


def run(curve, rule):
    stopper = EarlyStopping(rule)
    for step, loss in enumerate(curve, start=1):
        if stopper.update(loss, lambda step=step: step):
            break
    return stopper


def plateau_then_descent():
    """Falls for 100 steps, sits on a plateau for 45 (longer than a patience of 40), falls again to
    its optimum at step 300, then rises (overfitting)."""
    fall = 1.0 - 0.004 * np.arange(100)
    flat = np.full(45, fall[-1])
    again = np.linspace(fall[-1], 0.3, 156)[1:]
    rise = 0.3 + 0.001 * np.arange(1, 401)
    return np.concatenate([fall, flat, again, rise])


def test_a_plateau_does_not_stop_training_before_the_optimum():
    curve = plateau_then_descent()
    optimum = int(np.argmin(curve)) + 1
    fixed = run(curve, StoppingRule(min_evaluations=1, patience=40, patience_ratio=0.0))
    assert fixed.evaluations == 140  # the old rule: a fixed patience that the plateau exhausts
    grown = run(curve, StoppingRule(min_evaluations=100, patience=40, patience_ratio=0.5))
    assert grown.best_state == grown.best_at == optimum
    assert grown.evaluations == optimum + optimum // 2  # and it stops once the loss has risen for half as long again


def test_minimum_evaluations_hold_off_an_early_stop():
    curve = np.concatenate([[1.0, 0.9], np.full(30, 0.9), np.linspace(0.9, 0.5, 20)])
    early = run(curve, StoppingRule(min_evaluations=1, patience=5, patience_ratio=0.0))
    assert early.evaluations == 7 and early.best == pytest.approx(0.9)
    held = run(curve, StoppingRule(min_evaluations=40, patience=5, patience_ratio=0.0))
    assert held.best == pytest.approx(0.5)


def test_creeping_improvements_keep_the_best_state_but_do_not_run_forever():
    curve = np.concatenate([np.linspace(1.0, 0.5, 10), 0.5 - 1e-9 * np.arange(1, 1000)])
    stopper = run(curve, StoppingRule(min_evaluations=1, patience=5, patience_ratio=0.5, min_improvement=1e-4))
    assert stopper.evaluations < 30
    assert stopper.best_at == stopper.evaluations  # the lowest loss seen is still the one kept


def test_single_bt_trains_past_an_accuracy_plateau_to_the_lowest_validation_loss(one_torch_thread):
    """One taste for everyone: validation accuracy saturates within a few dozen full-batch steps,
    while the validation loss keeps falling for hundreds. A patience on accuracy stopped 40 steps
    after the saturation; training now ends where the validation loss is lowest."""
    train, val, _ = split(opposed_groups(users_per_group=16, pairs_per_user=40, groups=1, seed=3))
    bt = SingleBT(BTConfig(hidden=16, lr=3e-3, full_batch_steps=400, seed=0))
    metrics = bt.fit(train, val)
    assert metrics["full_batch"]
    assert metrics["val_acc"] > 0.9
    assert metrics["best_epoch"] > 180, metrics  # accuracy on a patience of 40 stopped at step 154, best 114
    # the kept weights are those of the lowest validation loss seen
    device = next(bt.model.parameters()).device  # the model trains on CUDA where there is one
    prompt, chosen, rejected = (t.to(device) for t in (val.prompt, val.chosen, val.rejected))
    with torch.no_grad():
        margin = bt.model(prompt, chosen) - bt.model(prompt, rejected)
    assert float(torch.nn.functional.softplus(-margin).mean()) == pytest.approx(metrics["val_loss"], rel=1e-5)
