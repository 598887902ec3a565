"""Population models a user model sits on: what every user shares, behind one small interface.

Both kinds served by pluralign are mixtures of K reward functions whose margin is linear (PAL
variant a, EM) or linearized (PAL variant b) in a user's mixture weights, so both give each answer
the same kind of coordinates: o(x, y) (a term every user shares), q_1..q_K (one per prototype or
reward head) and an optional latent direction l(x, y) (PAL's latent space; EM has none).

- `PALPopulation`: PAL (Chen et al., ICLR 2025), see `pluralign.user.model` for the coordinates.
- `EMPopulation`: MaxMin-RLHF's EM mixture of K Bradley-Terry heads (Chakraborty et al., ICML 2024):
  q_k = r_k(x, y) = w_k . [y; x * y], o = 0, no latent; a user's logits are EM's log posterior over
  heads given their comparisons (log pi_k + sum_i log sigmoid(r_k(x_i, c_i) - r_k(x_i, r_i))).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pluralign.reward.pal_fit import PRIOR_STRENGTH, fit_users_from_terms
from pluralign.reward.pal_model import PairTerms, PALModel

if TYPE_CHECKING:  # pluralign.reward.em imports the pair features, which import pluralign.user
    from pluralign.reward.em import EMMixture


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - np.max(logits))
    return e / e.sum()


class Population(Protocol):
    kind: str  # "pal-a", "pal-b" or "em"
    k: int  # prototypes or heads
    latent_dim: int  # L (0: none)

    def coordinates(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """(N, 1 + K + L) coordinates of N (prompt, answer) pairs, embeddings (N, d) each."""
        ...

    def fit_logits(self, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, diff: np.ndarray,
                   prior_logits: np.ndarray) -> np.ndarray:
        """A user's K logits from N comparisons; `diff` (N, 1 + K + L) = coordinates(chosen) - coordinates(rejected)."""
        ...

    def reward(self, logits: np.ndarray, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """(N,) the population model's own reward for a user with `logits` (K,)."""
        ...

    def device(self) -> torch.device: ...


class PALPopulation:
    def __init__(self, model: PALModel, prior_logits: np.ndarray):
        self.model = model.eval()
        self.kind = f"pal-{model.config.variant}"
        self.k = model.config.k
        self.latent_dim = model.config.latent_dim
        self.input_dim = model.config.input_dim  # width of the embeddings it reads
        self.population_weights = softmax(np.asarray(prior_logits, np.float64))

    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def coordinates(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        scorer = self.model.scorer
        if self.model.config.variant == "a":
            f = scorer.embed(prompt, response)  # (N, L)
            origin = -(f**2).sum(-1, keepdim=True)
            pull = 2 * f @ scorer.prototypes.T  # (N, K)
        else:
            f = scorer.project(response)
            g = scorer.prototypes(prompt)  # (N, K, L)
            w0 = torch.as_tensor(self.population_weights, dtype=g.dtype, device=g.device)
            norm = torch.einsum("k,nkd->nd", w0, g).norm(dim=-1, keepdim=True).clamp_min(1e-8)  # ||a_0(x)||
            pull = scorer.scale() * torch.einsum("nkd,nd->nk", g, F.normalize(f, dim=-1)) / norm
            origin = torch.zeros_like(pull[:, :1])
        return torch.cat([origin, pull, F.normalize(f, dim=-1)], dim=-1)

    @torch.no_grad()
    def fit_logits(self, prompt, chosen, rejected, diff, prior_logits) -> np.ndarray:
        k = 1 + self.k
        if self.model.config.variant == "a":  # PAL's pair terms are these very columns
            terms = PairTerms(bias=torch.from_numpy(diff[:, 0]), pull=torch.from_numpy(diff[:, 1:k]))
        else:
            terms = self.model.pair_terms(prompt, chosen, rejected)
        prior = torch.as_tensor(np.asarray(prior_logits), dtype=torch.float32)
        user = torch.zeros(len(diff), dtype=torch.long)
        return fit_users_from_terms(self.model, terms, user, 1, prior, prior, PRIOR_STRENGTH)[0].double().numpy()

    @torch.no_grad()
    def reward(self, logits, prompt, response) -> torch.Tensor:
        return self.model.reward(torch.as_tensor(np.asarray(logits), dtype=torch.float32, device=prompt.device), prompt, response)


class EMPopulation:
    def __init__(self, mixture: EMMixture):
        self.mixture = mixture
        self.kind = "em"
        heads, log_mixing = mixture._heads()
        self.k = int(heads.shape[0])
        self.latent_dim = 0
        self.input_dim = int(heads.shape[1]) // 2  # heads read [y; x * y]
        self.log_mixing = log_mixing.double().cpu().numpy()  # (K,) the population prior

    def device(self) -> torch.device:
        return self.mixture._heads()[0].device

    @torch.no_grad()
    def coordinates(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        heads = self.mixture.rewards(prompt, response).float()  # (N, K)
        return torch.cat([torch.zeros_like(heads[:, :1]), heads], dim=-1)

    def fit_logits(self, prompt, chosen, rejected, diff, prior_logits) -> np.ndarray:
        margins = diff[:, 1 : 1 + self.k]  # (N, K) each head's margin
        return np.asarray(prior_logits, np.float64) + (-np.logaddexp(0.0, -margins)).sum(0)  # log posterior + const

    @torch.no_grad()
    def reward(self, logits, prompt, response) -> torch.Tensor:
        weights = torch.as_tensor(softmax(np.asarray(logits, np.float64)), device=prompt.device)
        return (self.mixture.rewards(prompt, response) * weights).sum(-1).float()


def as_population(model: PALModel | EMMixture, prior_logits: np.ndarray | None = None) -> Population:
    from pluralign.reward.em import EMMixture

    if isinstance(model, EMMixture):
        return EMPopulation(model)
    k = model.config.k
    return PALPopulation(model, np.zeros(k) if prior_logits is None else prior_logits)
