"""What pluralign believes about one user: PAL's mixture as the population prior, plus a per-user
Bayesian residual that can hold a preference no prototype covers.

A user's reward for an answer y to a prompt x is

    r_u(x, y) = alpha_u * r_PAL(w_u; x, y) + theta_u . phi(y) + delta_u . l(x, y)

- r_PAL(w_u; x, y) is PAL's mixture reward (Chen et al., ICLR 2025) under the user's prototype
  weights w_u = softmax(logits_u), fitted first exactly as PAL fits a new user;
- phi(y) are the named text features of `pluralign.user.features` (length, lists, register, ...);
- l(x, y) is the answer's direction in PAL's latent space (unit norm), so delta_u moves the user's
  ideal point off the simplex spanned by the prototypes (variant a: r = -||f - a_u - delta||^2 adds
  2 delta . f; variant b: the first-order change of the cosine).

beta_u = (alpha_u, theta_u, delta_u) gets a Gaussian prior centred on "exactly PAL" (alpha = 1, the
rest 0) and the Bradley-Terry likelihood of the user's own comparisons,
P(c > r) = sigmoid(beta_u . (x_c - x_r)). The posterior is approximated by a Gaussian at its mode
(Laplace): a few Newton steps on a convex objective, then the inverse Hessian as the covariance,
which later work uses to ask the most informative question. This is Bayesian logistic regression
with an informative prior (Bishop, PRML 4.5); LoRe (Bose et al., 2025) and HyRe (Lee et al., 2025)
likewise adapt a low-dimensional per-user part on top of a shared reward basis.

Shapes: N comparisons or candidates, d embedding width, K prototypes, F named features, L latent
width, D = 1 + F + L coefficients. Everything per user is numpy float64 and small (D ~ 70), so a
refit is milliseconds; the state is a row (`UserState`, msgpack) in the users table, never a module
parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import torch
import torch.nn.functional as F

from pluralign.data.record import Base
from pluralign.reward.pal_fit import PRIOR_STRENGTH, fit_users_from_terms
from pluralign.reward.pal_model import PALModel
from pluralign.user.features import FEATURE_NAMES, FEATURES_VERSION, response_features

STATE_VERSION = 1


@dataclass(frozen=True)
class ResidualPrior:
    """Standard deviations of the Gaussian prior on a user's residual coefficients."""

    pal_scale: float = 0.5  # of alpha around 1: how far a user may scale PAL's reward up or down
    feature_scale: float = 1.0  # of each named feature's weight (features move ~1 between answers)
    latent_scale: float = 1.0  # of each latent coordinate's weight (latent rows have unit norm)
    newton_steps: int = 25  # most Newton steps of the mode search
    tol: float = 1e-8  # stop once a step changes the objective by less than this

    def __post_init__(self) -> None:
        if min(self.pal_scale, self.feature_scale, self.latent_scale) <= 0:
            raise ValueError("prior scales must be positive")


class UserState(Base, kw_only=True):
    """A user's residual posterior, as stored in the users table (msgpack) and exported (JSON)."""

    version: int = STATE_VERSION
    population: str  # version of the population (PAL) checkpoint it was fitted against
    features: str  # FEATURES_VERSION of the named features
    names: list[str]  # (D,) coefficient names: "pal", the feature names, "latent_0".."latent_{L-1}"
    logits: list[float]  # (K,) the PAL logits the residual sits on
    mean: list[float]  # (D,) posterior mean of beta
    cov: list[float]  # (D * D,) posterior covariance, row-major
    n: int  # comparisons fitted on
    fitted_at: float

    def mean_array(self) -> np.ndarray:
        return np.asarray(self.mean, np.float64)

    def cov_array(self) -> np.ndarray:
        d = len(self.mean)
        return np.asarray(self.cov, np.float64).reshape(d, d)

    def coefficient(self, name: str) -> tuple[float, float]:
        """(posterior mean, posterior standard deviation) of one named coefficient."""
        i = self.names.index(name)
        return float(self.mean[i]), float(np.sqrt(max(self.cov_array()[i, i], 0.0)))

    def encode(self) -> bytes:
        return _ENCODER.encode(self)

    @staticmethod
    def decode(raw: bytes) -> UserState:
        """Raises msgspec.DecodeError / ValidationError on a malformed state."""
        return _DECODER.decode(raw)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(UserState)


