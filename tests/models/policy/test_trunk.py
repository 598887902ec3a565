"""A frozen trunk computed once and a LoRA head run on it score exactly like the whole model."""

from __future__ import annotations

import pytest
import torch

from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, ScoredRows, add_lora, pair_batch, train
from pluralign.policy.logprobs import sequence_logprobs
from pluralign.policy.trunk import check_split, head_logprobs, lowest_adapted_layer, trunk_states
from tests.models.policy.test_fspo_tiny import episodes


def _policy(make_tiny_lm, lora_layers=2):
    config = FSPOConfig(shots=2, loss="dpo", beta=1.0, lora_layers=lora_layers, lr=5e-3, steps=6, batch_size=4)
    policy = add_lora(make_tiny_lm(layers=4), config)
    with torch.no_grad():  # a fresh LoRA is a no-op (B = 0): give it weights so on/off differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return policy, config


def _batch(tokenizer, config):
    import random

    eps = episodes([f"u-{i}" for i in range(3)], 3, config.shots, random.Random(1))
    return pair_batch(tokenizer, eps, config)  # rows of different lengths: left padding differs


def test_head_on_trunk_states_equals_the_whole_model_with_and_without_the_adapter(make_tiny_lm, tokenizer):
    policy, config = _policy(make_tiny_lm)
    batch = _batch(tokenizer, config)
    split = lowest_adapted_layer(policy)
    assert split == 2
    policy.eval()
    with torch.no_grad():
        states = trunk_states(policy, batch, split)
        assert states.shape[:2] == batch.input_ids.shape
        whole = sequence_logprobs(policy, batch)
        head = head_logprobs(policy, states, batch, split)
        with policy.disable_adapter():
            whole_ref = sequence_logprobs(policy, batch)
            head_ref = head_logprobs(policy, states, batch, split)
    torch.testing.assert_close(head, whole, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(head_ref, whole_ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(whole, whole_ref)  # the adapter matters, so the check above means something
    assert len(policy.get_base_model().model.layers) == 4  # the head's layer swap was undone


def test_gradients_through_the_head_equal_those_through_the_whole_model(make_tiny_lm, tokenizer):
    policy, config = _policy(make_tiny_lm)
    batch = _batch(tokenizer, config)
    policy.train()
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    sequence_logprobs(policy, batch).sum().backward()
    whole = {n: p.grad.clone() for n, p in params.items()}
    policy.zero_grad()
    head_logprobs(policy, trunk_states(policy, batch, 2), batch, 2).sum().backward()
    for name, p in params.items():
        torch.testing.assert_close(p.grad, whole[name], atol=1e-4, rtol=1e-3)


def test_a_trunk_below_an_adapted_layer_is_refused(make_tiny_lm, tokenizer):
    policy, config = _policy(make_tiny_lm)
    with pytest.raises(ValueError, match="adapted, below the split"):
        check_split(policy, 3)
    with pytest.raises(ValueError, match="split must be in 1..3"):
        check_split(policy, 4)
    everywhere, _ = _policy(make_tiny_lm, lora_layers=0)
    assert ReferencePolicy(everywhere).trunk_split() is None  # LoRA in every layer: no shared trunk


def test_training_on_kept_trunk_states_trains_the_head_only(make_tiny_lm, tokenizer):
    import random

    config = FSPOConfig(shots=2, loss="dpo", beta=1.0, lora_layers=2, lr=5e-2, steps=24, batch_size=4)
    policy = add_lora(make_tiny_lm(layers=4), config)  # a fresh LoRA: pi == pi_ref, DPO loss log 2
    reference = ReferencePolicy(policy)
    assert reference.trunk_split() == 2
    eps = episodes([f"u-{i}" for i in range(4)], 8, config.shots, random.Random(2))  # 2 batches, 6 steps: kept
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    stats = train(policy, reference, tokenizer, eps, config)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert stats["final_loss"] < 0.67  # from log 2 at the start, down on the kept batches
    rows = ScoredRows.build(reference, pair_batch(tokenizer, eps[:2], config))
    assert rows.states is not None and rows.split == 2
