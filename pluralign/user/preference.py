"""The user model as a `PreferenceModel`, so `pluralign eval --model pal-a+residual` measures it
exactly like PAL and the baselines.

Training is PAL's (the population prior). A seen user is scored with their own model fitted on
their training pairs; a new user's is fitted on their support pairs. How far a user may move from the
population is chosen on validation pairs only: every prior standard deviation beyond PAL's is scaled
by the factor in SCALES with the best validation log-likelihood of the seen users (`residual_scale`
in the metrics). On UKP, where workers judge much alike, that keeps users near the population; on
persona users it lets them move. Group recovery is PAL's.
"""

from __future__ import annotations

import numpy as np
import torch

from pluralign.reward.features import PairBatch
from pluralign.reward.model_selection import KSelected
from pluralign.reward.pal_fit import fit_users
from pluralign.reward.pal_preference import PALPreference
from pluralign.user.model import ResidualPrior, UserModel, UserState

SCALES = (0.03, 0.1, 0.3, 1.0)  # candidate multipliers of the prior's standard deviations


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    return t.detach().cpu().double().numpy()


class ResidualPreference:
    """`pal` is a PALPreference, or a `KSelected` one whose K is chosen from the data when fitted."""

    def __init__(self, pal: PALPreference | KSelected, prior: ResidualPrior = ResidualPrior()):
        self.selector = pal
        self.pal = pal
        self.name = f"{pal.name}+residual"
        self.prior = prior
        self.user_model: UserModel | None = None
        self.states: dict[str, tuple[np.ndarray, UserState]] = {}

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        metrics = self.selector.fit(train, val)
        self.pal = self.selector.model if isinstance(self.selector, KSelected) else self.selector
        logits, _ = self.pal.user_weights.stack(train.users)  # (U, K)
        best = None
        for scale in SCALES if len(val) else (1.0,):
            p = self.prior
            prior = ResidualPrior(p.origin_scale * scale, p.prototype_scale * scale, p.feature_scale * scale,
                                  p.latent_scale * scale, p.newton_steps, p.tol)
            self.user_model = UserModel(self.pal.model, population="eval", prior=prior,
                                        prior_logits=_numpy(self.pal.user_weights.prior()))
            self.states = self._fit_users(_numpy(logits), train)
            prob = np.clip(self.prob_seen(val), 1e-6, 1 - 1e-6) if len(val) else np.zeros(0)
            loglik = float(np.log(prob).mean()) if len(val) else 0.0
            metrics[f"val_loglik_scale_{scale}"] = loglik
            if best is None or loglik > best[0]:
                best = (loglik, scale, self.user_model, self.states, prob)
        _, scale, self.user_model, self.states, prob = best
        metrics["residual_scale"] = scale
        if len(val):
            metrics["val_acc"] = float((prob > 0.5).mean())
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

    def population_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (D,), precision (D,)) of the seen users' fitted coefficients: how users of this
        population actually differ (each coordinate's variance across users, floored at 1e-4)."""
        means = np.stack([state.mean_array() for _, state in self.states.values()])  # (U, D)
        return means.mean(0), 1.0 / np.maximum(means.var(0), 1e-4)

    def prob_new_users_active(self, pool: PairBatch, query: PairBatch, k: int, selection: str = "model",
                              target: str = "coefficients") -> tuple[np.ndarray, dict[str, list[int]]]:
        """Like `prob_new_users`, but each new user's k support comparisons are chosen from their
        whole support `pool` by expected information on their posterior, one at a time
        (`pluralign.user.active.select_active`; `target` `coefficients` is BALD, `predictive`
        EPIG with the pool as targets), not taken in the pool's order. The chosen
        comparisons are then fitted exactly as `prob_new_users` fits its first k. `selection` is the
        Gaussian the choice starts from: `model` (the user model's prior, as the service does) or
        `population` (the seen users' spread, `population_prior`). Returns the query probabilities
        (Q,) and, per user, the pool rows chosen (indices into that user's rows)."""
        from pluralign.user.active import select_active

        if selection not in ("model", "population"):
            raise ValueError(f"selection must be `model` or `population`, got {selection!r}")
        um = self.user_model
        start_mean, start_precision = self.population_prior() if selection == "population" else (um.prior_mean(), um.prior_precision())
        user = pool.user.cpu().numpy()
        p, c, r = _numpy(pool.prompt), _numpy(pool.chosen), _numpy(pool.rejected)
        cn, rn = _numpy(pool.chosen_named), _numpy(pool.rejected_named)
        prior_logits = _numpy(self.pal.user_weights.prior())
        states, chosen = {}, {}
        for i, name in enumerate(pool.users):
            rows = np.flatnonzero(user == i)
            if not len(rows):
                continue
            design = um._split(um._diff(p[rows], c[rows], r[rows])[3], cn[rows] - rn[rows])  # (P, D)
            picks = select_active(design, start_mean, start_precision, k, self.prior.newton_steps, self.prior.tol, target)
            take = rows[picks]
            states[name] = (prior_logits, um.fit_named(prior_logits, p[take], c[take], r[take], cn[take], rn[take]))
            chosen[name] = [int(x) for x in picks]
        return self._prob(states, query), chosen

    def user_clusters(self) -> dict[str, int] | None:
        return self.pal.user_clusters()

    def heldout_log_likelihood(self, pairs: PairBatch) -> float:
        return float(np.log(np.clip(self.prob_seen(pairs), 1e-6, 1 - 1e-6)).mean())