def fit_posterior(
    design: np.ndarray, prior_mean: np.ndarray, prior_precision: np.ndarray, steps: int = 25, tol: float = 1e-8
) -> tuple[np.ndarray, np.ndarray]:
    """Laplace approximation of Bayesian logistic regression without intercept.

    design (N, D): x_c - x_r of each comparison (the chosen answer's features minus the rejected's);
    prior_mean (D,), prior_precision (D,) (a diagonal Gaussian prior). Returns the posterior mode
    (D,) and covariance (D, D) = inverse Hessian of the negative log posterior at the mode. Newton's
    method on a strictly convex objective, with step halving as a safeguard."""
    beta = prior_mean.astype(np.float64).copy()
    prec = np.diag(prior_precision.astype(np.float64))

    def objective(b: np.ndarray) -> float:
        return float(np.logaddexp(0.0, -(design @ b)).sum() + 0.5 * ((b - prior_mean) ** 2 * prior_precision).sum())

    loss = objective(beta)
    hessian = prec
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))  # (N,) P(chosen beats rejected)
        grad = -design.T @ (1.0 - p) + prior_precision * (beta - prior_mean)  # (D,)
        hessian = (design.T * (p * (1.0 - p))) @ design + prec  # (D, D)
        step = np.linalg.solve(hessian, grad)
        size = 1.0
        for _ in range(20):
            candidate = beta - size * step
            candidate_loss = objective(candidate)
            if candidate_loss <= loss + 1e-12:
                break
            size /= 2
        else:
            break
        beta, decrease, loss = candidate, loss - candidate_loss, candidate_loss
        if decrease < tol:
            break
    p = 1.0 / (1.0 + np.exp(-(design @ beta)))
    hessian = (design.T * (p * (1.0 - p))) @ design + prec
    return beta, np.linalg.inv(hessian)


