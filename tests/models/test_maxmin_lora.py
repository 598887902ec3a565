"""MaxMin LoRA training on a tiny random Llama: the base stays frozen, the adapter learns, the
artifact round-trips and refuses another base model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from pluralign.embed.models import smollm2_dir
from pluralign.losses import dpo_loss
from pluralign.policy.maxmin import (
    MaxMinConfig,
    PolicyMeta,
    load_policy,
    maxmin_scores,
    ranked_pairs,
    reference_logps,
    save_policy,
    sequence_logps,
    tokenize_pairs,
    train_maxmin,
    with_lora,
)
from pluralign.policy.style_groups import GROUP_REWARDS, style_variants

ANSWERS = {
    "Why is the sky blue?": "Air scatters blue light more than red light. That is Rayleigh scattering.",
    "How do bees make honey?": "Bees collect nectar from flowers. They dry it in the hive until it thickens.",
}


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


def tiny_llama(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config).eval()
    model.config.name_or_path = "tiny-llama-test"
    return model


def rule_ranked_pairs():
    pairs = []
    for prompt, answer in ANSWERS.items():
        candidates = sorted(style_variants(answer).values())
        rewards = [[GROUP_REWARDS[g](c) for g in sorted(GROUP_REWARDS)] for c in candidates]
        pairs += ranked_pairs(prompt, candidates, maxmin_scores(torch.tensor(rewards).numpy()), source="test")
    return pairs


def logits_of(model, ids):
    return model(input_ids=ids.to(next(model.parameters()).device)).logits.cpu()


def mean_dpo_loss(policy, tokens, ref, beta):
    with torch.no_grad():
        c = sequence_logps(policy, tokens.chosen_ids, tokens.chosen_attention, tokens.chosen_response)
        r = sequence_logps(policy, tokens.rejected_ids, tokens.rejected_attention, tokens.rejected_response)
    return float(dpo_loss(c, r, ref[0], ref[1], beta).mean())


def test_lora_training_learns_and_leaves_the_base_bit_identical(tokenizer, tmp_path):
    config = MaxMinConfig(steps=8, batch_size=4, lr=2e-2, beta=0.5, lora_r=4, lora_alpha=8, seed=0)
    tokens = tokenize_pairs(rule_ranked_pairs(), tokenizer, max_length=96)
    base = tiny_llama(tokenizer)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    policy = with_lora(base, config)
    ref = reference_logps(policy, tokens)
    before = mean_dpo_loss(policy, tokens, ref, config.beta)
    log = train_maxmin(policy, tokens, config)
    after = mean_dpo_loss(policy, tokens, ref, config.beta)
    assert after < before - 0.05, (before, after)
    assert len(log.loss) == 8 and log.seconds_per_step > 0 and log.peak_memory_mb > 0

    trained = dict(policy.named_parameters())
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero: it moved
    base_now = policy.get_base_model().state_dict()
    for name, value in frozen.items():
        key = name if name in base_now else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_now[key], value), f"base weight {name} changed"

    # the artifact round-trips onto a fresh copy of the base and refuses another base
    meta = PolicyMeta(schema_version=1, kind="maxmin-lora", base_model="tiny-llama-test", objective="maxmin", heads=2, steps=8, beta=0.5, lora_r=4)
    save_policy(policy, tmp_path / "policy", meta)
    loaded, loaded_meta = load_policy(tmp_path / "policy", tiny_llama(tokenizer))
    assert loaded_meta == meta
    ids = tokens.chosen_ids[:2]
    with torch.no_grad():  # each model on its own device: load_policy places it on default_device()
        torch.testing.assert_close(logits_of(loaded, ids), logits_of(policy, ids))
    other = tiny_llama(tokenizer)
    other.config.name_or_path = "some-other-base"
    with pytest.raises(ValueError, match="some-other-base"):
        load_policy(tmp_path / "policy", other)


def test_train_maxmin_command_writes_a_loadable_artifact(tokenizer, tmp_path):
    import json

    from pluralign.data.io import write_jsonl
    from training.cli import main

    base_dir = tmp_path / "tiny-base"
    tiny_llama(tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    write_jsonl(rule_ranked_pairs(), tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    code = main(["train", "maxmin", "--pairs", str(tmp_path / "pairs.jsonl"), "--base", str(base_dir), "--steps", "2", "--batch-size", "2", "--lora-r", "2", "--out", str(out), "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and len(metrics["loss"]) == 2 and metrics["objective"] == "maxmin"
    base = LlamaForCausalLM.from_pretrained(base_dir)
    _, meta = load_policy(out, base)
    assert meta.base_model == str(base_dir) and meta.heads == 2


def test_only_finished_answers_end_with_the_end_of_sequence_token(tokenizer):
    from pluralign.data.record import Preference

    cut = Preference(user_id="u", prompt="Why?", chosen="Because it is.", rejected="Because the light is bent by the")
    tokens = tokenize_pairs([cut], tokenizer)
    last = lambda ids, attention: int(ids[0, int(attention[0].sum()) - 1])
    assert last(tokens.chosen_ids, tokens.chosen_attention) == tokenizer.eos_token_id
    assert last(tokens.rejected_ids, tokens.rejected_attention) != tokenizer.eos_token_id


def test_fine_tuning_on_the_top_candidate_alone_raises_its_likelihood(tokenizer, monkeypatch):
    """dpo_weight = 0: best-of-n fine-tuning (RAFT) on each question's top-ranked candidate; the
    rejected side plays no part and no reference pass is needed."""
    config = MaxMinConfig(steps=8, batch_size=4, lr=2e-2, lora_r=4, lora_alpha=8, dpo_weight=0.0, chosen_nll_weight=1.0, seed=0)
    tokens = tokenize_pairs(rule_ranked_pairs(), tokenizer, max_length=96)
    policy = with_lora(tiny_llama(tokenizer), config)

    def chosen_logp():
        with torch.no_grad():
            return float(sequence_logps(policy, tokens.chosen_ids, tokens.chosen_attention, tokens.chosen_response).mean())

    before = chosen_logp()
    calls = []
    import pluralign.policy.maxmin as maxmin

    real = maxmin.reference_logps
    monkeypatch.setattr(maxmin, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))
    train_maxmin(policy, tokens, config)
    assert chosen_logp() > before + 1.0 and calls == []
    with pytest.raises(ValueError, match="dpo_weight"):
        MaxMinConfig(dpo_weight=0.0, chosen_nll_weight=0.0)


def test_a_minimum_length_keeps_a_policy_from_answering_with_an_opening_alone(tokenizer):
    """`generate(min_new_tokens=N)`: a model that would end every answer at once (its end-of-sequence
    logit raised by 100) writes nothing without a minimum and at least N tokens with one."""
    from pluralign.policy.maxmin import generate

    model = tiny_llama(tokenizer)
    model.lm_head.register_forward_hook(lambda module, args, out: out.index_add(-1, torch.tensor([tokenizer.eos_token_id]), torch.full((*out.shape[:-1], 1), 100.0)))
    prompts = list(ANSWERS)
    assert generate(model, tokenizer, prompts, max_new_tokens=8, seed=0) == ["", ""]
    for text in generate(model, tokenizer, prompts, max_new_tokens=8, seed=0, min_new_tokens=5):
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= 4  # 5 sampled tokens; decoding may merge a pair
    with pytest.raises(ValueError, match="min_new_tokens"):
        generate(model, tokenizer, prompts, max_new_tokens=4, min_new_tokens=5)


def test_the_adapters_initialization_follows_its_seed_alone(tokenizer):
    """Before, the LoRA's random init drew from the process's torch RNG, so a run that first sampled
    the base's answers (no cache) started from another adapter than one that read them from a
    cache. Now the init follows `config.seed`, and the caller's random state is left as it was."""
    from peft import get_peft_model_state_dict

    config = MaxMinConfig(lora_r=4, lora_alpha=8, seed=3)

    def init(draws):
        model = tiny_llama(tokenizer)
        torch.manual_seed(draws)
        torch.rand(draws * 100)  # whatever ran before in the process
        before = torch.random.get_rng_state()
        policy = with_lora(model, config)
        assert torch.equal(torch.random.get_rng_state(), before)
        return {k: v.clone() for k, v in get_peft_model_state_dict(policy).items()}

    first, second = init(1), init(7)
    assert first.keys() == second.keys() and any("lora_A" in k for k in first)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = with_lora(tiny_llama(tokenizer), MaxMinConfig(lora_r=4, lora_alpha=8, seed=4))
    assert not all(torch.equal(first[k], v) for k, v in get_peft_model_state_dict(other).items())
