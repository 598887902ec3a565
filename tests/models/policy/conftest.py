"""Tiny random causal LMs with SmolLM2's tokenizer, for tests that really train and serve adapters."""

from __future__ import annotations

import os

import pytest
import torch

# The CI box has 2 shared cores: one intra-op thread avoids OpenMP spin-waits under contention
# (measured 5x faster for these tiny models).
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # peft looks up base model configs by id when saving


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from pluralign.embed.models import smollm2_dir

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture
def make_tiny_lm(tokenizer):
    """make_tiny_lm(name="tiny-a", seed=0) -> a 2-layer (or `layers`) Llama with hidden size 32, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(name: str = "tiny-llama-a", seed: int = 0, hidden: int = 32, layers: int = 2):
        torch.manual_seed(seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        model = LlamaForCausalLM(config).eval()
        model.config.name_or_path = name
        return model

    return make
