"""PAL mixture reward models (Chen et al., ICLR 2025) on frozen embeddings.

Every user is a point on the simplex over K shared prototypes: w_u = softmax(logits_u). The model
holds only what all users share; a user's K logits are data passed in at scoring time.

- Variant "a" (ideal point): a projector f maps the embedding of (prompt, response) into a latent
  space holding K prototypes p_k; the user's ideal point is a_u = sum_k w_uk p_k and the reward is
  r_u(x, y) = -||f(x, y) - a_u||^2.
- Variant "b" (prompt-conditioned): K prototype MLPs g_k map the prompt into the latent space, the
  user's ideal point is a_u(x) = sum_k w_uk g_k(x), and the reward is a scaled cosine between f(y)
  and a_u(x), with a learnable, clamped scale.

Both variants reduce the preference margin r_u(x, y_c) - r_u(x, y_r) to a function of the K weights
and a few per-pair terms that do not depend on the user (`PairTerms`). Training computes them with
gradients; fitting a new user computes them once and then only moves K numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pluralign.reward.inputs import as_numbers, comparison_rows, first_bad_row, one_row, whole

VARIANTS = ("a", "b")
MAX_SCALE = 50.0  # variant b: cap on the cosine's scale, so margins stay finite


@dataclass(frozen=True)
class PALConfig:
    """The shared architecture; with the encoder id it is all a checkpoint needs to rebuild a model.
    `input_dim` must be the encoder's width (`encoder.dim`); each field is explained beside it.
    Raises ValueError for an unknown variant or a field that is not a whole number >= 1."""

    variant: str = "a"  # "a": ideal point, r = -||f(x,y) - a_u||^2; "b": scaled cosine(f(y), a_u(x))
    k: int = 4  # number of prototypes (mixture components)
    input_dim: int = 384  # size of the frozen text embeddings (MiniLM: 384)
    latent_dim: int = 64  # size of the space where responses meet ideal points
    hidden: int = 256  # width of the hidden layer of every MLP

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown PAL variant {self.variant!r}: expected one of {VARIANTS}")
        whole("PALConfig", 1, k=self.k, input_dim=self.input_dim, latent_dim=self.latent_dim, hidden=self.hidden)


@dataclass
class PairTerms:
    """What the margin of N comparisons needs besides the user's weights; shapes per variant."""

    bias: torch.Tensor  # a: (N,) ||f_r||^2 - ||f_c||^2 ; b: zeros (N,)
    pull: torch.Tensor  # a: (N, K) 2 p_k . (f_c - f_r) ; b: (N, K) g_k(x) . (f^_c - f^_r)
    gram: torch.Tensor | None = None  # b: (N, K, K) g_k(x) . g_l(x) ; a: None
    scale: torch.Tensor | None = None  # b: () cosine scale ; a: None

    def numpy(self) -> PairTerms:
        """The same terms as float64 numpy arrays (detached, on the CPU)."""
        convert = lambda t: None if t is None else t.detach().cpu().double().numpy()
        return PairTerms(convert(self.bias), convert(self.pull), convert(self.gram), convert(self.scale))


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


