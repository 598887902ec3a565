"""FSPO: few-shot preference optimization (Singh et al., 2025), and the per-user DPO it shares a loop with.

An *episode* is one user's N past comparisons (the shots, shown in context with `with_shots`, the
format the service uses at serving time) plus one held-out comparison of the same user. Training
applies a DPO or IPO loss to the held-out pair conditioned on the shots, over many users, so the
policy learns to read a user's preferences from context. The policy then acts as that user's
reward model: r(x, y | shots) = beta * log(pi(y | shots, x) / pi_ref(y | shots, x)), with pi_ref the
base model (the LoRA adapter switched off).

Choices the FSPO paper found crucial, and what they mean here:
- *Diverse users*: the policy must see many users whose preferences differ, or it learns the
  population's average taste and ignores the shots. Episodes draw users round-robin, and the
  persona populations used for benchmarks have opposed groups (a no-shot model cannot beat 50%).
- *Self-consistent preferences*: every shot and the held-out pair of an episode come from the
  same user, whose comparisons follow one underlying rule (a persona stance); noisy or
  contradictory labels inside an episode teach the policy that the shots carry no signal.
- The paper also reports IPO as more stable than DPO for this task, and shot counts at training
  that match what serving provides; the loss is a config field and `shots` is recorded with the
  artifact.

On CPU, LoRA on the top `lora_layers` layers makes the layers below a frozen trunk shared by the
policy and pi_ref (`pluralign.policy.trunk`): it runs once per batch, and not at all for a batch
seen before (1.7x and 4.7x faster steps on SmolLM2-135M, `benchmarks/fspo_trunk.py`). And the shots
are most of every row, so a batch is packed (`pluralign.policy.logprobs.PackedBatch`): episodes
sharing a user's shots form one row holding the shots once, then every question and answer after
them, each seeing only the shots and its own question. `queries` > 1 draws that many held-out
comparisons per set of shots, so one pass over the shots trains on all of them.

With `shots=0` the same loop is plain DPO on comparisons (the no-shot baseline, and the per-user
adapter of `pluralign train adapter`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from pluralign.data.record import Base, Preference
from pluralign.data.splits import comparison_key, repeats_together
from pluralign.data.text import shorten
from pluralign.losses import TrainingDiverged, dpo_loss, ipo_loss, margin_credit
from pluralign.policy.context import Shot, with_shots
from pluralign.policy.logprobs import PackedBatch, ScoringBatch, encode_packed, sequence_logprobs
from pluralign.policy.trunk import head_logprobs, lowest_adapted_layer, trunk_states
from pluralign.reward.inputs import above_zero, whole

LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss}
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FSPOConfig:
    """One FSPO (or per-user DPO) run. Raises ValueError naming the field that cannot be used: a
    count that is not a whole number in range, `beta` or `lr` not a finite number > 0."""

    shots: int = 4  # past comparisons of the user shown in context (0 = plain DPO)
    loss: str = "ipo"  # "ipo" or "dpo" (see LOSSES)
    beta: float = 0.1  # implicit-reward scale
    lora_rank: int = 8
    lora_layers: int = 0  # LoRA on the top N transformer layers only (0 = all); fewer = cheaper backward
    full_finetune: bool = False  # train every weight instead of LoRA (GPU); the reference is then a frozen copy
    lr: float = 2e-4
    steps: int = 100
    batch_size: int = 4  # episodes (held-out comparisons) per step
    queries: int = 1  # held-out comparisons per set of shots in training; they share one packed row
    max_prompt_tokens: int = 1024
    max_response_tokens: int = 96
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        above_zero("FSPOConfig", beta=self.beta, lr=self.lr)
        whole("FSPOConfig", 1, lora_rank=self.lora_rank, steps=self.steps, batch_size=self.batch_size, queries=self.queries,
              max_prompt_tokens=self.max_prompt_tokens, max_response_tokens=self.max_response_tokens)
        whole("FSPOConfig", 0, shots=self.shots, lora_layers=self.lora_layers, seed=self.seed)


class Episode(Base):
    """Shots of one user, then a held-out comparison of the same user."""

    user_id: str
    shots: list[Shot]
    question: str
    chosen: str
    rejected: str

    def messages(self) -> list[dict[str, str]]:
        """The chat the policy reads: the shots as context, then the held-out question as the user's turn."""
        return with_shots(self.shots, [{"role": "user", "content": self.question}])


