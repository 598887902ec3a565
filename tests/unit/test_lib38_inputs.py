"""The library used from a notebook, fed what a hurried user feeds it (lib38): each mistake is a
ValueError (or TypeError) at the public boundary naming the argument, never a silent wrong number,
a silent no-op or an error from deep inside torch."""

from __future__ import annotations

import pytest

from pluralign.policy.fspo import FSPOConfig
from pluralign.policy.maxmin import MaxMinConfig
from pluralign.reward.bt import BTConfig
from pluralign.reward.em import EMConfig
from pluralign.reward.pal import PALConfig, PALTrainConfig

BAD_CONFIGS = [
    # a count that is not a whole number was kept and failed later inside range() or nn.Linear
    (PALConfig, "k", 1.5), (PALConfig, "k", True), (PALConfig, "k", float("nan")), (PALConfig, "k", "2"),
    (PALConfig, "input_dim", 1.5), (PALConfig, "hidden", 0.5),
    (PALTrainConfig, "max_epochs", 1.5), (PALTrainConfig, "seed", 1.5), (PALTrainConfig, "lr_user", float("inf")),
    (PALTrainConfig, "lr_shared", "1"),
    (BTConfig, "hidden", 1.5), (BTConfig, "epochs", 1.5), (BTConfig, "lr", float("inf")), (BTConfig, "seed", 0.5),
    (EMConfig, "k", 1.5), (EMConfig, "k", True), (EMConfig, "max_iter", 2.5), (EMConfig, "k", "2"),
    # MaxMin's DPO temperature, learning rate and LoRA rank were not checked at all
    (MaxMinConfig, "beta", 0), (MaxMinConfig, "beta", -0.1), (MaxMinConfig, "lr", 0), (MaxMinConfig, "lr", float("nan")),
    (MaxMinConfig, "steps", 0), (MaxMinConfig, "batch_size", 0), (MaxMinConfig, "lora_r", 0), (MaxMinConfig, "lora_alpha", 0),
    (MaxMinConfig, "max_length", 0), (MaxMinConfig, "lora_layers", -1),
    # nor FSPO's (ipo's 1 / (2 beta) divided by zero at the first step)
    (FSPOConfig, "beta", 0), (FSPOConfig, "beta", -1.0), (FSPOConfig, "lr", 0), (FSPOConfig, "lr", -2e-4),
    (FSPOConfig, "steps", 0), (FSPOConfig, "batch_size", 0), (FSPOConfig, "lora_rank", 0), (FSPOConfig, "shots", -1),
    (FSPOConfig, "max_prompt_tokens", 0), (FSPOConfig, "max_response_tokens", 0), (FSPOConfig, "queries", 1.5),
]


@pytest.mark.parametrize(("config", "field", "value"), BAD_CONFIGS, ids=[f"{c.__name__}.{f}={v!r}" for c, f, v in BAD_CONFIGS])
def test_a_config_field_that_cannot_be_used_is_named_when_the_config_is_made(config, field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        config(**{field: value})


@pytest.mark.parametrize("config", [PALConfig, PALTrainConfig, BTConfig, EMConfig, MaxMinConfig, FSPOConfig])
def test_every_config_s_defaults_are_still_accepted(config):
    config()


def test_user_weights_refuse_one_user_id_string_and_logits_of_another_shape():
    import numpy as np
    import torch

    from pluralign.reward.pal import UserWeights

    table = UserWeights(2)
    table.set("ann", torch.tensor([1.0, -1.0]))
    # a string is a sequence of one-letter users: stack("ann") gave three prior rows, silently
    with pytest.raises(TypeError, match="`users`.*list of user ids"):
        table.stack("ann")
    assert table.stack(["ann"])[0].tolist() == [[1.0, -1.0]]
    # a user id that is not a string was stored, then saved as JSON text and read back as another key
    with pytest.raises(TypeError, match="`user_id` must be a str, got int"):
        table.set(3, torch.zeros(2))
    # a (2, 2) table of two users' logits was flattened into one user's four
    wide = UserWeights(4)
    with pytest.raises(ValueError, match=r"`logits` of 'ann' has shape \(2, 2\)"):
        wide.set("ann", torch.zeros(2, 2))
    wide.set("ann", torch.zeros(1, 4))  # one row of K is one user's logits
    with pytest.raises(ValueError, match=r"`prior` has shape \(2, 2\)"):
        UserWeights(4, torch.zeros(2, 2))


def test_user_weights_from_logits_names_logits_that_are_not_one_row_per_user():
    import numpy as np
    import torch

    from pluralign.reward.pal import UserWeights

    with pytest.raises(ValueError, match=r"`logits` has shape \(2,\); one row of K logits per user is \(U, K\) = \(2, K\)"):
        UserWeights.from_logits(["a", "b"], torch.zeros(2))  # was IndexError: tuple index out of range
    bad = torch.zeros(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="`logits` row 1 .*'b'.* not finite"):  # was "`prior` is not finite"
        UserWeights.from_logits(["a", "b"], bad)
    table = UserWeights.from_logits(["a", "b"], np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))  # was AttributeError: detach
    assert table.k == 3 and table.get("b").tolist() == [0.0, 1.0, 0.0]
