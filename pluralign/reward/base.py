"""What the evaluation protocol needs from a preference model.

A model is trained on seen users' pairs, predicts P(chosen beats rejected) for seen users, and, for
new users, fits what it personalizes from a few support pairs before predicting their queries.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pluralign.reward.features import PairBatch


class PreferenceModel(Protocol):
    name: str

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        """Train on seen users; returns training metrics."""
        ...

    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        """P(chosen > rejected) for pairs of users seen in training (pairs.users == train users)."""
        ...

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        """Fit each new user from `support`, then predict `query` (both index the same users)."""
        ...

    def user_clusters(self) -> dict[str, int] | None:
        """A cluster per seen user, when the model learns groups (for ARI); else None."""
        ...
