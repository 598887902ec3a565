"""Packed scoring (one row per context, every answer after it) equals scoring each pair in its own row."""

from __future__ import annotations

import pytest
import torch

from pluralign.data.record import Preference
from pluralign.policy.fspo import FSPOConfig, add_lora, context_groups, pair_batch, training_episodes
from pluralign.policy.logprobs import encode_packed, encode_responses, sequence_logprobs
from pluralign.policy.trunk import head_logprobs, trunk_states


def _pairs(tokenizer):
    """Three contexts of different lengths, the first with three answers (one a prefix of another)."""
    a = [{"role": "user", "content": "Which colour do you like?"}]
    b = [{"role": "system", "content": "These are this user's past preferences: red over blue."}, *a]
    c = [{"role": "user", "content": "Hi"}]
    conversations = [a, b, a, c, a]
    responses = ["Red.", "Blue, always blue.", "Red, and a little green too.", "Hello there!", "Red"]
    return conversations, responses


@pytest.mark.parametrize("rows", [None, [0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 0, 1, 0, 2]])
def test_packed_logprobs_equal_one_row_per_pair(make_tiny_lm, tokenizer, rows):
    """Default rows (one per distinct conversation), and rows mixing different prompts that share a
    beginning (a system message) or share nothing."""
    model = make_tiny_lm(layers=3)
    conversations, responses = _pairs(tokenizer)
    packed = encode_packed(tokenizer, conversations, responses, rows=rows)
    assert packed.input_ids.shape[0] == (3 if rows is None else len(set(rows)))
    with torch.no_grad():
        alone = sequence_logprobs(model, encode_responses(tokenizer, conversations, responses))
        together = sequence_logprobs(model, packed)
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    assert len(set(alone.tolist())) == len(responses)  # distinct scores: the order is checked too


def test_packed_gradients_and_trunk_match_one_row_per_pair(make_tiny_lm, tokenizer):
    config = FSPOConfig(shots=2, lora_layers=2)
    policy = add_lora(make_tiny_lm(layers=4), config)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    conversations, responses = _pairs(tokenizer)
    params = {n: p for n, p in policy.named_parameters() if p.requires_grad}
    policy.train()
    weights = torch.arange(1.0, len(responses) + 1)  # a loss that weighs each answer differently
    (weights * sequence_logprobs(policy, encode_responses(tokenizer, conversations, responses))).sum().backward()
    alone = {n: p.grad.clone() for n, p in params.items()}
    policy.zero_grad()
    packed = encode_packed(tokenizer, conversations, responses, rows=[0, 1, 0, 1, 0])
    (weights * head_logprobs(policy, trunk_states(policy, packed, 2), packed, 2)).sum().backward()
    for name, p in params.items():
        torch.testing.assert_close(p.grad, alone[name], atol=1e-4, rtol=1e-3, msg=name)


def test_episodes_sharing_shots_pack_into_one_row(tokenizer):
    prefs = {  # each comparison its own question: rows share the shots, not the question
        f"u-{i}": [Preference(user_id=f"u-{i}", prompt=f"Q{j}?", chosen=f"yes {j}", rejected=f"no {j}") for j in range(8)]
        for i in range(3)
    }
    eps = training_episodes(prefs, shots=2, count=12, seed=0, queries=4)
    assert len(eps) == 12
    groups = context_groups(eps)
    assert [len(g) for g in groups] == [4, 4, 4]
    for g in groups:  # each group: one user, one set of shots, distinct held-out comparisons
        assert len({eps[i].user_id for i in g}) == 1
        held = [(eps[i].question, eps[i].chosen, eps[i].rejected) for i in g]
        assert len(set(held)) == len(held)
        shots = {(s.question, s.preferred, s.dispreferred) for s in eps[g[0]].shots}
        assert not shots & set(held)  # no held-out comparison is also a shot
    batch = pair_batch(tokenizer, eps, FSPOConfig(shots=2))
    assert batch.input_ids.shape[0] == 3 and batch.row.shape[0] == 24


def test_pair_batch_scores_like_one_row_per_pair(make_tiny_lm, tokenizer):
    prefs = {
        f"u-{i}": [
            Preference(user_id=f"u-{i}", prompt=f"Question {j} of {i}?", chosen=f"yes {j} {i}", rejected=f"no, {j}")
            for j in range(6)
        ]
        for i in range(2)
    }
    config = FSPOConfig(shots=2)
    eps = training_episodes(prefs, shots=2, count=6, seed=1, queries=3)
    model = make_tiny_lm(layers=2)
    alone = encode_responses(tokenizer, [e.messages() for e in eps] * 2, [e.chosen for e in eps] + [e.rejected for e in eps])
    with torch.no_grad():
        torch.testing.assert_close(
            sequence_logprobs(model, pair_batch(tokenizer, eps, config)), sequence_logprobs(model, alone), atol=1e-4, rtol=1e-4
        )


def test_only_consecutive_episodes_of_one_context_are_grouped(tokenizer):
    """Without shots every episode of a user has the same context: draws stay separate groups."""
    prefs = {
        f"u-{i}": [Preference(user_id=f"u-{i}", prompt="Which?", chosen=f"yes {j}", rejected=f"no {j}") for j in range(8)]
        for i in range(2)
    }
    eps = training_episodes(prefs, shots=0, count=16, seed=0, queries=4)  # 4 draws: u, v, u, v
    groups = context_groups(eps)
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    assert eps[groups[0][0]].user_id == eps[groups[2][0]].user_id  # the same user, drawn twice, two groups