def pal_latent(model: PALModel, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """(N, L) unit-norm direction of each answer in PAL's latent space (variant a: of the
    (prompt, answer) pair; variant b: of the answer)."""
    scorer = model.scorer
    latent = scorer.embed(prompt, response) if model.config.variant == "a" else scorer.project(response)
    return F.normalize(latent, dim=-1)


@dataclass(frozen=True)
class Candidates:
    """What scoring needs of N answers, none of it about a user: PAL inputs, latent and features."""

    prompt: np.ndarray  # (N, d)
    response: np.ndarray  # (N, d)
    latent: np.ndarray  # (N, L)
    named: np.ndarray  # (N, F)


class UserModel:
    """PAL (the population prior) plus the per-user residual. Holds no user: states are passed in.

    >>> um = UserModel(pal_model, population="ckpt-1f2e")
    >>> state = um.fit(logits, prompt, chosen, rejected, chosen_texts, rejected_texts)
    >>> um.score(logits, state, um.candidates(prompt, response, texts))  # (N,)
    """

    def __init__(self, pal: PALModel, population: str, prior: ResidualPrior = ResidualPrior()):
        self.pal = pal.eval()
        self.population = population
        self.prior = prior
        self.latent_dim = pal.config.latent_dim
        self.names = ["pal", *FEATURE_NAMES, *(f"latent_{i}" for i in range(self.latent_dim))]

    @property
    def dim(self) -> int:
        return len(self.names)

    def prior_mean(self) -> np.ndarray:
        mean = np.zeros(self.dim)
        mean[0] = 1.0
        return mean

    def prior_precision(self) -> np.ndarray:
        p = self.prior
        scales = [p.pal_scale] + [p.feature_scale] * len(FEATURE_NAMES) + [p.latent_scale] * self.latent_dim
        return 1.0 / np.square(np.asarray(scales, np.float64))

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        device = next(self.pal.parameters()).device
        return torch.as_tensor(np.array(a, dtype=np.float32), device=device)  # a writable copy

    @torch.no_grad()
    def candidates(self, prompt: np.ndarray, response: np.ndarray, texts: Sequence[str]) -> Candidates:
        """prompt (N, d) or (d,), response (N, d), texts N -> the user-independent scoring inputs."""
        response = np.asarray(response, np.float32)
        prompt = np.broadcast_to(np.asarray(prompt, np.float32).reshape(-1, response.shape[1]), response.shape)
        if len(texts) != response.shape[0]:
            raise ValueError(f"{len(texts)} texts for {response.shape[0]} response vectors")
        latent = pal_latent(self.pal, self._tensor(prompt), self._tensor(response)).double().cpu().numpy()
        return Candidates(prompt=prompt, response=response, latent=latent, named=response_features(texts))

    @torch.no_grad()
    def pal_reward(self, logits: np.ndarray, c: Candidates) -> np.ndarray:
        return self.pal.reward(self._tensor(logits), self._tensor(c.prompt), self._tensor(c.response)).double().cpu().numpy()

    def features(self, logits: np.ndarray, c: Candidates) -> np.ndarray:
        """(N, D): each answer's coordinates in the user model under the user's PAL logits."""
        return np.concatenate([self.pal_reward(logits, c)[:, None], c.named, c.latent], axis=1)

    def score(self, logits: np.ndarray, state: UserState | None, c: Candidates) -> np.ndarray:
        """(N,) the user's reward of each answer: the posterior mean's; PAL alone without a state."""
        beta = self.prior_mean() if state is None else state.mean_array()
        return self.features(logits, c) @ beta

    @torch.no_grad()
    def fit_logits(self, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, prior_logits: np.ndarray) -> np.ndarray:
        """PAL's few-shot fit of the user's K logits (the population part), comparisons (N, d) each."""
        terms = self.pal.pair_terms(self._tensor(prompt), self._tensor(chosen), self._tensor(rejected))
        prior = self._tensor(prior_logits)
        user = torch.zeros(len(prompt), dtype=torch.long)
        return fit_users_from_terms(self.pal, terms, user, 1, prior, prior, PRIOR_STRENGTH)[0].numpy()

    def fit(
        self, logits: np.ndarray, prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray,
        chosen_texts: Sequence[str], rejected_texts: Sequence[str], fitted_at: float = 0.0,
    ) -> UserState:
        """The residual posterior of a user with PAL logits (K,) from their N comparisons
        (embeddings (N, d) each, and the answers' texts). Raises ValueError on mismatched lengths."""
        if not (len(prompt) == len(chosen) == len(rejected) == len(chosen_texts) == len(rejected_texts)):
            raise ValueError("prompt, chosen, rejected and both text lists must have one row per comparison")
        if len(prompt):
            won = self.features(logits, self.candidates(prompt, chosen, chosen_texts))
            lost = self.features(logits, self.candidates(prompt, rejected, rejected_texts))
            design = won - lost  # (N, D)
        else:
            design = np.zeros((0, self.dim))
        p = self.prior
        mean, cov = fit_posterior(design, self.prior_mean(), self.prior_precision(), p.newton_steps, p.tol)
        return UserState(
            population=self.population, features=FEATURES_VERSION, names=list(self.names),
            logits=[float(x) for x in logits], mean=mean.tolist(), cov=cov.reshape(-1).tolist(), n=len(prompt),
            fitted_at=fitted_at,
        )

    def fits(self, state: UserState | None) -> bool:
        """Whether a stored state belongs to this model (same population checkpoint and features)."""
        return state is not None and state.population == self.population and state.features == FEATURES_VERSION \
            and state.names == self.names and state.version == STATE_VERSION
