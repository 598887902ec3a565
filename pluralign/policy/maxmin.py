"""The MaxMin policy objective (Chakraborty et al., ICML 2024), trained as reward-ranked DPO.

The paper maximizes min_k r_k (one reward model per preference group, learned by EM) with PPO:
rollouts, K reward models and a value network every step. On two CPU cores that is minutes per
step and unstable at 135M parameters. We keep the paper's reward, min over groups of the
normalized group reward, and replace PPO by DPO on pairs ranked by that reward:

1. candidates per prompt (the base model's own answers and their variants) are scored by every
   group's reward head, each standardized over the prompt's candidates so that no head's scale
   dominates (`normalize_rewards`);
2. a candidate's MaxMin score is the minimum of its normalized group rewards (`maxmin_scores`;
   ties on it go to the groups' share-weighted mean);
   the scores pick the comparisons (`PAIRINGS`): by default the top-scoring candidate against each
   other one (`best_vs_rest`), or every pair whose scores differ (`all_pairs`);
3. the LoRA policy is trained with the DPO loss on those pairs (plus, optionally, the chosen
   answer's NLL). DPO's optimum is the KL-regularized RLHF optimum pi* ~ pi_ref exp(score / beta)
   for the reward that ranked the pairs, so this targets the same objective as PPO with reward
   min_k r_k, without sampling or a value network during training: one forward-backward of the
   policy per step, reference log-probabilities once.

Why best-vs-rest by default: it is the pairwise form of best-of-n (rejection-sampling) fine-tuning
on the objective, the answer PPO on min_k r_k moves towards at small beta, and its chosen side is
always that answer, so the chosen-NLL term is supervised fine-tuning on the argmax. With every pair,
a feature shared by the best and the worst candidate gets opposite DPO gradients and cancels: in
the style-groups benchmark the MaxMin compromise (brief and excited) and the MaxMin worst answer
(long and excited) share the excited style, and after 60 steps on all pairs the policy had learned
some brevity but not excitement (0.4 '!' per answer, majority win 0.54), while best-vs-rest learned
both within 15 steps (majority 0.98, minority 0.75; BENCHMARKS.md). The single-reward objective
uses the same pairing, so the comparison stays like for like. Labels are deterministic either way,
so DPO alone would push the log-ratio gaps without bound; beta, the chosen-NLL term and the short
cosine schedule limit how far the policy moves from the base.

The single-reward baseline is the same pipeline with one head (K = 1: a Bradley-Terry reward fit to
everyone's comparisons pooled, where each group weighs its share of the data), trained identically.
Why not group-DRO over per-group DPO losses: a group's DPO loss only sees that group's ranking, so
balancing losses drives the policy towards each group's favourite in turn, not to the answer that
is good for both (on a four-answer problem like the tests', with exponentiated-gradient group
weights, it settled on one group's favourite, which group depending on the step size, and left the
other below its starting reward); ranking by min_k r_k targets that answer directly.

The adapter is a LoRA (peft) on a frozen base: the base weights never change, and the artifact is
the adapter plus a versioned meta that names the base model.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import torch

from pluralign.data.record import MAX_MARGIN, Persisted, Preference
from pluralign.device import default_device
from pluralign.losses import TrainingDiverged, dpo_loss, margin_credit
from pluralign.policy.chat_template import chat_prompt_ids, text_ids
from pluralign.policy.rerank_maxmin import normalize_rewards, share_weights
from pluralign.reward.inputs import above_zero, at_least, whole

SCHEMA_VERSION = 1
OBJECTIVES = ("maxmin", "single")


@dataclass(frozen=True)
class MaxMinConfig:
    """One MaxMin (or single-reward) DPO run of LoRA weights. Raises ValueError naming the field that
    cannot be used: a count that is not a whole number in range, `max_prompt_length` not below `max_length`,
    `beta`, `lr` or `lora_alpha` not a finite number > 0, a negative weight."""

    objective: str = "maxmin"  # which reward ranked the pairs: "maxmin" (min over K heads) or "single"
    beta: float = 0.1  # DPO temperature on the log-ratio to the reference (the frozen base)
    lr: float = 5e-4  # AdamW learning rate of the LoRA weights
    steps: int = 60  # optimizer steps
    batch_size: int = 8  # pairs per step
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
    lora_layers: int = 0  # 0: adapt every layer; N: only the last N (backward stops there, cheap on CPU)
    chosen_nll_weight: float = 0.0  # adds this times the chosen answer's per-token NLL (RPO): keeps text fluent
    dpo_weight: float = 1.0  # weight of the DPO term; 0 with chosen_nll_weight > 0 is best-of-n fine-tuning (RAFT) on the argmax alone
    max_length: int = 160  # tokens of a prompt and its answer together (>= 2)
    max_prompt_length: int | None = None  # the prompt keeps its last so many tokens, < max_length; None: max_length // 2
    seed: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        above_zero("MaxMinConfig", beta=self.beta, lr=self.lr, lora_alpha=self.lora_alpha)
        whole("MaxMinConfig", 1, steps=self.steps, batch_size=self.batch_size, lora_r=self.lora_r)
        prompt_budget("MaxMinConfig", self.max_length, self.max_prompt_length)
        whole("MaxMinConfig", 0, lora_layers=self.lora_layers, seed=self.seed)
        at_least("MaxMinConfig", 0, dpo_weight=self.dpo_weight, chosen_nll_weight=self.chosen_nll_weight)
        if self.dpo_weight + self.chosen_nll_weight == 0:
            raise ValueError(f"dpo_weight ({self.dpo_weight}) and chosen_nll_weight ({self.chosen_nll_weight}) must be >= 0, not both 0")


def prompt_budget(owner: str, max_length: int, max_prompt_length: int | None) -> int:
    """The tokens a comparison's prompt keeps (its last ones): `max_prompt_length`, or `max_length // 2` when None.
    Raises ValueError naming `max_length` when it is not a whole number >= 2 (a prompt token and an answer token), and
    `max_prompt_length` when it is not a whole number >= 1 below `max_length` (no room left for the answer)."""
    whole(owner, 2, max_length=max_length)
    if max_prompt_length is None:
        return max_length // 2
    whole(owner, 1, max_prompt_length=max_prompt_length)
    if max_prompt_length >= max_length:
        raise ValueError(f"{owner}: `max_prompt_length` ({max_prompt_length}) must be less than `max_length` ({max_length}): "
                         "the answer keeps the tokens the prompt leaves")
    return max_prompt_length


TIE_BREAK = 1e-3  # weight of the share-weighted mean in `maxmin_scores`: it orders egalitarian ties only


def maxmin_scores(rewards: np.ndarray, shares: np.ndarray | None = None, tie_break: float = TIE_BREAK) -> np.ndarray:
    """(n, K) rewards of n candidates under K group heads -> (n,) MaxMin scores: the minimum over
    groups of the normalized reward, plus `tie_break` times the groups' share-weighted mean of it.

    The second term is a utilitarian tie-break among maximin choices (ours; the MaxMin-RLHF paper
    does not say what to do with ties): of two candidates whose worst-off group fares the same, the
    one that serves the population better by group size wins. It matters: two candidates that are
    each one group's favourite (an answer and its excited form, when the answer is one sentence) tie
    on the minimum up to rounding (normalized over two, each group's rewards are -1 and +1), and the
    choice fell to rounding or to the candidates' order. A leximin refinement (Sen, 1970) would not break
    that tie: it looks at the sorted rewards, (-1, +1) both times, not at which group is which.

    `shares`: (K,) finite non-negative group weights, e.g. EM's mixing weights (default: equal); a group of share 0
    (a head no user chose: EM with K above the population's groups leaves one, its weights 0) is left out of the
    minimum, where its constant reward, standardized to 0, capped every candidate's score at 0;
    `tie_break` >= 0, 0 is the plain minimum. The normalized rewards lie within +-sqrt(n - 1), so the
    term can reorder two candidates only when their minima differ by less than tie_break * 2 *
    sqrt(n - 1) (0.0035 for four candidates at the default). With one head the scores are that
    head's standardized reward times (1 + tie_break): the single-reward objective's order.
    Raises ValueError for `shares` of another length than K, negative, not finite or summing to 0,
    and for a negative or non-finite `tie_break`."""
    z = normalize_rewards(rewards)  # (n, K)
    weights = share_weights(shares, z.shape[1])
    if not (np.isfinite(tie_break) and tie_break >= 0):
        raise ValueError(f"tie_break must be a finite number >= 0, got {tie_break}")
    return z[:, weights > 0].min(1) + tie_break * (z @ weights)  # the minimum over the groups someone is in


Pairing = Callable[[np.ndarray, float], list[tuple[int, int]]]  # (n,) scores, margin -> (chosen, rejected) indices


def all_pairs(scores: np.ndarray, margin: float) -> list[tuple[int, int]]:
    """Every pair of candidates whose scores differ by more than `margin`, the higher one chosen."""
    out = []
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if abs(scores[i] - scores[j]) > margin:
                out.append((i, j) if scores[i] > scores[j] else (j, i))
    return out


def best_vs_rest(scores: np.ndarray, margin: float) -> list[tuple[int, int]]:
    """The top-scoring candidate against each candidate more than `margin` below it: DPO's pairwise
    form of best-of-n (rejection-sampling) fine-tuning on the objective, whose chosen side is always
    the objective's argmax. No candidates: no pair."""
    if len(scores) == 0:
        return []
    best = int(np.argmax(scores))
    return [(best, j) for j in range(len(scores)) if scores[best] - scores[j] > margin]


PAIRINGS: dict[str, Pairing] = {"all": all_pairs, "best": best_vs_rest}


def ranked_pairs(
    prompt: str, candidates: Sequence[str], scores: np.ndarray, source: str, pairing: Pairing = best_vs_rest, margin: float = 1e-6,
) -> list[Preference]:
    """Comparisons among a prompt's n candidates chosen by `pairing` from their objective `scores` (n,) (a numpy
    array, a list or a tensor of numbers, e.g. `maxmin_scores`), each the higher-scored candidate over one scoring
    more than `margin` (>= 0) below it; identical candidates are never paired, nor candidates of equal scores (no
    candidates: no comparison). Raises
    ValueError naming `scores` when they are not n finite numbers (a shorter list would leave the last
    candidates out without a word, and a NaN would give no comparison) or two it pairs span more than a comparison's margin
    holds (`MAX_MARGIN`), and `margin` when it is not a number >= 0 (a
    negative one paired equal scores, the first candidate "chosen")."""
    if hasattr(scores, "detach"):  # a tensor, a reward model's (one that requires grad, on a GPU too)
        scores = scores.detach().cpu()
    try:
        scores = np.asarray(scores, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`scores` must be one number per candidate, ({len(candidates)},)") from None
    if scores.shape != (len(candidates),):
        raise ValueError(f"`scores` has shape {scores.shape}: one number per candidate, ({len(candidates)},) for "
                         f"{len(candidates)} candidates")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"`scores` of candidate {int(np.flatnonzero(bad)[0])} is not finite (NaN or inf)")
    at_least("ranked_pairs", 0, margin=margin)
    made = []
    for hi, lo in pairing(scores, margin):
        if candidates[hi] == candidates[lo]:
            continue
        span = float(scores[hi]) - float(scores[lo])  # Python floats: inf (1e308 - -1e308), no overflow warning
        if not span <= MAX_MARGIN:  # the comparisons made only: a pairing of neighbours may keep each within it
            raise ValueError(f"`scores` span {span:g} between candidates {hi} and {lo}, more than a comparison's margin "
                             f"holds (MAX_MARGIN, {MAX_MARGIN:g}): put them on a smaller scale (`maxmin_scores` "
                             "standardizes rewards per group)")
        made.append(Preference(user_id=source, prompt=prompt, chosen=candidates[hi], rejected=candidates[lo], margin=span, source=source))
    return made


@dataclass
class PairTokens:
    """Tokenized comparisons, right-padded: ids (N, T), attention (N, T), response mask (N, T)."""

    chosen_ids: torch.Tensor
    chosen_attention: torch.Tensor
    chosen_response: torch.Tensor
    rejected_ids: torch.Tensor
    rejected_attention: torch.Tensor
    rejected_response: torch.Tensor

    def __len__(self) -> int:
        return int(self.chosen_ids.shape[0])


SYSTEM_PROMPT = "You are a helpful assistant."  # short: SmolLM2's default system prompt doubles the tokens


def prompt_ids(tokenizer, prompt: str, first: int | None = None, last: int | None = None) -> list[int]:
    """The chat-formatted prompt the policy answers, as token ids (the same at training and generation time,
    and as served: `chat_prompt_ids`, the prompt's text read as text). `first` (`last`): its first (last) so many ids
    only, the rest not tokenized."""
    return chat_prompt_ids(tokenizer, [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
                           first=first, last=last)


def is_finished(response: str) -> bool:
    """Whether an answer ends a sentence. One cut mid-sentence (a sample stopped at its token limit)
    gets no end-of-sequence token, so the policy does not learn to stop where a sampler was cut."""
    return response.rstrip().endswith((".", "!", "?", '"', ")", "*", ":"))


def _encode(tokenizer, prompt: str, response: str, max_length: int, max_prompt_length: int) -> tuple[list[int], int]:
    """(ids, prompt tokens): the prompt's last `max_prompt_length` ids (the question nearest the answer), then the
    answer's first ids within what is left of `max_length`; the rest of either is not tokenized."""
    prompt = prompt_ids(tokenizer, prompt, last=max_prompt_length)
    room = max_length - len(prompt)
    response_ids = text_ids(tokenizer, response, first=room) + ([tokenizer.eos_token_id] if is_finished(response) else [])
    return prompt + response_ids[:room], len(prompt)


def _pad(rows: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(rows), width, dtype=torch.long)
    response = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (row, n_prompt) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        response[i, n_prompt : len(row)] = True
    return ids, attention, response


def tokenize_pairs(records: Sequence[Preference], tokenizer, max_length: int = 160, max_prompt_length: int | None = None) -> PairTokens:
    """The N comparisons as PairTokens: each prompt (chat-formatted) followed by its answer, at most `max_length`
    tokens, chosen and rejected each right-padded to their longest, (N, T). As TRL's DPO cuts a row: a prompt keeps
    its last `max_prompt_length` tokens (default `max_length // 2`), the turns nearest the answer, and each answer its
    first `max_length` - (the prompt's tokens), so every non-empty answer has tokens to train on. Raises ValueError for
    no comparisons, and naming `max_length` or `max_prompt_length` as `MaxMinConfig` does (`prompt_budget`)."""
    max_prompt_length = prompt_budget("tokenize_pairs", max_length, max_prompt_length)
    if not records:
        raise ValueError("no comparisons to train on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chosen = _pad([_encode(tokenizer, r.prompt, r.chosen, max_length, max_prompt_length) for r in records], pad)
    rejected = _pad([_encode(tokenizer, r.prompt, r.rejected, max_length, max_prompt_length) for r in records], pad)
    return PairTokens(*chosen, *rejected)


def sequence_logps(model, ids: torch.Tensor, attention: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Sum of log pi(token) over each row's response tokens: (N,).

    Only the positions from the earliest response token on get logits (`logits_to_keep`): with a
    49k-token vocabulary the logits, not the transformer, dominate the cost of short answers. A row with no response
    token (an empty answer) sums to 0."""
    starts = response.float().argmax(1)[response.any(1)]  # each row's first response token, of rows that have one
    first = int(starts.min()) if len(starts) else ids.shape[1]  # earliest response token in the batch
    keep = ids.shape[1] - first + 1  # logits at position t predict token t + 1
    logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits[:, :-1].float()  # (N, keep-1, V)
    targets = ids[:, first:]  # (N, keep-1)
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logp * response[:, first:]).sum(-1)


def _batch_logps(model, pairs: PairTokens, idx: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of the chosen and rejected answers of pairs `idx`: (B,), (B,)."""
    def trim(ids, attention, response):
        width = int(attention[idx].sum(1).max())
        return ids[idx, :width].to(device), attention[idx, :width].to(device), response[idx, :width].to(device)

    chosen = sequence_logps(model, *trim(pairs.chosen_ids, pairs.chosen_attention, pairs.chosen_response))
    rejected = sequence_logps(model, *trim(pairs.rejected_ids, pairs.rejected_attention, pairs.rejected_response))
    return chosen, rejected


@torch.no_grad()
def reference_logps(model, pairs: PairTokens, index: torch.Tensor | None = None, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi_ref of the chosen and rejected responses of `index` (default all), with the adapter off: (n,), (n,)."""
    device = next(model.parameters()).device
    index = torch.arange(len(pairs)) if index is None else index
    out_c, out_r = [], []
    with model.disable_adapter():
        for start in range(0, len(index), batch_size):
            c, r = _batch_logps(model, pairs, index[start : start + batch_size], device)
            out_c.append(c.cpu())
            out_r.append(r.cpu())
    return torch.cat(out_c), torch.cat(out_r)


def with_lora(base_model, config: MaxMinConfig):
    """Wrap a causal LM with a fresh LoRA adapter; only the adapter's weights require gradients.

    The adapter's random initialization follows `config.seed` alone (drawn under a forked torch RNG,
    so the caller's random state is left as it was): whatever ran before in the process, such as
    sampling the base's answers, does not change it."""
    from peft import LoraConfig

    from pluralign.policy.adapters import seeded_lora

    n_layers = base_model.config.num_hidden_layers
    layers = list(range(n_layers - config.lora_layers, n_layers)) if 0 < config.lora_layers < n_layers else None
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=list(config.target_modules),
        layers_to_transform=layers, task_type="CAUSAL_LM",
    )
    return seeded_lora(base_model, lora, config.seed)


@dataclass
class TrainLog:
    """What `train_maxmin` measured: the DPO loss (nats) and reward accuracy ([0, 1]) of each step's batch."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    reward_accuracy: list[float] = field(default_factory=list)  # share of the batch with chosen's implicit reward ahead
    seconds_per_step: float = 0.0
    peak_memory_mb: float = 0.0  # CUDA: max allocated; CPU: the process's peak resident set


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _diverged(config: MaxMinConfig, step: int, loss: torch.Tensor, dtype: torch.dtype) -> TrainingDiverged:
    """The one-line error for a non-finite loss at `step` (1-based) and its likely causes: at the first step, before
    any update, not the learning rate."""
    dtype_cause = f"the model's dtype ({str(dtype).removeprefix('torch.')}: float16 overflows where bfloat16 and float32 do not)"
    if step == 1:
        causes = f"Likely causes: the data (an empty or very long answer) or {dtype_cause}, not the learning rate: it is not finite before any update"
    else:
        causes = f"Likely causes: the learning rate too high (lower it), the data (an empty or very long answer), or {dtype_cause}"
    return TrainingDiverged(f"training diverged at step {step} of {config.steps}: the loss is {loss.item()} (lr={config.lr}); "
                            f"nothing was kept. {causes}")


def train_maxmin(
    policy,
    pairs: PairTokens,
    config: MaxMinConfig,
    callback: Callable[[int, object], None] | None = None,
    every: int = 0,
    step_callback: Callable[[int, float], None] | None = None,
) -> TrainLog:
    """Train the LoRA `policy` (from `with_lora`) with DPO on ranked `pairs`.

    `callback(step, policy)` runs at step 0, every `every` steps and at the end (e.g. to measure win
    rates for the curve; its time is not counted as training time); `step_callback(step, loss)`
    after every step (a progress bar). Returns the TrainLog of the run. Raises ValueError naming `pairs` when there
    are none, before anything is changed, and `pluralign.losses.TrainingDiverged` (a ValueError) naming the step and
    the loss at the first step whose loss is NaN or inf, before that step changes the parameters, with its likely
    causes: the caller keeps nothing of the run."""
    if not len(pairs):
        raise ValueError("`pairs`: no comparisons to train on (`tokenize_pairs` refuses none too)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = next(policy.parameters()).device
    # reference log-probs, computed the first time a pair is drawn: a short run never pays for the rest
    ref_chosen = torch.full((len(pairs),), float("nan"))  # (N,)
    ref_rejected = torch.full((len(pairs),), float("nan"))
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=0.0)
    log = TrainLog()
    if callback:
        callback(0, policy)
    start = time.perf_counter()
    for step in range(1, config.steps + 1):
        lr = config.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / config.steps))  # cosine decay
        for group in optimizer.param_groups:
            group["lr"] = lr
        policy.train()
        idx = torch.tensor(rng.sample(range(len(pairs)), min(config.batch_size, len(pairs))))  # (B,)
        missing = idx[torch.isnan(ref_chosen[idx])]
        if len(missing) and not config.dpo_weight:  # fine-tuning alone: no reference needed (the ratios logged are then log pi)
            ref_chosen[missing], ref_rejected[missing] = 0.0, 0.0
        elif len(missing):
            policy.eval()
            ref_chosen[missing], ref_rejected[missing] = reference_logps(policy, pairs, missing)
            policy.train()
        logp_chosen, logp_rejected = _batch_logps(policy, pairs, idx, device)  # (B,), (B,)
        chosen_ratio = logp_chosen - ref_chosen[idx].to(device)  # (B,) log pi / pi_ref
        rejected_ratio = logp_rejected - ref_rejected[idx].to(device)
        loss = config.dpo_weight * dpo_loss(logp_chosen, logp_rejected, ref_chosen[idx].to(device), ref_rejected[idx].to(device), config.beta).mean()
        if config.chosen_nll_weight:
            n_tokens = pairs.chosen_response[idx].sum(1).clamp_min(1).to(device)  # (B,)
            loss = loss + config.chosen_nll_weight * (-logp_chosen / n_tokens).mean()
        if not torch.isfinite(loss):  # NaN weights would be saved, their final_loss NaN
            raise _diverged(config, step, loss, trainable[0].dtype)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log.steps.append(step)
        log.loss.append(float(loss.detach()))
        log.reward_accuracy.append(float(margin_credit(chosen_ratio - rejected_ratio).mean()))
        if step_callback:
            step_callback(step, log.loss[-1])
        if callback and (step == config.steps or (every and step % every == 0)):
            elapsed = time.perf_counter() - start
            policy.eval()
            callback(step, policy)
            start = time.perf_counter() - elapsed  # the callback's time is not training time
    log.seconds_per_step = (time.perf_counter() - start) / max(1, config.steps)
    log.peak_memory_mb = _peak_memory_mb(device)
    policy.eval()
    return log


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, temperature: float = 0.7, seed: int = 0, batch_size: int = 16,
             min_new_tokens: int = 0, max_prompt_tokens: int = 1024) -> list[str]:
    """Sampled answers (chat-formatted prompts, left padding), one per prompt, reproducible under `seed`.

    A prompt longer than `max_prompt_tokens` loses its start: the model reads its last `max_prompt_tokens` tokens, which
    end with the chat template's opening of the answer (the rest is not tokenized: `prompt_ids(last=)`), as FSPO's and
    the adapters' scoring read a prompt. `min_new_tokens` > 0 forbids the end-of-sequence token before that many new
    tokens (transformers' `min_new_tokens`), so no answer is an opening alone ("Great question!"). Raises ValueError
    when `min_new_tokens` > `max_new_tokens` or either is negative, or `max_prompt_tokens` is not a whole number >= 1."""
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens ({min_new_tokens}) must be in [0, max_new_tokens ({max_new_tokens})]")
    whole("maxmin.generate", 1, max_prompt_tokens=max_prompt_tokens)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(seed)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = _left_padded([prompt_ids(tokenizer, p, last=max_prompt_tokens) for p in prompts[start : start + batch_size]], pad, device)
        ids = model.generate(
            **enc, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
            top_p=1.0, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
        )
        out.extend(tokenizer.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True).strip() for row in ids)
    return out


def _left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Prompts' ids as one left-padded batch: input_ids and attention_mask, (B, T) each."""
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# ---------------------------------------------------------------------------------------------
# The artifact: the peft adapter folder plus a versioned meta naming the base model.


class PolicyMeta(Persisted):
    """A MaxMin policy's meta.json: what `load_policy` checks before it loads the adapter."""

    schema_version: int
    kind: str  # always "maxmin-lora"
    base_model: str
    objective: str
    heads: int  # reward heads that ranked the pairs (1 for the single-reward baseline)
    steps: int
    beta: float
    lora_r: int
    # the tokens it was trained to read (`MaxMinConfig`): a comparison's prompt and answer together, and the prompt's
    # last ones kept (`prompt_budget`); None in a policy an earlier release saved, which recorded neither (`train
    # maxmin` trained those with max_length 160)
    max_length: int | None = None
    max_prompt_length: int | None = None


def trained_lengths(config: MaxMinConfig) -> dict[str, int]:
    """`PolicyMeta`'s lengths as `config` trains with them: `max_length`, and `max_prompt_length` resolved
    (`prompt_budget`: `max_length // 2` when None). `train maxmin` and the MaxMin benchmark record them in what they save."""
    return {"max_length": config.max_length, "max_prompt_length": prompt_budget("MaxMinConfig", config.max_length, config.max_prompt_length)}


def base_model_id(model) -> str:
    """The id a policy records of its base model: the model's `name_or_path`, else its class name."""
    return getattr(model.config, "name_or_path", "") or type(model).__name__


POLICY_FILES = ("meta.json", "adapter", "metrics.json")  # what a MaxMin policy folder holds (meta.json first: its description)


def save_policy(policy, out: str | Path, meta: PolicyMeta, extra: Mapping[str, bytes] | None = None) -> Path:
    """Write OUT/adapter (peft's own format), OUT/meta.json and the `extra` files (name -> bytes, among
    POLICY_FILES: e.g. metrics.json), replacing OUT whole (`pluralign.files.staged_folder`): a kill
    mid-save leaves the earlier policy, and of saves to one OUT at once the last to finish is the
    policy, whole. Raises ValueError naming OUT when it holds other files, NotADirectoryError for a file."""
    from pluralign.files import staged_folder

    with staged_folder(out, POLICY_FILES, "MaxMin policy") as staged:
        policy.save_pretrained(str(staged / "adapter"), save_embedding_layers=False)  # no hub lookup: LoRA keeps the vocabulary
        (staged / "meta.json").write_bytes(msgspec.json.format(msgspec.json.encode(meta)))
        for name, data in (extra or {}).items():
            (staged / name).write_bytes(data)
    return Path(out)


def read_policy_meta(folder: Path) -> PolicyMeta:
    """A MaxMin policy's meta.json, read before any weights (`pluralign.files.read_description`: FileNotFoundError
    when there is none, ValueError for another kind of artifact, another schema, or no description)."""
    from pluralign.files import read_description

    return read_description(folder, "maxmin-lora", SCHEMA_VERSION, PolicyMeta, "a MaxMin policy (maxmin-lora)")


def load_policy(folder: str | Path, base_model, expected_base: str | None = None):
    """The saved adapter on `base_model`: (peft model, PolicyMeta). Raises FileNotFoundError for a folder
    with no meta.json and ValueError for another kind of artifact, another schema (`read_policy_meta`), an
    artifact trained on another base model, and an AdapterError naming OUT/adapter (or its file) for peft's files
    missing, weights cut short (both refused before `base_model` is touched) or shaped for another model."""
    from peft import PeftModel

    from pluralign.policy.adapters import check_files, reading_adapter

    folder = Path(folder)
    meta = read_policy_meta(folder)
    base = expected_base or base_model_id(base_model)
    if meta.base_model != base:
        raise ValueError(f"{folder}: adapter was trained on base model {meta.base_model!r}, not {base!r}")
    check_files(folder / "adapter")  # peft puts its LoRA layers into base_model before it reads the weights
    with reading_adapter(folder / "adapter"):
        policy = PeftModel.from_pretrained(base_model, str(folder / "adapter"))
    return policy.to(default_device()).eval(), meta
