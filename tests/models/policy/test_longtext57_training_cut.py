"""Session longtext57: MaxMin and FSPO runs over rows holding 100 KB texts (an imported file's hostile rows) tokenize
only the start or end of each text they keep tokens of, and train on exactly the tokens of the whole texts. Before, each
such text was tokenized whole (4 rows of 1 MB: 20 s and +180 MB for MaxMin's `tokenize_pairs`, 18 s for FSPO's
`pair_batch`, on SmolLM2's tokenizer) to keep its first 160 tokens or its last 1,024.

`Reading` is SmolLM2's real tokenizer, noting the longest text it is called on (what the runs read), nothing else."""

from __future__ import annotations

import copy
import math

import torch

from pluralign.data.record import Preference
from pluralign.policy.chat_template import chat_prompt_ids, text_ids
from pluralign.policy.fspo import FSPOConfig, ReferencePolicy, episode, pair_batch, train
from pluralign.policy.maxmin import MaxMinConfig, is_finished, tokenize_pairs, train_maxmin, with_lora
from pluralign.policy.maxmin import prompt_ids as maxmin_prompt_ids

HUGE = "The committee met on Tuesday; its members, weary, argued until dawn about the budget. " * 1_200  # 103 KB
CJK = "我们今天讨论了预算问题，委员会成员一直争论到天亮。这是一个很长的句子没有空格" * 2_500  # 95,000 characters
READ_AT_MOST = 20_000  # characters of a text tokenized: a start or end of it (the cuts read 1,280 to 32,768 at first)


class Reading:
    """`tokenizer` itself (every attribute its own), its calls noting the longest text in `longest`."""

    def __init__(self, tokenizer):
        self.__dict__.update(_tokenizer=tokenizer, longest=0)

    def __call__(self, text, *args, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        self.__dict__["longest"] = max(self.longest, *map(len, texts))
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def records() -> list[Preference]:
    short = [Preference(user_id=f"u{i}", prompt=f"Why is the sky blue, {i}?", chosen="Rayleigh scattering.",
                        rejected="It reflects the sea") for i in range(4)]
    long = [Preference(user_id="u0", prompt=HUGE, chosen="Short answer.", rejected=CJK),
            Preference(user_id="u1", prompt="A fair question?", chosen=HUGE + " The end.", rejected="No"),
            Preference(user_id="u2", prompt=CJK + "?", chosen=CJK, rejected=HUGE)]
    return short + long


def whole_maxmin_row(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], int]:
    """What a row of `tokenize_pairs` is from the whole texts' ids: the prompt's last `max_length // 2`, then the
    answer's first ones (maxmin57)."""
    prompt_ids = maxmin_prompt_ids(tokenizer, prompt)[-(max_length // 2) :]
    ids = (prompt_ids + text_ids(tokenizer, response) + ([tokenizer.eos_token_id] if is_finished(response) else []))[:max_length]
    return ids, len(prompt_ids)


def test_a_maxmin_run_on_rows_of_long_texts_reads_their_ends_and_starts_and_trains_on_the_whole_texts_tokens(tokenizer, make_tiny_lm):
    reading, rows = Reading(tokenizer), records()
    pairs = tokenize_pairs(rows, reading, max_length=64)
    assert reading.longest <= READ_AT_MOST, reading.longest  # before: 103,201 characters
    for i, row in enumerate(rows):
        for response, ids, mask in ((row.chosen, pairs.chosen_ids, pairs.chosen_response),
                                    (row.rejected, pairs.rejected_ids, pairs.rejected_response)):
            want, n_prompt = whole_maxmin_row(tokenizer, row.prompt, response, 64)
            assert ids[i, : len(want)].tolist() == want
            assert mask[i].nonzero().flatten().tolist() == list(range(n_prompt, len(want)))
    config = MaxMinConfig(steps=2, batch_size=4, lr=1e-2, lora_r=4, lora_alpha=8, seed=0)
    log = train_maxmin(with_lora(make_tiny_lm(), config), pairs, config)
    assert len(log.loss) == 2 and all(math.isfinite(x) for x in log.loss), log.loss


def test_an_fspo_run_on_episodes_of_long_texts_reads_their_ends_and_starts_and_trains_on_the_whole_texts_tokens(
        tokenizer, make_tiny_lm):
    rows = records()
    episodes = [episode([rows[(i + 1) % len(rows)]], row) for i, row in enumerate(rows)]
    config = FSPOConfig(shots=1, loss="dpo", beta=1.0, full_finetune=True, lr=1e-2, steps=2, batch_size=2,
                        max_prompt_tokens=128, max_response_tokens=16, seed=0)
    reading = Reading(tokenizer)
    for one in episodes:
        batch = pair_batch(reading, [one], config)  # one row: the prompt once, then the chosen and rejected answers
        prompt = chat_prompt_ids(tokenizer, one.messages())[-128:]  # the prompt's end: the question's last tokens
        answers = [text_ids(tokenizer, answer)[:15] + [tokenizer.eos_token_id] for answer in (one.chosen, one.rejected)]
        want = prompt + answers[0] + answers[1]
        assert batch.input_ids[0, -len(want) :].tolist() == want
    assert reading.longest <= READ_AT_MOST, reading.longest  # before: 103,201 characters
    policy = make_tiny_lm()
    before = copy.deepcopy(policy.state_dict())
    train(policy, ReferencePolicy(policy, full_copy=copy.deepcopy(policy)), reading, episodes, config)
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert reading.longest <= READ_AT_MOST, reading.longest
