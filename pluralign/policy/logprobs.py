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

from pluralign.policy.chat_template import chat_prompt_ids, text_ids

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

    @property
    def keep(self) -> int:
        """Logits needed for the last `keep` columns."""
        return self.response_mask.shape[1] + 1

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Mask and positions for the model (besides the token ids or embeddings)."""
        return {"attention_mask": self.attention_mask, "position_ids": position_ids(self.attention_mask)}

    def logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) summed log-probabilities of each row's response from the last `keep` columns' logits."""
        return response_logprobs(logits, self)


def prompt_ids(tokenizer, messages: Sequence[dict[str, str]], last: int | None = None) -> list[int]:
    """Token ids of the chat prompt, ending where the assistant's answer starts: the ids the served chat
    has (`chat_prompt_ids`: a message's text is text, its spellings of special tokens included). `last`: its last
    `last` ids only (an over-long prompt loses its start), the rest not tokenized."""
    return chat_prompt_ids(tokenizer, messages, last=last)


def answer_ids(tokenizer, response: str, max_response_tokens: int) -> list[int]:
    """A response's token ids read as text (`text_ids`), cut to fit (the rest not tokenized), ending with the
    end-of-turn token (one encoding for both batch kinds, so packed and unpacked rows score the same tokens)."""
    return text_ids(tokenizer, response, first=max(max_response_tokens - 1, 0)) + [tokenizer.eos_token_id]


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
        prompt = prompt_ids(tokenizer, messages, last=max_prompt_tokens)
        answer = answer_ids(tokenizer, response, max_response_tokens)
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


@dataclass(frozen=True)
class PackedBatch:
    """Several prompts and their responses in one row, sharing the prompts' common beginning.

    A row holds a shared prefix once (the prompts' longest common token prefix, e.g. a user's
    few-shot context), then each prompt's remainder, then each response. A prompt's remainder
    attends to the prefix and itself; a response attends to the prefix, its prompt's remainder
    and itself (a 4-D attention mask), with positions continuing from its own prompt's end, so every
    response scores exactly as it would alone after its prompt, and the shared tokens are computed
    once for all of them. Rows are left-padded so they end at the last column. Responses come back
    in the order they were given.
    """

    input_ids: torch.Tensor  # (B, T)
    allowed: torch.Tensor  # (B, T, T) bool: query i may attend to key j
    positions: torch.Tensor  # (B, T)
    row: torch.Tensor  # (N,) the row of each response
    sources: torch.Tensor  # (N, R) column (within the kept window) whose logits predict each token
    targets: torch.Tensor  # (N, R) token ids
    target_mask: torch.Tensor  # (N, R) 1 on real tokens
    keep: int  # logits needed for the last `keep` columns

    def to(self, device: torch.device) -> PackedBatch:
        names = ("input_ids", "allowed", "positions", "row", "sources", "targets", "target_mask")
        return PackedBatch(**{f: getattr(self, f).to(device) for f in names}, keep=self.keep)

    def model_inputs(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        blocked = torch.finfo(dtype).min  # not -inf: a pad query with nothing else to attend stays finite
        mask = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
        mask.masked_fill_(~self.allowed, blocked)
        return {"attention_mask": mask[:, None], "position_ids": self.positions}

    def logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,) summed log-probabilities of each response from the kept window's logits (B, keep, V)."""
        picked = logits[self.row[:, None], self.sources].float()  # (N, R, V)
        token_logp = -F.cross_entropy(picked.transpose(1, 2), self.targets, reduction="none")  # (N, R)
        return (token_logp * self.target_mask.to(token_logp.dtype)).sum(-1)


def _common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    shortest = min(len(s) for s in sequences)
    for i in range(shortest):
        if any(s[i] != sequences[0][i] for s in sequences):
            return i
    return shortest


def _lay_out_row(input_ids: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor, col: int,
                 tokens: list[list[int]], shared: int, answers: list[tuple[int, list[int]]]) -> list[tuple[int, int]]:
    """Write one row of a packed batch in place from column `col` (left of it: pads, each query
    seeing itself only): the prompts' `shared` first tokens, each prompt's remainder, then each
    answer (prompt index, tokens), every answer attending to its own prompt only. `input_ids` and
    `positions` are the row's (T,), `allowed` its (T, T) attention mask. Returns per answer (its
    first column, the column whose logits predict its first token)."""
    allowed[torch.arange(col), torch.arange(col)] = True  # pad queries see themselves only
    start = col
    input_ids[col : col + shared] = torch.tensor(tokens[0][:shared], dtype=torch.long)
    positions[col : col + shared] = torch.arange(shared)
    allowed[col : col + shared, col : col + shared] = torch.ones(shared, shared, dtype=torch.bool).tril()
    col += shared
    ends = []  # per prompt: (its remainder's columns, its length)
    for t in tokens:
        n = len(t) - shared
        rest = slice(col, col + n)
        input_ids[rest] = torch.tensor(t[shared:], dtype=torch.long)
        positions[rest] = torch.arange(shared, len(t))
        allowed[rest, start : start + shared] = True
        allowed[rest, rest] = torch.ones(n, n, dtype=torch.bool).tril()
        ends.append((rest, len(t)))
        col += n
    spans = []
    for prompt, answer in answers:
        (rest, p), n = ends[prompt], len(answer)
        own = slice(col, col + n)
        input_ids[own] = torch.tensor(answer, dtype=torch.long)
        positions[own] = torch.arange(p, p + n)
        allowed[own, start : start + shared] = True
        allowed[own, rest] = True
        allowed[own, own] = torch.ones(n, n, dtype=torch.bool).tril()
        predictor = rest.stop - 1 if rest.stop > rest.start else start + shared - 1
        spans.append((col, predictor))
        col += n
    return spans


