"""Pairs as tensors: frozen embeddings of prompt, chosen and rejected, with user indices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pluralign.data.record import Preference
from pluralign.embed.base import Encoder, checked_vectors
from pluralign.reward.inputs import as_numbers, comparison_rows, owners
from pluralign.user.features import response_features


@dataclass
class PairBatch:
    """Named fields for N comparisons. `user` indexes `users`; `group` labels each pair.

    The embeddings may be given as tensors or numpy arrays of any real dtype: they are kept as
    float32 tensors (what the models compute in), and `user` as a tensor. Raises ValueError naming
    the field that is not numbers; `check` (which every fit and score calls) names one of another
    shape or length."""

    prompt: torch.Tensor  # (N, d)
    chosen: torch.Tensor  # (N, d)
    rejected: torch.Tensor  # (N, d)
    user: torch.Tensor  # (N,) int64
    users: list[str]
    group: list[str]
    # named text features (pluralign.user.features) of each answer, (N, F); None when not computed
    chosen_named: torch.Tensor | None = None
    rejected_named: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for f in ("prompt", "chosen", "rejected"):
            value = as_numbers(f"PairBatch.{f}", getattr(self, f), "an (N, d) array of numbers")
            setattr(self, f, value if value.dtype == torch.float32 else value.float())
        self.user = as_numbers("PairBatch.user", self.user, "N user indices")

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def check(self, name: str, dim: int | None = None, min_pairs: int = 0) -> None:
        """Raise ValueError naming `name`.field when these pairs cannot be trained or scored on:
        fewer than `min_pairs`, embeddings not (N, d) alike (d = `dim` when given), NaN or inf in
        them (the first such row), or a `user` index outside `users`."""
        if len(self) < min_pairs:
            raise ValueError(f"`{name}` holds {len(self)} pairs, at least {min_pairs} needed")
        dim = self.prompt.shape[-1] if dim is None else dim
        rows = comparison_rows(dim, self.prompt.device, **{f"{name}.{f}": getattr(self, f) for f in ("prompt", "chosen", "rejected")})
        n = len(rows[0])  # the comparisons are the embeddings' rows; `user` and `group` must have as many
        owners(self.user, n, len(self.users), f"{name}.user")
        if len(self.group) != n:
            raise ValueError(f"`{name}.group` has {len(self.group)} labels, the comparisons {n}: one label per comparison")

    def select(self, index: torch.Tensor | np.ndarray | Sequence[int]) -> PairBatch:
        """The pairs at `index`: positions (M,) (any order, repeats allowed, negative from the end) or a
        boolean mask (N,) such as `pairs.user == 0`. Raises ValueError naming `index` when it is a mask
        of another length, not 1-D, not integers, or holds a position outside the N pairs. A mask is never
        read as the positions 0 and 1 (`select(pairs.user == 1)` would give N pairs of the first two rows,
        without a word)."""
        raw = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        n = len(self)
        if raw.dtype == np.bool_:
            if raw.shape != (n,):
                raise ValueError(f"`index` is a mask of shape {raw.shape}: a boolean mask has one entry per pair, ({n},)")
            raw = np.flatnonzero(raw)
        elif raw.size == 0:
            raw = raw.astype(np.int64)
        elif not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"`index` holds {raw.dtype}, not positions (integers) or a boolean mask")
        if raw.ndim != 1:
            raise ValueError(f"`index` has shape {raw.shape}: positions (M,) or a mask ({n},)")
        if raw.size and (raw.min() < -n or raw.max() >= n):
            bad = int(raw[(raw < -n) | (raw >= n)][0])
            raise ValueError(f"`index` holds position {bad}: these pairs are 0 .. {n - 1}")
        idx = torch.as_tensor(raw, dtype=torch.long)
        named = lambda t: None if t is None else t[idx]  # noqa: E731
        return PairBatch(
            self.prompt[idx], self.chosen[idx], self.rejected[idx], self.user[idx], self.users,
            [self.group[i] for i in idx.tolist()], named(self.chosen_named), named(self.rejected_named),
        )

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(
            self.prompt.to(device), self.chosen.to(device), self.rejected.to(device),
            self.user.to(device), self.users, self.group, self.chosen_named, self.rejected_named,
        )


def same_users(support: PairBatch, query: PairBatch) -> None:
    """ValueError naming `query.users` when new users' query pairs index other users than their
    support pairs do (another list, or the same users in another order: two `embed_pairs` calls
    without `users=`): each user would be scored with another user's fit."""
    if list(query.users) != list(support.users):
        shown = lambda users: repr(list(users)) if len(users) <= 6 else f"[{len(users)} users]"  # noqa: E731
        raise ValueError(f"`query.users` {shown(query.users)} are not `support.users` {shown(support.users)}: "
                         "embed both with the same `users=` so that user i is the same person in each")