def episode(shots: Sequence[Preference], held_out: Preference) -> Episode:
    """One FSPO episode: a user's `shots` (earlier comparisons, shown in order as context) and the `held_out`
    comparison of the same user to be scored; the episode's user is `held_out`'s."""
    return Episode(
        user_id=held_out.user_id,
        shots=[Shot.from_preference(p) for p in shots],
        question=held_out.prompt,
        chosen=held_out.chosen,
        rejected=held_out.rejected,
    )


def training_episodes(
    users: Mapping[str, Sequence[Preference]], shots: int, count: int, seed: int = 0, queries: int = 1
) -> list[Episode]:
    """`count` episodes, users taken round-robin in a shuffled order (so every batch mixes users).
    Each draw takes shots + `queries` distinct comparisons of its user and gives `queries`
    consecutive episodes with the same shots, one per held-out comparison (a comparison given again, `comparison_key`,
    is one: never both a shot and the held-out one). Ties are skipped.
    Raises TypeError when `users` is not a mapping of user id to comparisons, ValueError naming
    `shots`, `count` (whole numbers >= 0) or `queries` (>= 1) when out of range, and when no user
    has shots + queries different comparisons."""
    if not isinstance(users, Mapping):
        raise TypeError(f"`users` must map each user id to their comparisons ({{user_id: [Preference, ...]}}), "
                        f"got {type(users).__name__}")
    whole("training_episodes", 0, shots=shots, count=count)
    whole("training_episodes", 1, queries=queries)
    rng = random.Random(seed)
    pools = {u: repeats_together([p for p in ps if not p.tie]) for u, ps in users.items()}  # each user's comparisons
    order = sorted(u for u, ps in pools.items() if len(ps) >= shots + queries)
    if not order:
        raise ValueError(f"no user has {shots + queries} comparisons (shots + queries)")
    rng.shuffle(order)
    episodes: list[Episode] = []
    for i in range(-(-count // queries)):
        drawn = _draw(rng, pools[order[i % len(order)]], shots + queries)
        episodes.extend(episode(drawn[:shots], q) for q in drawn[shots:])
    return episodes[:count]


def _draw(rng: random.Random, comparisons: Sequence[Sequence[Preference]], n: int) -> list[Preference]:
    """`n` different comparisons drawn from `comparisons` (`repeats_together`'s groups: the records of one comparison
    given again), one record of each. Drawn among records, a comparison given twice (a file read twice) was shown as
    a shot and held out in one episode, which trains the policy to copy the answer from its context. Without
    repeats, the draw `rng.sample` makes of the records themselves."""
    return [group[0] if len(group) == 1 else rng.choice(group) for group in rng.sample(list(comparisons), n)]


def own_episodes(pairs: Sequence[Preference], shots: int, rounds: int, seed: int = 0) -> list[Episode]:
    """One user's training episodes (`pluralign train adapter`): each of `pairs` held out in turn, `rounds` times
    over, with `shots` of the user's other comparisons as context, drawn at random (`seed`); never a repeat of the
    held-out comparison (`comparison_key`). Raises ValueError naming `shots` or `rounds` when not a whole number (>= 0,
    >= 1), and `shots` when `pairs` holds fewer other comparisons than that (`distinct_comparisons`)."""
    whole("own_episodes", 0, shots=shots)
    whole("own_episodes", 1, rounds=rounds)
    groups = repeats_together(list(pairs))
    if shots > len(groups) - 1:
        raise ValueError(f"`shots` {shots}: each episode shows that many of the user's other comparisons, and "
                         f"`pairs` holds {len(groups)} different comparisons")
    rng = random.Random(seed)
    keys = [comparison_key(group[0]) for group in groups]  # once: an episode per pair per round reads them all
    own = {id(pair): key for key, group in zip(keys, groups, strict=True) for pair in group}
    episodes = []
    for pair in list(pairs) * rounds:
        others = [group for key, group in zip(keys, groups, strict=True) if key != own[id(pair)]]
        episodes.append(episode(_draw(rng, others, shots), pair))
    return episodes


def distinct_comparisons(pairs: Sequence[Preference]) -> int:
    """How many different comparisons `pairs` holds (`comparison_key`: a row given again counts once)."""
    return len({comparison_key(p) for p in pairs})


def context_groups(episodes: Sequence[Episode]) -> list[list[int]]:
    """Indices of episodes in runs of consecutive episodes with the same user and shots: a run shares
    its context, so one packed row scores it. Only neighbours join, so a user drawn again later (or
    every draw of a no-shot population, whose contexts are all alike) starts a new group."""
    groups: list[list[int]] = []
    last = None
    for i, e in enumerate(episodes):
        key = (e.user_id, tuple((s.question, s.preferred, s.dispreferred) for s in e.shots))
        if key != last:
            groups.append([])
            last = key
        groups[-1].append(i)
    return groups


def group_batches(groups: Sequence[list[int]], size: int) -> list[list[int]]:
    """Context groups gathered into batches of about `size` episodes: a group of at most `size` is
    never split; a longer one is cut into pieces of `size` (each piece packs its shots once again).
    One user's episodes without shots are all one group: uncut, every step scored all of them in
    one row, whatever the batch size (an adapter job on 12 comparisons held 6 GB). ValueError when
    `size` is not a whole number >= 1."""
    whole("group_batches", 1, size=size)
    batches: list[list[int]] = []
    for group in groups:
        for start in range(0, len(group), size):
            if not batches or len(batches[-1]) >= size:
                batches.append([])
            batches[-1].extend(group[start : start + size])
    return batches


def query_episodes(
    support: Mapping[str, Sequence[Preference]],
    query: Mapping[str, Sequence[Preference]],
    shots: int,
    per_user: int | None = None,
) -> list[Episode]:
    """Evaluation episodes for unseen users: the first `shots` strict support comparisons as context (a tie states no
    preferred answer: skipped, as `training_episodes` and the service's chat context skip them, rather than showing one
    as "Preferred: ..."), each strict query comparison (up to `per_user`; None: all) held out. Raises ValueError naming `shots` or
    `per_user` when not a whole number >= 0, and the first query user `support` has no comparisons
    for (their episodes would have no context of their own)."""
    whole("query_episodes", 0, shots=shots, **({} if per_user is None else {"per_user": per_user}))
    missing = next((u for u in sorted(query) if u not in support), None)
    if missing is not None:
        raise ValueError(f"query user {missing!r} has no support comparisons: `support` and `query` must hold the same users")
    return [
        episode([p for p in support[u] if not p.tie][:shots], q)
        for u in sorted(query)
        for q in [q for q in query[u] if not q.tie][:per_user]
    ]


def add_lora(model, config: FSPOConfig):
    """A peft model with one fresh trainable LoRA adapter ("default"); base weights frozen. Its random
    initialization follows `config.seed` alone (`adapters.seeded_lora`), so `pluralign train fspo`
    and `train adapter` with the same seed start from the same adapter."""
    from peft import LoraConfig

    from pluralign.policy.adapters import seeded_lora

    n_layers = model.config.num_hidden_layers
    layers = list(range(n_layers - config.lora_layers, n_layers)) if config.lora_layers else None
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=2 * config.lora_rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return seeded_lora(model, lora, config.seed)


class ReferencePolicy:
    """pi_ref for a policy: the base model under the LoRA adapter (adapters off), or a frozen copy
    of the initial weights when every weight trains."""

    def __init__(self, policy, full_copy=None):
        self.policy = policy
        self.full_copy = full_copy

    def logprobs(self, batch) -> torch.Tensor:
        with torch.no_grad():
            if self.full_copy is not None:
                return sequence_logprobs(self.full_copy, batch)
            with self.policy.disable_adapter():
                return sequence_logprobs(self.policy, batch)

    def trunk_split(self) -> int | None:
        """The layer where the policy's adapted head starts, when below it policy and reference
        share a frozen trunk (LoRA on the top layers only); None otherwise."""
        if self.full_copy is not None or not hasattr(self.policy, "disable_adapter"):
            return None
        split = lowest_adapted_layer(self.policy)
        return split if 0 < split < self.policy.config.num_hidden_layers else None


@dataclass
class ScoredRows:
    """A pair batch ready for scoring: its tokens, the frozen trunk's states (None without a
    trunk) and pi_ref's log-probabilities (2B,), each computed once."""

    batch: ScoringBatch | PackedBatch
    states: torch.Tensor | None
    split: int | None  # the first layer of the head the states enter
    reference: torch.Tensor

    @classmethod
    def build(cls, reference: ReferencePolicy, batch: ScoringBatch | PackedBatch) -> ScoredRows:
        split = reference.trunk_split()
        if split is None:
            return cls(batch, None, None, reference.logprobs(batch))
        states = trunk_states(reference.policy, batch, split)  # (2B, T, d)
        with torch.no_grad(), reference.policy.disable_adapter():
            ref = head_logprobs(reference.policy, states, batch, split)
        return cls(batch, states, split, ref)

    def policy_logprobs(self, policy) -> torch.Tensor:
        """(2B,) log pi of each row; gradients flow when enabled."""
        if self.states is None:
            return sequence_logprobs(policy, self.batch)
        return head_logprobs(policy, self.states, self.batch, self.split)


def pair_batch(tokenizer, episodes: Sequence[Episode], config: FSPOConfig) -> PackedBatch:
    """2B responses, the B chosen answers then the B rejected answers, each after its shots and
    question; packed so that episodes sharing a user's shots are one row with the shots once."""
    conversations = [e.messages() for e in episodes] * 2
    responses = [e.chosen for e in episodes] + [e.rejected for e in episodes]
    row_of = {i: r for r, group in enumerate(context_groups(episodes)) for i in group}
    rows = [row_of[i] for i in range(len(episodes))] * 2
    return encode_packed(
        tokenizer, conversations, responses, config.max_prompt_tokens, config.max_response_tokens, rows=rows
    )


def _diverged(config: FSPOConfig, step: int, loss: torch.Tensor, pair_losses: torch.Tensor, ref: torch.Tensor,
              batch: list[Episode], dtype: torch.dtype) -> TrainingDiverged:
    """The one-line error for a non-finite loss at `step` (0-based): the likely causes, and the first pair of
    the batch (`pair_losses` (B,), `ref` (2B,): chosen then rejected) whose loss is not finite. Before any
    update (the first step) or where the frozen reference already scores the pair non-finite, the learning
    rate cannot be the cause."""
    b = len(batch)
    bad = next((i for i in range(b) if not torch.isfinite(pair_losses[i])), 0)
    pair = batch[bad]
    where = f"first non-finite pair: user {shorten(pair.user_id, 40, '...')!r}, prompt {shorten(pair.question, 60, '...')!r}"
    ref_bad = not (torch.isfinite(ref[bad]) and torch.isfinite(ref[b + bad]))
    if step == 0 or ref_bad:
        scored = "the reference model scores it non-finite" if ref_bad else "it is not finite before any update"
        causes = (f"Likely causes: the data (an empty or very long answer) or the model's dtype ({str(dtype).removeprefix('torch.')}: "
                  f"float16 overflows where bfloat16 and float32 do not), not the learning rate: {scored}")
    else:
        causes = (f"Likely causes: the learning rate too high (lower it), the data (an empty or very long answer), or the "
                  f"model's dtype ({str(dtype).removeprefix('torch.')}: float16 overflows where bfloat16 and float32 do not)")
    return TrainingDiverged(f"training diverged at step {step + 1} of {config.steps}: the {config.loss} loss is {loss.item()} "
                            f"(lr={config.lr}); nothing was kept. {causes}; {where}")


def train(
    policy,
    reference: ReferencePolicy,
    tokenizer,
    episodes: Sequence[Episode],
    config: FSPOConfig,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, int | float]:
    """The training loop: `config.steps` steps over fixed batches of `config.batch_size` episodes,
    cycling through them. When LoRA adapts only the top layers, each batch's frozen trunk states
    and pi_ref log-probabilities are computed once and kept for later epochs. Raises
    `pluralign.losses.TrainingDiverged` (a ValueError) naming the step and the loss at the first step
    whose loss is NaN or inf, before that step changes the parameters, with the likely causes (the
    learning rate, the data, the dtype) and the first pair whose loss is not finite.

    `on_step(step, stats)` after every step (`loss` in nats, `reward_acc` in [0, 1], `lr`). Returns `steps`,
    `final_loss` and `final_train_reward_acc` (means over the last fifth of the steps) and `train_seconds`. Raises
    ValueError naming `episodes` when there are none, before anything is changed."""
    if not episodes:
        raise ValueError("`episodes`: no episodes to train on (`training_episodes` with `count` 0 makes none)")
    torch.manual_seed(config.seed)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    loss_fn = LOSSES[config.loss]
    groups = context_groups(episodes)  # episodes sharing shots stay in one batch (one packed row)
    random.Random(config.seed).shuffle(groups)
    batches = group_batches(groups, config.batch_size)
    keep = config.steps > len(batches)  # batches come round again: keep what does not change
    kept: dict[int, ScoredRows] = {}
    start, history = time.perf_counter(), []
    for step in range(config.steps):
        # linear warm-up over the first 10% of steps, then constant
        lr = config.lr * min(1.0, (step + 1) / max(1, config.steps // 10))
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = step % len(batches)
        rows = kept.get(index)
        if rows is None:
            rows = ScoredRows.build(reference, pair_batch(tokenizer, [episodes[i] for i in batches[index]], config))
            if keep:
                kept[index] = rows
        ref = rows.reference  # (2B,)
        policy.train()
        logp = rows.policy_logprobs(policy)  # (2B,)
        b = len(batches[index])
        pair_losses = loss_fn(logp[:b], logp[b:], ref[:b], ref[b:], config.beta)  # (B,)
        loss = pair_losses.mean()
        if not torch.isfinite(loss):  # a NaN adapter was saved, reported (final_loss null) and could be promoted
            raise _diverged(config, step, loss, pair_losses, ref, [episodes[i] for i in batches[index]], params[0].dtype)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        margin = ((logp[:b] - ref[:b]) - (logp[b:] - ref[b:])).detach()  # (B,)
        stats = {"loss": loss.item(), "reward_acc": margin_credit(margin).mean().item(), "lr": lr}
        history.append(stats)
        if on_step is not None:
            on_step(step, stats)
    policy.eval()
    tail = history[-max(1, len(history) // 5) :]
    return {
        "steps": config.steps,
        "final_loss": sum(h["loss"] for h in tail) / len(tail),
        "final_train_reward_acc": sum(h["reward_acc"] for h in tail) / len(tail),
        "train_seconds": time.perf_counter() - start,
    }


def personalized_rewards(
    policy,
    reference: ReferencePolicy | None,
    tokenizer,
    episodes: Sequence[Episode],
    config: FSPOConfig,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) rewards, each (N,): beta * log(pi / pi_ref) given each episode's shots.

    With `reference=None` the reward is the policy's own log-likelihood (how an untrained model
    that reads the shots would judge: there is no reference to divide by).
    """
    if reference is None:
        logp = episode_logprobs(policy, None, tokenizer, episodes, config, batch_size)[0]  # (N, 2)
    else:
        policy_logp, ref_logp = episode_logprobs(policy, reference, tokenizer, episodes, config, batch_size)
        logp = config.beta * (policy_logp - ref_logp)
    return logp[:, 0], logp[:, 1]


def episode_logprobs(
    policy, reference: ReferencePolicy | None, tokenizer, episodes: Sequence[Episode], config: FSPOConfig, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi and log pi_ref of each episode's (chosen, rejected) given its shots, each (N, 2)
    (pi_ref None without a reference). A frozen trunk is shared between the two."""
    if not episodes:
        return torch.zeros(0, 2), (None if reference is None else torch.zeros(0, 2))
    batches = group_batches(context_groups(episodes), batch_size)
    mine, theirs = torch.zeros(len(episodes), 2), torch.zeros(len(episodes), 2)
    policy.eval()
    with torch.no_grad():
        for indices in batches:
            batch = pair_batch(tokenizer, [episodes[i] for i in indices], config)
            if reference is None:
                logp, ref = sequence_logprobs(policy, batch), None
            else:
                rows = ScoredRows.build(reference, batch)
                logp, ref = rows.policy_logprobs(policy), rows.reference
            mine[indices] = logp.view(2, -1).T.cpu()  # (b, 2): chosen, rejected
            if ref is not None:
                theirs[indices] = ref.view(2, -1).T.cpu()
    return mine, (None if reference is None else theirs)


def reward_accuracy(policy, reference, tokenizer, episodes, config: FSPOConfig, batch_size: int = 8) -> float:
    """Share of held-out comparisons whose chosen answer gets the higher reward (ties count half), in [0, 1];
    NaN for no episodes. The rewards are `personalized_rewards`', `batch_size` episodes at a time."""
    chosen, rejected = personalized_rewards(policy, reference, tokenizer, episodes, config, batch_size)
    return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean().item()