class IdealPoint(nn.Module):
    """Variant a: r_u(x, y) = -||f(x, y) - sum_k w_uk p_k||^2.

    The margin is linear in w: ||f_r - a||^2 - ||f_c - a||^2 = ||f_r||^2 - ||f_c||^2 + 2 a.(f_c - f_r)."""

    def __init__(self, config: PALConfig):
        super().__init__()
        self.project = mlp(2 * config.input_dim, config.hidden, config.latent_dim)
        self.prototypes = nn.Parameter(torch.randn(config.k, config.latent_dim))  # (K, d)

    def embed(self, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:  # (N, d)
        return self.project(torch.cat([prompt, response], dim=-1))

    def ideal_points(self, weights: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        return weights @ self.prototypes  # (..., d); the same for every prompt

    def reward(self, weights: torch.Tensor, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        return -((self.embed(prompt, response) - self.ideal_points(weights)) ** 2).sum(-1)  # (N,)

    def pair_terms(self, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> PairTerms:
        f_c, f_r = self.embed(prompt, chosen), self.embed(prompt, rejected)  # (N, d)
        bias = (f_r**2).sum(-1) - (f_c**2).sum(-1)  # (N,)
        pull = 2 * (f_c - f_r) @ self.prototypes.T  # (N, K)
        return PairTerms(bias=bias, pull=pull)

    # margin and margin_grad take torch tensors or numpy arrays alike (the few-shot fit uses numpy).
    @staticmethod
    def margin(terms: PairTerms, weights):  # weights (N, K) -> (N,)
        return terms.bias + (terms.pull * weights).sum(-1)

    @staticmethod
    def margin_grad(terms: PairTerms, weights):  # d margin / d w: (N, K)
        return terms.pull


class PromptConditioned(nn.Module):
    """Variant b: r_u(x, y) = s * cos(f(y), sum_k w_uk g_k(x)), s = exp(log_scale) clamped."""

    def __init__(self, config: PALConfig):
        super().__init__()
        k, h, d = config.k, config.hidden, config.latent_dim
        self.project = mlp(config.input_dim, h, d)
        # K prototype MLPs g_k: their first layers stacked into one Linear (D -> K*h), their second
        # layers as a batch of K matrices, so all K run in two matrix products.
        self.proto_in = nn.Linear(config.input_dim, k * h)
        self.proto_out = nn.Parameter(torch.randn(k, h, d) * h**-0.5)  # (K, h, d)
        self.proto_out_bias = nn.Parameter(torch.randn(k, d) * 0.1)  # (K, d), distinct from the start
        self.log_scale = nn.Parameter(torch.tensor(2.0))

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_SCALE)

    def prototypes(self, prompt: torch.Tensor) -> torch.Tensor:  # (N, D) -> (N, K, d)
        k, h, _ = self.proto_out.shape
        hidden = F.gelu(self.proto_in(prompt)).view(prompt.shape[0], k, h).transpose(0, 1)  # (K, N, h)
        return (torch.bmm(hidden, self.proto_out) + self.proto_out_bias[:, None]).transpose(0, 1)  # (N, K, d)

    def ideal_points(self, weights: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:  # (N, d)
        return torch.einsum("nk,nkd->nd", weights.expand(prompt.shape[0], -1), self.prototypes(prompt))

    def reward(self, weights: torch.Tensor, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(self.project(response), self.ideal_points(weights, prompt), dim=-1)
        return self.scale() * cos  # (N,)

    def pair_terms(self, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> PairTerms:
        f_c = F.normalize(self.project(chosen), dim=-1)  # (N, d)
        f_r = F.normalize(self.project(rejected), dim=-1)
        g = self.prototypes(prompt)  # (N, K, d)
        pull = torch.einsum("nkd,nd->nk", g, f_c - f_r)  # (N, K)
        gram = g @ g.transpose(1, 2)  # (N, K, K)
        return PairTerms(bias=torch.zeros_like(pull[:, 0]), pull=pull, gram=gram, scale=self.scale())

    # margin and margin_grad use only operators that torch tensors and numpy arrays share, so the
    # few-shot fit can run them on small float64 arrays.
    @staticmethod
    def _norm(terms: PairTerms, weights):
        gram_w = (terms.gram @ weights[:, :, None])[:, :, 0]  # (N, K)
        norm = ((weights * gram_w).sum(-1) + 1e-8) ** 0.5  # (N,) = ||a_u(x)||
        return gram_w, norm

    @classmethod
    def margin(cls, terms: PairTerms, weights):
        _, norm = cls._norm(terms, weights)
        return terms.scale * (terms.pull * weights).sum(-1) / norm

    @classmethod
    def margin_grad(cls, terms: PairTerms, weights):
        gram_w, norm = cls._norm(terms, weights)
        along = (terms.pull * weights).sum(-1)[:, None]  # (N, 1)
        return terms.scale * (terms.pull / norm[:, None] - along * gram_w / norm[:, None] ** 3)


SCORERS = {"a": IdealPoint, "b": PromptConditioned}


class PALModel(nn.Module):
    """The shared part of a PAL reward model. No user lives in its state dict.

    >>> model = PALModel(PALConfig(variant="a", k=4, input_dim=384))
    >>> model.reward(torch.zeros(4), prompt, response)  # prompt, response: (N, 384) -> (N,)
    """

    def __init__(self, config: PALConfig):
        super().__init__()
        self.config = config
        self.scorer = SCORERS[config.variant](config)

    @staticmethod
    def weights(user_logits: torch.Tensor) -> torch.Tensor:
        """Users' weights on the K prototypes, a point on the simplex each (PAL's w_u = softmax of the
        user's logits, Chen et al. 2025): (K,) -> (K,) or (U, K) -> (U, K), each row >= 0 and summing
        to 1. Tensors or numpy arrays of any real dtype (integers as float32). Raises ValueError naming
        `user_logits` when they are not numbers, not (K,) or (U, K), or hold NaN or inf (a softmax would
        carry the NaN into every weight of the row)."""
        t = as_numbers("user_logits", user_logits, "(K,) or (U, K) logits")
        if t.dim() not in (1, 2):
            raise ValueError(f"`user_logits` has shape {tuple(t.shape)}: (K,) for one user or (U, K)")
        if not t.is_floating_point():
            t = t.float()
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"`user_logits` is not finite (NaN or inf): row {first_bad_row(t.reshape(-1, t.shape[-1]))}")
        return torch.softmax(t, dim=-1)

    @staticmethod
    def _simplex(user_logits: torch.Tensor) -> torch.Tensor:
        """`weights` of logits already checked (`_user_rows`, or a training step's parameters)."""
        return torch.softmax(user_logits, dim=-1)

    def _user_rows(self, user_logits, n: int | None, device: torch.device) -> torch.Tensor:
        """user_logits (K,) or (n, K) (any n when None), any real dtype, as float32 on `device`;
        ValueError naming them."""
        k = self.config.k
        user_logits = as_numbers("user_logits", user_logits, f"(K,) or (N, K) logits, K={k}")
        if user_logits.dim() not in (1, 2) or user_logits.shape[-1] != k:
            raise ValueError(f"`user_logits` has {user_logits.shape[-1] if user_logits.dim() else 1} values per row, "
                             f"the model has K={k}: (K,) for one user or (N, K) per row")
        if user_logits.dim() == 2 and n is not None and user_logits.shape[0] != n:
            raise ValueError(f"`user_logits` has {user_logits.shape[0]} rows, the responses {n}: (K,) or one row per response")
        user_logits = user_logits.to(device=device, dtype=torch.float32)
        if not bool(torch.isfinite(user_logits).all()):
            raise ValueError("`user_logits` is not finite (NaN or inf)")
        return user_logits

    def reward(self, user_logits: torch.Tensor, prompt: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """user_logits (K,) for one user or (N, K) per row; prompt, response (N, D), or (D,) for one
        row (as `fit_user` takes one comparison) -> rewards (N,). Tensors or numpy arrays of any real
        dtype; raises ValueError naming the argument whose shape does not fit (K, D = input_dim, N) or
        that holds NaN or inf."""
        device = next(self.parameters()).device
        d = self.config.input_dim
        prompt, response = comparison_rows(d, device, prompt=one_row(prompt, d), response=one_row(response, d))
        user_logits = self._user_rows(user_logits, len(prompt), device)
        weights = self._simplex(user_logits)
        if weights.dim() == 1:
            weights = weights.expand(prompt.shape[0], -1)
        return self.scorer.reward(weights, prompt, response)

    def pair_terms(self, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> PairTerms:
        return self.scorer.pair_terms(prompt, chosen, rejected)

    def margin(self, user_logits: torch.Tensor, terms: PairTerms) -> torch.Tensor:
        """r(chosen) - r(rejected) for N comparisons; user_logits (K,) or (N, K) -> (N,)."""
        weights = self._simplex(user_logits)
        if weights.dim() == 1:
            weights = weights.expand(terms.pull.shape[0], -1)
        return self.scorer.margin(terms, weights)

    def preference_prob(
        self, user_logits: torch.Tensor, prompt: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor
    ) -> torch.Tensor:
        """P(chosen beats rejected) = sigmoid(r_u(x, chosen) - r_u(x, rejected)) (Bradley-Terry) for
        N comparisons: user_logits (K,) or (N, K); prompt, chosen, rejected (N, D) -> (N,), on the
        model's device and, like `reward`, tracked by autograd (`.detach()` before numpy; the
        fairness metrics take it as it is). Raises ValueError as `reward` does."""
        device = next(self.parameters()).device
        d = self.config.input_dim  # (D,) each: one comparison, as for `reward`
        prompt, chosen, rejected = comparison_rows(d, device, prompt=one_row(prompt, d), chosen=one_row(chosen, d), rejected=one_row(rejected, d))
        user_logits = self._user_rows(user_logits, len(prompt), device)
        return torch.sigmoid(self.margin(user_logits, self.pair_terms(prompt, chosen, rejected)))

    def ideal_points(self, user_logits: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Users' ideal points in the latent space (PAL's a_u = sum_k w_uk p_k, Chen et al. 2025):
        variant a: user_logits (U, K) -> (U, latent_dim), or (K,) for one user -> (latent_dim,);
        variant b also needs `prompt` (U, D), one per row, and gives each user's prototype mix for
        it: (U, K) logits one row per prompt, or (K,) one user's for every prompt -> (U, latent_dim).
        (K,) as `reward` and `preference_prob` take it. Tensors or numpy arrays of any real dtype.
        Raises ValueError naming `user_logits` (not (K,) or (U, K) finite numbers) or `prompt`."""
        device = next(self.parameters()).device
        if prompt is None and self.config.variant == "b":
            raise ValueError("`prompt` is needed: variant b's prototypes depend on the prompt, (U, D) one per row")
        if prompt is not None:
            (prompt,) = comparison_rows(self.config.input_dim, device, prompt=prompt)
        rows = self._user_rows(user_logits, len(prompt) if prompt is not None else None, device)
        return self.scorer.ideal_points(self._simplex(rows), prompt)
