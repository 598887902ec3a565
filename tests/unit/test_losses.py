"""The pairwise losses against values worked out by hand: a sign or a constant wrong in one of them
trains a model the wrong way (or to the wrong margin) without any shape changing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pluralign.losses import bradley_terry_loss, dpo_loss, ipo_loss
from pluralign.policy.fspo import LOSSES


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bradley_terry_loss_is_the_mean_negative_log_likelihood_of_the_chosen_winning():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # -log sigmoid(1) and -log sigmoid(-2), averaged
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx((softplus(-1.0) + softplus(2.0)) / 2)
    # the chosen answer scored higher costs less than the same gap the other way round
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0])) < bradley_terry_loss(torch.tensor([0.0]), torch.tensor([1.0]))


def test_dpo_loss_is_bt_on_beta_times_the_log_ratio_margin_per_row():
    # log-ratio margin: (-1 - -2) - (-3 - -2) = 2; beta 0.5 -> -log sigmoid(1)
    rows = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]), beta=0.5)
    assert rows.shape == (2,)
    assert rows.tolist() == pytest.approx([softplus(-1.0), softplus(1.0)])
    assert LOSSES["dpo"] is dpo_loss


def test_ipo_loss_pulls_the_margin_to_one_over_two_beta():
    ref = torch.tensor([-2.0, -2.0, -2.0])
    # margins 2, 1 and 0 with beta 0.5: the target margin 1 / (2 beta) = 1
    chosen, rejected = torch.tensor([-1.0, -1.5, -2.0]), torch.tensor([-3.0, -2.5, -2.0])
    assert ipo_loss(chosen, rejected, ref, ref, beta=0.5).tolist() == pytest.approx([1.0, 0.0, 1.0])
    # beta 0.25: target 2, where the first row's margin already is
    assert ipo_loss(chosen, rejected, ref, ref, beta=0.25).tolist() == pytest.approx([0.0, 1.0, 4.0])
    assert LOSSES["ipo"] is ipo_loss


@pytest.mark.parametrize("beta", [np.float32(0.5), np.int64(1), np.float16(0.25)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_numpy_beta_the_configs_take_is_taken_by_the_losses_too(name, beta):
    """FSPOConfig and MaxMinConfig take a numpy beta (`above_zero`); before, the loss their training
    loops pass it to refused it: "`beta` must be a finite number > 0, got 0.5"."""
    from pluralign.policy.fspo import FSPOConfig
    from pluralign.policy.maxmin import MaxMinConfig

    logp = torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -1.5]), torch.tensor([-1.5, -1.5]), torch.tensor([-1.5, -1.5])
    for config in (FSPOConfig(beta=beta, loss=name), MaxMinConfig(beta=beta)):
        got = LOSSES[name](*logp, config.beta)
        assert torch.allclose(got, LOSSES[name](*logp, float(beta)))
    with pytest.raises(ValueError, match="`beta` must be a finite number > 0"):
        LOSSES[name](*logp, np.float32("nan"))
