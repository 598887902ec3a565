"""Groups from learned mixture components: each user's nearest PAL prototype or EM cluster.

A user's group is the component that best explains all of their comparisons: the largest mixture
weight of their PAL logits fitted with the shared model frozen, or their EM posterior's argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pluralign.data.record import Preference
from pluralign.embed.base import Encoder
from pluralign.reward.features import embed_pairs

USERS_PER_CHUNK = 256  # PAL fits users in chunks: its solver holds a (users x pairs) matrix


def pal_prototype_groups(records: Sequence[Preference], encoder: Encoder, pal_dir: str | Path) -> dict[str, str]:
    """user -> `prototype-k`, k the largest weight of the user's PAL logits fitted on their comparisons."""
    from pluralign.reward.pal import fit_users, load_pal

    model, user_weights, _ = load_pal(pal_dir, encoder_id=encoder.encoder_id, device=torch.device("cpu"), dim=encoder.dim)
    pairs = [r for r in records if not r.tie]
    users = sorted({r.user_id for r in pairs})
    batch = embed_pairs(pairs, encoder, users)
    user = batch.user.numpy()
    groups: dict[str, str] = {}
    for start in range(0, len(users), USERS_PER_CHUNK):
        chunk = np.arange(start, min(start + USERS_PER_CHUNK, len(users)))
        rows = torch.from_numpy(np.flatnonzero(np.isin(user, chunk)))
        local = batch.user[rows] - start
        logits = fit_users(model, batch.prompt[rows], batch.chosen[rows], batch.rejected[rows], local, len(chunk),
                           prior_logits=user_weights.prior())  # (U_chunk, K)
        for u, k in zip(chunk, logits.argmax(-1).tolist(), strict=True):
            groups[users[u]] = f"prototype-{k}"
    return groups


def em_cluster_groups(records: Sequence[Preference], encoder: Encoder, em_dir: str | Path) -> dict[str, str]:
    """user -> `cluster-k`, k the argmax of the user's posterior over the EM mixture's reward heads."""
    from pluralign.reward.em import EMMixture

    mixture = EMMixture.load(em_dir, encoder.encoder_id, encoder.dim)
    pairs = [r for r in records if not r.tie]
    users = sorted({r.user_id for r in pairs})
    posterior = mixture.posterior(embed_pairs(pairs, encoder, users))  # (U, K)
    return {u: f"cluster-{k}" for u, k in zip(users, posterior.argmax(1).tolist(), strict=True)}
