"""Session review longtext57: generation from a long prompt (an imported row's; MaxMin's candidate sampling,
`maxmin.generate`, and the adapters' `AdapterPool.generate`) reads its last `max_prompt_tokens` tokens, which end with
the chat template's opening of the answer, as the adapters' scoring reads a prompt, and tokenizes only an end of it.
Before, the whole prompt was tokenized and fed to the model: a 1 MB prompt was ~250,000 tokens past the model's context
(attention over all of them), and here a 21 KB one was read whole."""

from __future__ import annotations

import pytest
import torch

from pluralign.policy import logprobs, maxmin
from pluralign.policy.adapters import AdapterPool, AdapterRegistry, ModelHost
from tests.models.policy.test_longtext57_training_cut import Reading

LONG = "The committee met on Tuesday; its members, weary, argued until dawn about the budget. " * 250  # 21 KB
KEEP = 64  # prompt tokens read
READ_AT_MOST = 4 * 8 * KEEP  # characters of the prompt tokenized: ends of 512, then 2,048 characters


def sampled(model, tokenizer, ids: list[int], new: int) -> str:
    """What the model samples (seed 0, temperature 1) from exactly `ids` (one row, no padding); a tiny random model's
    greedy answer is newlines whatever it reads."""
    torch.manual_seed(0)
    out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=new, do_sample=True, temperature=1.0, top_p=1.0, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def test_maxmin_generation_reads_a_long_prompts_end(tokenizer, make_tiny_lm):
    model, reading = make_tiny_lm(), Reading(tokenizer)
    got = maxmin.generate(model, reading, [LONG + " What now?"], max_new_tokens=6, temperature=1.0, max_prompt_tokens=KEEP)
    assert reading.longest <= READ_AT_MOST, reading.longest  # before: 21,618 characters
    whole = maxmin.prompt_ids(tokenizer, LONG + " What now?")
    assert len(whole) > 4 * KEEP
    assert got == [sampled(model, tokenizer, whole[-KEEP:], 6).strip()] and got[0]
    with pytest.raises(ValueError, match="`max_prompt_tokens` must be a whole number >= 1, got 0"):
        maxmin.generate(model, tokenizer, ["Hi?"], max_prompt_tokens=0)


def test_adapter_pool_generation_reads_a_long_prompts_end(tokenizer, make_tiny_lm, tmp_path):
    pool = AdapterPool(ModelHost(make_tiny_lm()), AdapterRegistry(tmp_path), "tiny-llama-a", budget_bytes=1 << 20)
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG + " What now?"}]
    reading = Reading(tokenizer)
    torch.manual_seed(0)
    got = pool.generate([None], [conversation], reading, max_new_tokens=6,
                        max_prompt_tokens=KEEP, do_sample=True, temperature=1.0, top_p=1.0)
    assert reading.longest <= READ_AT_MOST, reading.longest  # before: 21,599 characters
    whole = logprobs.prompt_ids(tokenizer, conversation)
    assert len(whole) > 4 * KEEP
    assert got[0] == sampled(pool.model, tokenizer, whole[-KEEP:], 6) and got[0]
    with pytest.raises(ValueError, match="`max_prompt_tokens` must be a whole number >= 1, got 0"):
        pool.generate([None], [conversation], tokenizer, max_prompt_tokens=0)