def seen_rows(pairs: PairBatch, fitted: Sequence[str], model: str = "the model") -> torch.Tensor:
    """Each pair's row (N,) int64 among the users a model was fitted on (`fitted`, in its order):
    `pairs.users` are matched by name, so a batch indexing its users otherwise (another order, or
    only the users it holds: `embed_pairs` without `users=`) scores each pair with its own user's
    fit. Raises ValueError naming the first user who owns pairs and was not fitted on."""
    if list(pairs.users) == list(fitted):
        return pairs.user
    where = {u: i for i, u in enumerate(fitted)}
    rows = torch.tensor([where.get(u, -1) for u in pairs.users], dtype=torch.long)[pairs.user.cpu()]  # (N,)
    if bool((rows < 0).any()):
        stranger = pairs.users[int(pairs.user[int(torch.nonzero(rows < 0)[0])])]
        raise ValueError(f"`pairs` must index the users {model} was fitted on: {stranger!r} is not one of its {len(fitted)} "
                         "training users; score new users with prob_new_users(support, query)")
    return rows.to(pairs.user.device)


def embed_pairs(
    records: Sequence[Preference],
    encoder: Encoder,
    users: Sequence[str] | None = None,
    group_attribute: str = "group",
) -> PairBatch:
    """Embed each distinct text once; `users` fixes the user index order (default: first seen).
    Raises ValueError for a tie (`tie=True`: equal answers, not a pairwise comparison; leave ties
    out), naming a record's user that `users` leaves out, naming `users` when it names a user twice
    (the user's pairs would index one row and the model's user table refuse the list after training),
    TypeError when `users` is one str (each letter would be a user), and (`checked_vectors`) ValueError
    when the encoder returns another shape than (texts, dim) or a vector that is not finite."""
    tie = next((i for i, r in enumerate(records) if r.tie), None)
    if tie is not None:
        raise ValueError(f"record {tie} (user {records[tie].user_id!r}) is a tie: a pair here says `chosen` won, so "
                         "leave ties out ([r for r in records if not r.tie])")
    if isinstance(users, str):
        raise TypeError(f"`users` must be a list of user ids, not one str: users=[{users!r}]")
    users = list(users) if users is not None else list(dict.fromkeys(r.user_id for r in records))
    twice = next((u for i, u in enumerate(users) if u in users[:i]), None) if len(set(users)) < len(users) else None
    if twice is not None:
        raise ValueError(f"`users` names {twice!r} twice: each user is one row of the model's user table")
    user_index = {u: i for i, u in enumerate(users)}
    missing = next((r.user_id for r in records if r.user_id not in user_index), None)
    if missing is not None:
        raise ValueError(f"a record of user {missing!r} is not in `users` ({len(users)} ids): every record's user must be listed")
    texts = list(dict.fromkeys(t for r in records for t in (r.prompt, r.chosen, r.rejected)))
    index = {t: i for i, t in enumerate(texts)}
    vectors = torch.from_numpy(checked_vectors(encoder, encoder.encode(texts), len(texts))) if texts else torch.zeros(0, encoder.dim)
    take = lambda field: vectors[torch.tensor([index[getattr(r, field)] for r in records], dtype=torch.long)]  # noqa: E731
    if not records:
        empty = torch.zeros(0, encoder.dim)
        return PairBatch(empty, empty, empty, torch.zeros(0, dtype=torch.long), users, [])
    return PairBatch(
        prompt=take("prompt"),
        chosen=take("chosen"),
        rejected=take("rejected"),
        user=torch.tensor([user_index[r.user_id] for r in records], dtype=torch.long),
        users=users,
        group=[r.attributes.get(group_attribute, "unknown") for r in records],
        chosen_named=torch.from_numpy(response_features([r.chosen for r in records])),
        rejected_named=torch.from_numpy(response_features([r.rejected for r in records])),
    )
