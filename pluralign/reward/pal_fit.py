"""Few-shot fitting of users' K logits with everything shared frozen.

The objective per user is the preference log-likelihood of their comparisons plus a Gaussian prior
on the logits centred on the population prior:

    L(theta) = sum_i softplus(-m_i(softmax(theta))) + prior_strength / 2 * ||theta - theta_0||^2

The per-pair terms the margin needs are computed once (one forward pass of the shared MLPs); after
that each step only touches K numbers per user. Steps are damped Gauss-Newton (the Hessian of the
log-likelihood in the margin, sigma(1 - sigma), times the outer product of d m / d theta), with a
backtracking line search per user, so a handful of steps converge. Many users fit together, each
row of the result depending only on that user's comparisons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pluralign.reward.pal_model import PairTerms, PALModel

PRIOR_STRENGTH = 0.5  # precision of the Gaussian prior on a user's logits
MAX_STEPS = 15
GRAD_TOL = 1e-4


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 1 else x


def _objective(model, terms, theta, theta0, user, n_users, strength) -> torch.Tensor:  # (U,)
    nll = F.softplus(-model.margin(theta[user], terms))  # (N,)
    per_user = torch.zeros(n_users, dtype=nll.dtype, device=nll.device).index_add_(0, user, nll)
    return per_user + 0.5 * strength * ((theta - theta0) ** 2).sum(-1)


@torch.no_grad()
def fit_users_from_terms(
    model: PALModel,
    terms: PairTerms,
    user: torch.Tensor,
    n_users: int,
    init_logits: torch.Tensor | None = None,
    prior_logits: torch.Tensor | None = None,
    prior_strength: float = PRIOR_STRENGTH,
    max_steps: int = MAX_STEPS,
) -> torch.Tensor:
    """Fit U users' logits (U, K) from precomputed pair terms; `user` (N,) says whose each pair is."""
    k = model.config.k
    device = terms.pull.device
    theta0 = torch.zeros(k, device=device) if prior_logits is None else prior_logits.to(device).float()
    theta0 = _as_rows(theta0).expand(n_users, k)
    theta = theta0.clone() if init_logits is None else _as_rows(init_logits.to(device).float()).expand(n_users, k).clone()
    eye = torch.eye(k, device=device)
    loss = _objective(model, terms, theta, theta0, user, n_users, prior_strength)
    for _ in range(max_steps):
        w = torch.softmax(theta, -1)[user]  # (N, K)
        margin = model.scorer.margin(terms, w)  # (N,)
        dm_dw = model.scorer.margin_grad(terms, w)  # (N, K)
        dm_dtheta = w * (dm_dw - (w * dm_dw).sum(-1, keepdim=True))  # softmax Jacobian: (N, K)
        p = torch.sigmoid(margin)
        grad = torch.zeros(n_users, k, device=device).index_add_(0, user, -(1 - p)[:, None] * dm_dtheta)
        grad += prior_strength * (theta - theta0)  # (U, K)
        if grad.abs().max() < GRAD_TOL:
            break
        outer = (p * (1 - p))[:, None, None] * dm_dtheta[:, :, None] * dm_dtheta[:, None, :]  # (N, K, K)
        hessian = torch.zeros(n_users, k, k, device=device).index_add_(0, user, outer) + prior_strength * eye
        step = torch.linalg.solve(hessian, grad)  # (U, K)
        slope = (grad * step).sum(-1)  # (U,) decrease predicted per unit step
        size = torch.ones(n_users, device=device)
        accepted = torch.zeros(n_users, dtype=torch.bool, device=device)
        new_theta, new_loss = theta, loss
        for _ in range(10):  # halve each user's step until its loss drops enough
            candidate = theta - size[:, None] * step
            candidate_loss = _objective(model, terms, candidate, theta0, user, n_users, prior_strength)
            ok = ~accepted & (candidate_loss <= loss - 1e-4 * size * slope)
            new_theta = torch.where(ok[:, None], candidate, new_theta)
            new_loss = torch.where(ok, candidate_loss, new_loss)
            accepted |= ok
            if accepted.all():
                break
            size = torch.where(accepted, size, size / 2)
        if not accepted.any():
            break
        theta, loss = new_theta, new_loss
    return theta


@torch.no_grad()
def fit_users(
    model: PALModel,
    prompt: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    user: torch.Tensor,
    n_users: int,
    init_logits: torch.Tensor | None = None,
    prior_logits: torch.Tensor | None = None,
    prior_strength: float = PRIOR_STRENGTH,
    max_steps: int = MAX_STEPS,
) -> torch.Tensor:
    """Fit many users at once: comparisons (N, D) with owner `user` (N,) -> logits (U, K).

    A user without comparisons gets the prior (or `init_logits`)."""
    terms = model.pair_terms(prompt, chosen, rejected)
    return fit_users_from_terms(model, terms, user, n_users, init_logits, prior_logits, prior_strength, max_steps)


def fit_user(
    model: PALModel,
    prompt: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    init_logits: torch.Tensor | None = None,
    prior_logits: torch.Tensor | None = None,
    prior_strength: float = PRIOR_STRENGTH,
    max_steps: int = MAX_STEPS,
) -> torch.Tensor:
    """One user's K logits from their comparisons (N, D) each; shared parameters are only read.

    `prior_logits` is the centre of the prior (pass `UserWeights.prior()`); it defaults to
    `init_logits`, or to uniform weights. Returns (K,)."""
    prompt, chosen, rejected = _as_rows(prompt), _as_rows(chosen), _as_rows(rejected)
    if prior_logits is None:
        prior_logits = init_logits
    user = torch.zeros(prompt.shape[0], dtype=torch.long, device=prompt.device)
    return fit_users(model, prompt, chosen, rejected, user, 1, init_logits, prior_logits, prior_strength, max_steps)[0]


def update_user(
    model: PALModel,
    logits: torch.Tensor,
    prompt: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    stiffness: float = 2.0,
    max_steps: int = 3,
) -> torch.Tensor:
    """Fold one more comparison (or a few) into a user's logits without their history.

    The current logits act as the prior centre with precision `stiffness`: a new comparison moves
    them, but less the stiffer the prior. When the full history is at hand, `fit_user` on all of
    it is exact and still fast; this is the constant-memory update. Returns (K,)."""
    return fit_user(model, prompt, chosen, rejected, init_logits=logits, prior_logits=logits,
                    prior_strength=stiffness, max_steps=max_steps)