def encode_packed(
    tokenizer,
    conversations: Sequence[Sequence[dict[str, str]]],
    responses: Sequence[str],
    max_prompt_tokens: int = 1024,
    max_response_tokens: int = 128,
    rows: Sequence[int] | None = None,
) -> PackedBatch:
    """Pack (conversation, response) pairs into rows: `rows[i]` names pair i's row (default: one
    row per distinct conversation). Each response ends with the end-of-turn token; log-probabilities
    equal `encode_responses` on the same pairs."""
    if len(conversations) != len(responses):
        raise ValueError(f"{len(conversations)} conversations for {len(responses)} responses")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    keys = [tuple((m["role"], m["content"]) for m in messages) for messages in conversations]
    if rows is None:
        first_seen: dict[tuple, int] = {}
        rows = [first_seen.setdefault(k, len(first_seen)) for k in keys]
    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} row numbers for {len(responses)} responses")
    row_number = {name: r for r, name in enumerate(sorted(set(rows)))}
    prompts: dict[tuple, list[int]] = {}
    for key, messages in zip(keys, conversations, strict=True):
        if key not in prompts:
            prompts[key] = prompt_ids(tokenizer, messages, last=max_prompt_tokens)
    # per row: its distinct prompts (in order of first use), and per response (prompt index, tokens)
    row_prompts: list[list[tuple]] = [[] for _ in row_number]
    row_answers: list[list[tuple[int, list[int]]]] = [[] for _ in row_number]
    where: list[tuple[int, int]] = []  # per response: (row, index among the row's answers)
    for key, response, name in zip(keys, responses, rows, strict=True):
        r = row_number[name]
        if key not in row_prompts[r]:
            row_prompts[r].append(key)
        where.append((r, len(row_answers[r])))
        row_answers[r].append((row_prompts[r].index(key), answer_ids(tokenizer, response, max_response_tokens)))
    # lay each row out: shared prefix, each prompt's remainder, then the answers
    layouts = []
    for keys_r, answers in zip(row_prompts, row_answers, strict=True):
        tokens = [prompts[k] for k in keys_r]
        # with several prompts each keeps at least one token of its own (one may begin another)
        shared = len(tokens[0]) if len(tokens) == 1 else min(_common_prefix(tokens), min(map(len, tokens)) - 1)
        length = shared + sum(len(t) - shared for t in tokens) + sum(len(a) for _, a in answers)
        layouts.append((tokens, shared, answers, length))
    width = max(layout[3] for layout in layouts)
    b = len(layouts)
    input_ids = torch.full((b, width), pad, dtype=torch.long)
    allowed = torch.zeros((b, width, width), dtype=torch.bool)
    positions = torch.zeros((b, width), dtype=torch.long)
    answer_spans: list[list[tuple[int, int]]] = []  # per row, per answer: (first column, predictor column)
    first_answer = width  # the leftmost answer column of any row: logits are kept from there
    for r, (tokens, shared, answers, length) in enumerate(layouts):
        spans = _lay_out_row(input_ids[r], allowed[r], positions[r], width - length, tokens, shared, answers)
        first_answer = min(first_answer, *(predictor for _, predictor in spans))
        answer_spans.append(spans)
    keep = width - first_answer
    longest = max(len(a) for answers in row_answers for _, a in answers)
    n = len(where)
    sources = torch.zeros((n, longest), dtype=torch.long)
    targets = torch.full((n, longest), pad, dtype=torch.long)
    target_mask = torch.zeros((n, longest), dtype=torch.long)
    for i, (r, j) in enumerate(where):
        answer = row_answers[r][j][1]
        begin, predictor = answer_spans[r][j]
        cols = [predictor] + list(range(begin, begin + len(answer) - 1))
        sources[i, : len(answer)] = torch.tensor(cols) - (width - keep)
        targets[i, : len(answer)] = torch.tensor(answer)
        target_mask[i, : len(answer)] = 1
    row_index = torch.tensor([r for r, _ in where], dtype=torch.long)
    return PackedBatch(input_ids, allowed, positions, row_index, sources, targets, target_mask, keep)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted from each row's first real token (pads get 0)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def sequence_logprobs(model, batch: ScoringBatch | PackedBatch, adapter_names: Sequence[str] | None = None) -> torch.Tensor:
    """(B,) sum of log pi(response token | everything before it) over each row's response (for a
    packed batch, (N,) over its responses).

    `adapter_names` (one per row) needs a peft model in eval mode; without it the active adapter (or
    the plain model) scores every row. Gradients flow when the caller has them enabled.
    """
    weight = next(model.parameters())
    batch = batch.to(weight.device)
    kwargs = {}
    if adapter_names is not None:
        if len(adapter_names) != batch.input_ids.shape[0]:
            raise ValueError(f"{len(adapter_names)} adapter names for {batch.input_ids.shape[0]} rows")
        kwargs["adapter_names"] = list(adapter_names)
    out = model(
        input_ids=batch.input_ids,
        **batch.model_inputs(weight.dtype),
        logits_to_keep=batch.keep,
        use_cache=False,
        **kwargs,
    )
    return batch.logprobs(out.logits)


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
