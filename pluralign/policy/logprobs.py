"""Sequence log-probabilities of responses under a causal LM, given chat messages.

Rows are left-padded so that every response ends at the last column: the model then needs logits
only for the last R+1 positions (`logits_to_keep`), which skips the vocabulary projection over the
long few-shot prompt. Positions are counted from each row's first real token, so a row scores the
same whatever it is batched with. Works with plain models and peft models, and with peft's per-row
`adapter_names` (each row names its adapter, "__base__" for none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class ScoringBatch:
    """Prompt + response token rows, left-padded; the response occupies each row's last tokens.

    >>> batch = encode_responses(tokenizer, [[{"role": "user", "content": "Hi"}]], ["Hello!"])
    >>> sequence_logprobs(model, batch)  # tensor([-12.3])
    """

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    response_mask: torch.Tensor  # (B, R) 1 where column T-R+j is a response token of that row

    def to(self, device: torch.device) -> ScoringBatch:
        return ScoringBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def prompt_ids(tokenizer, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of the chat prompt, ending where the assistant's answer starts."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_responses(
    tokenizer,
    conversations: Sequence[Sequence[dict[str, str]]],
    responses: Sequence[str],
    max_prompt_tokens: int = 1024,
    max_response_tokens: int = 128,
) -> ScoringBatch:
    """One row per (conversation, response); the response ends with the end-of-turn token.

    An over-long prompt loses its oldest tokens (the start of the context), never the response.
    """
    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} conversations for {len(responses)} responses")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, answer_lengths = [], []
    for messages, response in zip(conversations, responses, strict=True):
        prompt = prompt_ids(tokenizer, messages)[-max_prompt_tokens:]
        answer = tokenizer(response, add_special_tokens=False)["input_ids"][: max_response_tokens - 1]
        answer = answer + [tokenizer.eos_token_id]
        rows.append(prompt + answer)
        answer_lengths.append(len(answer))
    width = max(len(r) for r in rows)
    span = max(answer_lengths)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), span), dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, answer_lengths, strict=True)):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
        response_mask[i, span - n :] = 1
    return ScoringBatch(input_ids, attention_mask, response_mask)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted from each row's first real token (pads get 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(model, batch: ScoringBatch, adapter_names: Sequence[str] | None = None) -> torch.Tensor:
    """(B,) sum of log pi(response token | everything before it) over each row's response.

    `adapter_names` (one per row) needs a peft model in eval mode; without it the active adapter (or
    the plain model) scores every row. Gradients flow when the caller has them enabled.
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    span = batch.response_mask.shape[1]
    kwargs = {}
    if adapter_names is not None:
        if len(adapter_names) != batch.input_ids.shape[0]:
            raise ValueError(f"{len(adapter_names)} adapter names for {batch.input_ids.shape[0]} rows")
        kwargs["adapter_names"] = list(adapter_names)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids(batch.attention_mask),
        logits_to_keep=span + 1,
        use_cache=False,
        **kwargs,
    )
    return response_logprobs(out.logits, batch)


def response_logprobs(logits: torch.Tensor, batch: ScoringBatch) -> torch.Tensor:
    """(B,) summed log-probabilities of each row's response from the last R+1 positions' logits."""
    span = batch.response_mask.shape[1]
    logits = logits[:, :-1].float()  # (B, R, V): position T-R-1+j predicts token T-R+j
    targets = batch.input_ids[:, -span:]  # (B, R)
    token_logp = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, R)
    return (token_logp * batch.response_mask.to(token_logp.dtype)).sum(-1)


def score_responses(
    model,
    tokenizer,
    conversations: Sequence[Sequence[dict[str, str]]],
    responses: Sequence[str],
    adapter_names: Sequence[str] | None = None,
    batch_size: int = 8,
    **encode_kwargs,
) -> torch.Tensor:
    """(N,) log-probabilities in batches, without gradients; a convenience over the two above."""
    scores = []
    with torch.no_grad():
        for start in range(0, len(responses), batch_size):
            stop = start + batch_size
            batch = encode_responses(tokenizer, conversations[start:stop], responses[start:stop], **encode_kwargs)
            names = None if adapter_names is None else adapter_names[start:stop]
            scores.append(sequence_logprobs(model, batch, names).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)
