"""Tiny synthetic populations for PAL tests: groups that prefer opposite directions of a response."""

from __future__ import annotations

import torch

from pluralign.reward.features import PairBatch

DIM = 8


def opposed_groups(users_per_group: int = 8, pairs_per_user: int = 50, groups: int = 2, seed: int = 0,
                   prefix: str = "u") -> PairBatch:
    """Group g prefers the response further along direction g (group 1 of 2: the opposite of group 0)."""
    gen = torch.Generator().manual_seed(seed)
    taste = torch.randn(max(groups // 2, 1), DIM, generator=torch.Generator().manual_seed(1234))
    taste = torch.cat([taste, -taste])[:groups]  # (G, D): opposed pairs of directions
    n_users = users_per_group * groups
    user = torch.arange(n_users).repeat_interleave(pairs_per_user)  # (N,)
    group_of = user // users_per_group
    n = user.shape[0]
    prompt = torch.randn(1, DIM, generator=gen).expand(n, DIM).clone()  # one question for everyone, as in persona
    a, b = torch.randn(n, DIM, generator=gen), torch.randn(n, DIM, generator=gen)
    a_wins = ((a - b) * taste[group_of]).sum(-1) > 0
    chosen = torch.where(a_wins[:, None], a, b)
    rejected = torch.where(a_wins[:, None], b, a)
    users = [f"{prefix}{i}-g{i // users_per_group}" for i in range(n_users)]
    return PairBatch(prompt, chosen, rejected, user, users, [f"g{int(g)}" for g in group_of])


def split(pairs: PairBatch, fractions=(0.6, 0.2)) -> tuple[PairBatch, PairBatch, PairBatch]:
    """Split each user's pairs in order into train / val / test."""
    train, val, test = [], [], []
    for u in range(len(pairs.users)):
        idx = (pairs.user == u).nonzero().squeeze(-1).tolist()
        a, b = int(len(idx) * fractions[0]), int(len(idx) * (fractions[0] + fractions[1]))
        train += idx[:a]
        val += idx[a:b]
        test += idx[b:]
    return pairs.select(train), pairs.select(val), pairs.select(test)
