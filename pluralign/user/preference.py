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

from pluralign.fairness.metrics import credit
from pluralign.reward.features import PairBatch, same_users
from pluralign.reward.model_selection import KSelected
from pluralign.reward.pal_fit import fit_users
from pluralign.reward.pal_preference import PALPreference
from pluralign.user.active import Particles
from pluralign.user.model import ResidualPrior, UserModel, UserState

SCALES = (0.03, 0.1, 0.3, 1.0)  # candidate multipliers of the prior's standard deviations


def _numpy(t: torch.Tensor | None) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _named(pairs: PairBatch, name: str = "pairs") -> tuple[np.ndarray, np.ndarray]:
    """The named features of each answer, chosen and rejected (N, F) float64; ValueError naming
    `name` when the batch has none (built by hand rather than by `embed_pairs`)."""
    if pairs.chosen_named is None or pairs.rejected_named is None:
        raise ValueError(f"`{name}.chosen_named` is missing: the +residual user models also read named features of each "
                         "answer (pluralign.user.features.response_features); build the pairs with embed_pairs, or pass "
                         "chosen_named=response_features(chosen texts) and rejected_named likewise")
    return _numpy(pairs.chosen_named), _numpy(pairs.rejected_named)


class ResidualPreference:
    """`pal` is a PALPreference, or a `KSelected` one whose K is chosen from the data when fitted."""

    def __init__(self, pal: PALPreference | KSelected, prior: ResidualPrior = ResidualPrior()):
        self.selector = pal
        self.pal = pal
        self.name = f"{pal.name}+residual"
        self.prior = prior
        self.user_model: UserModel | None = None
        self.states: dict[str, tuple[np.ndarray, UserState]] = {}
        self._particles: Particles | None = None  # `population_particles`, from the states of the last fit

    def fit(self, train: PairBatch, val: PairBatch) -> dict[str, float]:
        _named(train, "train")  # before the population model trains
        _named(val, "val")
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
        self._particles = None
        metrics["residual_scale"] = scale
        if len(val):
            metrics["val_acc"] = float(credit(prob).mean())
        return metrics

    def _fit_users(self, logits: np.ndarray, pairs: PairBatch) -> dict[str, tuple[np.ndarray, UserState]]:
        """Each user's (logits, residual) from their rows of `pairs`; logits (U, K) indexed like pairs.users."""
        um = self.user_model
        user = pairs.user.cpu().numpy()
        p, c, r = _numpy(pairs.prompt), _numpy(pairs.chosen), _numpy(pairs.rejected)
        cn, rn = _named(pairs)
        states = {}
        for i, name in enumerate(pairs.users):
            rows = np.flatnonzero(user == i)
            states[name] = (logits[i], um.fit_named(logits[i], p[rows], c[rows], r[rows], cn[rows], rn[rows]))
        return states

    def _prob(self, states: dict[str, tuple[np.ndarray, UserState]], pairs: PairBatch) -> np.ndarray:
        um = self.user_model
        user = pairs.user.cpu().numpy()
        p, c, r = _numpy(pairs.prompt), _numpy(pairs.chosen), _numpy(pairs.rejected)
        cn, rn = _named(pairs)
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
        same_users(support, query)
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
        whole support `pool`, one at a time, by what the answer is expected to teach
        (`pluralign.user.active`), not taken in the pool's order. Returns the query probabilities
        (Q,) and, per user, the pool rows chosen (indices into that user's rows, in the order chosen).

        `target` `coefficients` (BALD) and `predictive` (EPIG, the pool as targets) choose on the
        user model's Gaussian posterior, which starts from `selection`: `model` (the user model's
        prior, as the service does) or `population` (the seen users' spread, `population_prior`);
        the chosen comparisons are then fitted exactly as `prob_new_users` fits the first k.
        `target` `group` takes the new user to be like one of the seen users
        (`population_particles`) and chooses by the information about which of PAL's user groups
        that is (`select_by_group`); the query is then predicted as `prob_new_users_particles`
        predicts it from the chosen rows (`selection` does not apply). Raises ValueError on an
        unknown `selection` or `target`."""
        from pluralign.user.active import select_active, select_by_group

        if selection not in ("model", "population"):
            raise ValueError(f"selection must be `model` or `population`, got {selection!r}")
        if target not in ("coefficients", "predictive", "group"):
            raise ValueError(f"target must be `coefficients`, `predictive` or `group`, got {target!r}")
        um = self.user_model
        start_mean, start_precision = self.population_prior() if selection == "population" else (um.prior_mean(), um.prior_precision())
        particles = self.population_particles() if target == "group" else None
        user = pool.user.cpu().numpy()
        chosen, take = {}, []
        for i, name in enumerate(pool.users):
            rows = np.flatnonzero(user == i)
            if not len(rows):
                continue
            design = self._design(pool, rows)  # (P, D)
            if particles is not None:
                picks = select_by_group(particles.predictive(design), particles.groups, k)
            else:
                picks = select_active(design, start_mean, start_precision, k, self.prior.newton_steps, self.prior.tol, target)
            take.extend(rows[picks].tolist())
            chosen[name] = [int(x) for x in picks]
        support = pool.select(sorted(take))
        if particles is not None:
            return self.prob_new_users_particles(support, query, particles), chosen
        # the chosen rows are fitted as `prob_new_users` fits the first k: PAL's logits, then the residual
        return self.prob_new_users(support, query), chosen

    def population_particles(self) -> Particles:
        """The seen users' fitted posteriors (Gaussian means and covariances) and PAL's group of each
        (`user_clusters`): the discrete population a new user is compared against. Built once per
        `fit` (PAL's clustering runs once, not for every k)."""
        if self._particles is None:
            names = list(self.states)
            clusters = self.pal.user_clusters() or {}
            means = np.stack([self.states[n][1].mean_array() for n in names])  # (U, D)
            covs = np.stack([self.states[n][1].cov_array() for n in names])  # (U, D, D)
            self._particles = Particles(means, covs, np.array([clusters.get(n, j) for j, n in enumerate(names)]))
        return self._particles

    def prob_new_users_particles(self, support: PairBatch, query: PairBatch, particles: Particles | None = None) -> np.ndarray:
        """Query probabilities (Q,) for new users predicted as the seen users would answer: each new
        user's posterior over the U seen users (`pluralign.user.active.particle_posterior`, uniform
        prior, each seen user's posterior predictive as the likelihood of the user's `support`
        answers) weights the seen users' predictive probabilities (Bayesian model averaging over a
        discrete, empirical population prior). It cannot leave the seen population: the fitted
        `prob_new_users` can, given enough comparisons."""
        from pluralign.user.active import particle_posterior

        same_users(support, query)
        _named(support, "support")
        _named(query, "query")
        particles = particles if particles is not None else self.population_particles()
        out = np.zeros(len(query))
        s_user, q_user = support.user.cpu().numpy(), query.user.cpu().numpy()
        index = {name: i for i, name in enumerate(support.users)}
        for j, name in enumerate(query.users):
            q_rows = np.flatnonzero(q_user == j)
            if not len(q_rows):
                continue
            s_rows = np.flatnonzero(s_user == index[name]) if name in index else np.zeros(0, int)
            observed = particles.predictive(self._design(support, s_rows))  # (0, U) without support: the uniform prior
            out[q_rows] = particles.predictive(self._design(query, q_rows)) @ particle_posterior(observed)
        return out

    def _design(self, pairs: PairBatch, rows: np.ndarray) -> np.ndarray:
        """(len(rows), D) chosen-minus-rejected coordinates of the given rows of `pairs`."""
        return self.user_model.design(_numpy(pairs.prompt[rows]), _numpy(pairs.chosen[rows]), _numpy(pairs.rejected[rows]),
                                      _numpy(pairs.chosen_named[rows]), _numpy(pairs.rejected_named[rows]))

    def user_clusters(self) -> dict[str, int] | None:
        return self.pal.user_clusters()

    def heldout_log_likelihood(self, pairs: PairBatch) -> float:
        return float(np.log(np.clip(self.prob_seen(pairs), 1e-6, 1 - 1e-6)).mean())
