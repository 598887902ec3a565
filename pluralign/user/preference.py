"""The user model as a `PreferenceModel`, so `pluralign eval --model pal-a+residual` measures it
exactly like PAL and the baselines.

Training is PAL's (the population prior). A seen user is scored with their trained PAL logits plus a
residual fitted on their own training pairs; a new user gets PAL's few-shot logits from their support
pairs, then a residual fitted on the same support pairs. Group recovery is PAL's.
"""

from __future__ import annotations

import numpy as np
import torch

from pluralign.reward.features import PairBatch
from pluralign.reward.pal_fit import fit_users
from pluralign.reward.pal_preference import PALPreference
from pluralign.user.model import ResidualPrior, UserModel, UserState


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class ResidualPreference:
    def __init__(self, pal: PALPreference, prior: ResidualPrior = ResidualPrior()):
        self.pal = pal
        self.name = f"{pal.name}+residual"
        self.prior = prior
        self.user_model: UserModel | None = None
        self.states: dict[str, tuple[np.ndarray, UserState]] = {}

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        metrics = self.pal.fit(train, val)
        self.user_model = UserModel(self.pal.model, population="eval", prior=self.prior,
                                    prior_logits=_numpy(self.pal.user_weights.prior()))
        logits, _ = self.pal.user_weights.stack(train.users)  # (U, K)
        self.states = self._fit_users(_numpy(logits), train)
        if len(val):
            metrics["val_acc"] = float((self.prob_seen(val) > 0.5).mean())
        return metrics

    def _fit_users(self, logits: np.ndarray, pairs: PairBatch) -> dict[str, tuple[np.ndarray, UserState]]:
        """Each user's (logits, residual) from their rows of `pairs`; logits (U, K) indexed like pairs.users."""
        um = self.user_model
        user = pairs.user.cpu().numpy()
        p, c, r = _numpy(pairs.prompt), _numpy(pairs.chosen), _numpy(pairs.rejected)
        cn, rn = _numpy(pairs.chosen_named), _numpy(pairs.rejected_named)
        states = {}
        for i, name in enumerate(pairs.users):
            rows = np.flatnonzero(user == i)
            states[name] = (logits[i], um.fit_named(logits[i], p[rows], c[rows], r[rows], cn[rows], rn[rows]))
        return states

    def _prob(self, states: dict[str, tuple[np.ndarray, UserState]], pairs: PairBatch) -> np.ndarray:
        um = self.user_model
        user = pairs.user.cpu().numpy()
        p, c, r = _numpy(pairs.prompt), _numpy(pairs.chosen), _numpy(pairs.rejected)
        cn, rn = _numpy(pairs.chosen_named), _numpy(pairs.rejected_named)
        prior_logits = _numpy(self.pal.user_weights.prior())
        out = np.zeros(len(user))
        for i, name in enumerate(pairs.users):
            rows = np.flatnonzero(user == i)
            if not len(rows):
                continue
            logits, state = states.get(name, (prior_logits, None))
            won = um.score(logits, state, um.candidates(p[rows], c[rows], named=cn[rows]))
            lost = um.score(logits, state, um.candidates(p[rows], r[rows], named=rn[rows]))
            out[rows] = 1.0 / (1.0 + np.exp(-(won - lost)))
        return out

    def prob_seen(self, pairs: PairBatch) -> np.ndarray:
        return self._prob(self.states, pairs)

    def prob_new_users(self, support: PairBatch, query: PairBatch) -> np.ndarray:
        model, user_weights = self.pal._trained()
        logits = fit_users(
            model, support.prompt, support.chosen, support.rejected, support.user, len(support.users),
            prior_logits=user_weights.prior(), prior_strength=self.pal.prior_strength,
        )
        return self._prob(self._fit_users(_numpy(logits), support), query)

    def user_clusters(self) -> dict[str, int] | None:
        return self.pal.user_clusters()
