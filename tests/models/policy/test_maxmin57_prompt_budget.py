"""Session maxmin57: MaxMin's `tokenize_pairs` cuts a comparison as TRL's DPO does: the chat-formatted prompt keeps
its last `max_prompt_length` tokens (the turns nearest the answer, where the question is), each answer its first
`max_length - len(prompt)`. Before, the prompt kept its start and the answer what was left of `max_length`: a prompt of
160 tokens or more left no answer token, so such a row trained on nothing."""

from __future__ import annotations

import pytest
import torch

from pluralign.data.record import Preference
from pluralign.policy.chat_template import text_ids
from pluralign.policy.maxmin import MaxMinConfig, is_finished, tokenize_pairs, train_maxmin, with_lora
from pluralign.policy.maxmin import prompt_ids as maxmin_prompt_ids

CONTEXT = "The council met in the old hall on Tuesday and argued about the budget for the harbour until late. "


def long_prompt(i: int) -> str:
    return CONTEXT * 14 + f"Question {i}: which day did the council meet, and where?"


def long_rows() -> list[Preference]:
    return [Preference(user_id=f"u{i}", prompt=long_prompt(i), chosen="On Tuesday, in the old hall. " * 30,
                       rejected="I do not know") for i in range(4)]


def answer_ids(tokenizer, answer: str) -> list[int]:
    return text_ids(tokenizer, answer) + ([tokenizer.eos_token_id] if is_finished(answer) else [])


def test_a_row_whose_prompt_fills_the_budget_keeps_the_prompts_end_and_the_answers_start(tokenizer):
    rows = long_rows()
    pairs = tokenize_pairs(rows, tokenizer)  # max_length 160, max_prompt_length 80
    for i, row in enumerate(rows):
        whole_prompt = maxmin_prompt_ids(tokenizer, row.prompt)
        assert len(whole_prompt) >= 300, len(whole_prompt)
        for answer, ids, attention, response in (
                (row.chosen, pairs.chosen_ids, pairs.chosen_attention, pairs.chosen_response),
                (row.rejected, pairs.rejected_ids, pairs.rejected_attention, pairs.rejected_response)):
            n = int(attention[i].sum())
            want = answer_ids(tokenizer, answer)[: 160 - 80]
            assert ids[i, :80].tolist() == whole_prompt[-80:]  # the prompt's end: the question and the answer's opening
            assert ids[i, 80:n].tolist() == want  # before: no answer token at all
            assert response[i].nonzero().flatten().tolist() == list(range(80, 80 + len(want)))
    assert len(pairs.chosen_ids[0]) == 160 and "Question 0" in tokenizer.decode(pairs.chosen_ids[0, :80])


def test_rows_whose_prompt_fits_the_budget_encode_as_before(tokenizer):
    """A prompt within `max_prompt_length` is kept whole, and the answer cut to what is left of `max_length`: the ids
    of the earlier rule, prompt and answer cut together, bit for bit (a long answer cut, a short one whole)."""
    rows = [Preference(user_id="u0", prompt="Why is the sky blue?", chosen="Rayleigh scattering. " * 40,
                       rejected="It reflects the sea"),
            Preference(user_id="u1", prompt="Name a colour.", chosen="Blue.", rejected="Seven " * 200)]
    for max_length, max_prompt_length in ((160, None), (64, 40), (40, 30)):
        pairs = tokenize_pairs(rows, tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
        for i, row in enumerate(rows):
            prompt = maxmin_prompt_ids(tokenizer, row.prompt)
            assert len(prompt) <= (max_prompt_length or max_length // 2)
            for answer, ids, attention, response in (
                    (row.chosen, pairs.chosen_ids, pairs.chosen_attention, pairs.chosen_response),
                    (row.rejected, pairs.rejected_ids, pairs.rejected_attention, pairs.rejected_response)):
                before = (prompt + answer_ids(tokenizer, answer))[:max_length]  # the earlier rule, from the whole texts
                assert ids[i, : int(attention[i].sum())].tolist() == before
                assert response[i].nonzero().flatten().tolist() == list(range(len(prompt), len(before)))


def test_a_maxmin_run_on_rows_whose_prompts_fill_the_budget_trains_its_lora_weights(tokenizer, make_tiny_lm):
    config = MaxMinConfig(steps=2, batch_size=4, lr=1e-2, lora_r=4, lora_alpha=8, seed=0)
    pairs = tokenize_pairs(long_rows(), tokenizer, config.max_length, config.max_prompt_length)
    policy = with_lora(make_tiny_lm(), config)
    before = {k: v.clone() for k, v in policy.named_parameters() if v.requires_grad}
    train_maxmin(policy, pairs, config)
    changed = [k for k, v in policy.named_parameters() if v.requires_grad and not torch.equal(before[k], v)]
    assert changed, "no LoRA weight changed: the run trained on no answer token"


@pytest.mark.parametrize(("max_length", "max_prompt_length", "named"), [
    (160, 160, "max_prompt_length"), (160, 200, "max_prompt_length"), (160, 0, "max_prompt_length"),
    (160, 1.5, "max_prompt_length"), (160, True, "max_prompt_length"), (1, None, "max_length")])
def test_a_prompt_budget_that_leaves_no_answer_token_is_refused_naming_it(tokenizer, max_length, max_prompt_length, named):
    with pytest.raises(ValueError, match=f"`{named}`"):
        MaxMinConfig(max_length=max_length, max_prompt_length=max_prompt_length)
    with pytest.raises(ValueError, match=f"`{named}`"):
        tokenize_pairs(long_rows(), tokenizer, max_length=max_length, max_prompt_length=max_prompt_length)
