"""Few-shot fitting of users' K logits with everything shared frozen.

The objective per user is the preference log-likelihood of their comparisons plus a Gaussian prior
on the logits centred on the population prior:

    L(theta) = sum_i softplus(-m_i(softmax(theta))) + prior_strength / 2 * ||theta - theta_0||^2

The per-pair terms the margin needs are computed once (one forward pass of the shared MLPs); after
that each step only touches K numbers per user, so the loop runs on small float64 numpy arrays
(microseconds per operation, where torch spends tens on dispatch). Steps are damped Gauss-Newton:
the curvature sigma(1 - sigma) of the log-likelihood in the margin times the outer product of
d m / d theta, plus the prior's precision, with a backtracking line search per user. A user stops
moving once their next step would lower their objective by less than DECREASE_TOL, so fitting many
users together gives each the result it would get alone.
"""

from __future__ import annotations

import numpy as np
import torch

from pluralign.reward.inputs import comparison_rows, logits_row, one_row, owners, positive, whole
from pluralign.reward.pal_model import PairTerms, PALModel

PRIOR_STRENGTH = 0.5  # precision of the Gaussian prior on a user's logits
MAX_STEPS = 10
DECREASE_TOL = 1e-6  # a user is done when a full step would lower their objective by less than this


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


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
    """Fit U users' logits (U, K) from precomputed pair terms; `user` (N,) says whose each pair is.

    Raises ValueError naming the argument: `user` not N indices in 0 .. n_users - 1, `init_logits`
    or `prior_logits` not K finite numbers, `prior_strength` not a positive number, `n_users` or
    `max_steps` not a whole number >= 0 (0 steps: the prior, or `init_logits`), or terms that are
    not finite (a model whose parameters hold NaN)."""
    whole("fit_users", 0, n_users=n_users, max_steps=max_steps)
    k = model.config.k
    scorer = model.scorer
    prior_strength = positive("prior_strength", prior_strength)
    init_logits = None if init_logits is None else logits_row("init_logits", init_logits, k)
    prior_logits = None if prior_logits is None else logits_row("prior_logits", prior_logits, k)
    terms = terms.numpy()
    user = owners(user, len(terms.pull), n_users).numpy()
    bad = ~np.isfinite(terms.pull).all(-1) | ~np.isfinite(terms.bias)
    if bad.any():
        raise ValueError(f"the pair terms of comparison {int(np.flatnonzero(bad)[0])} are not finite: the model's "
                         "parameters hold NaN or inf")
    owner = np.zeros((n_users, len(user)))  # (U, N) one-hot: sums pairs into their users
    owner[user, np.arange(len(user))] = 1.0

    def as_rows(logits: torch.Tensor | None) -> np.ndarray:
        rows = np.zeros(k) if logits is None else logits.detach().cpu().double().numpy()
        return np.broadcast_to(rows, (n_users, k)).copy()

    theta0 = as_rows(prior_logits)
    theta = as_rows(init_logits) if init_logits is not None else theta0.copy()

    def objective(theta: np.ndarray) -> np.ndarray:  # (U,)
        nll = np.logaddexp(0.0, -scorer.margin(terms, _softmax(theta)[user]))  # (N,)
        return owner @ nll + 0.5 * prior_strength * ((theta - theta0) ** 2).sum(-1)

    loss = objective(theta)
    active = np.ones(n_users, dtype=bool)
    eye = np.eye(k)
    for _ in range(max_steps):
        w = _softmax(theta)[user]  # (N, K)
        dm_dw = scorer.margin_grad(terms, w)  # (N, K)
        dm_dtheta = w * (dm_dw - (w * dm_dw).sum(-1, keepdims=True))  # through the softmax: (N, K)
        p = 1.0 / (1.0 + np.exp(-scorer.margin(terms, w)))  # (N,)
        grad = owner @ (-(1 - p)[:, None] * dm_dtheta) + prior_strength * (theta - theta0)  # (U, K)
        outer = (p * (1 - p))[:, None, None] * dm_dtheta[:, :, None] * dm_dtheta[:, None, :]  # (N, K, K)
        hessian = (owner @ outer.reshape(len(user), k * k)).reshape(n_users, k, k) + prior_strength * eye
        step = np.linalg.solve(hessian, grad[:, :, None])[:, :, 0]  # (U, K)
        slope = (grad * step).sum(-1)  # (U,) twice the decrease a full step predicts
        active &= slope > 2 * DECREASE_TOL
        if not active.any():
            break
        size = np.where(active, 1.0, 0.0)
        pending = active.copy()
        for _ in range(10):  # halve each user's step until its objective drops enough
            candidate = theta - size[:, None] * step
            candidate_loss = objective(candidate)
            ok = pending & (candidate_loss <= loss - 1e-4 * size * slope)
            theta = np.where(ok[:, None], candidate, theta)
            loss = np.where(ok, candidate_loss, loss)
            pending &= ~ok
            if not pending.any():
                break
            size = np.where(pending, size / 2, size)
        active &= ~pending  # no step helped: that user is at its optimum up to rounding
    return torch.from_numpy(theta).float()


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
    """Fit many users at once: comparisons (N, D) with owner `user` (N,) -> logits (U, K) on the CPU.

    Each row depends only on that user's comparisons; a user without any gets the prior (or
    `init_logits`). Embeddings may be tensors or numpy arrays of any real dtype (D = the model's
    input_dim). Raises ValueError naming the argument that is not (N, D), has another N, holds NaN
    or inf, or (`fit_users_from_terms`) a `user`, logits or `prior_strength` that do not fit."""
    whole("fit_users", 0, n_users=n_users, max_steps=max_steps)  # before the forward pass
    device = next(model.parameters()).device
    prompt, chosen, rejected = comparison_rows(model.config.input_dim, device, prompt=prompt, chosen=chosen, rejected=rejected)
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
    """One user's K logits from their comparisons (N, D) each, or one comparison (D,) (each argument read so on its
    own, as `PALModel.reward` reads them); shared
    parameters are only read. Tensors or numpy arrays of any real dtype.

    `prior_logits` is the centre of the prior (pass `UserWeights.prior()`); it defaults to
    `init_logits`, or to uniform weights. Returns (K,) on the CPU. Raises ValueError naming the
    argument (`fit_users`): embeddings not (N, D) alike or not finite, logits not K finite numbers,
    `prior_strength` not positive, `max_steps` not a whole number >= 0. No comparisons (N = 0), or
    `max_steps=0`, give the prior."""
    # each argument read on its own, as `reward` and `preference_prob` read theirs (`prompt`'s shape deciding for all
    # three would refuse a (D,) prompt with (1, D) answers as "(1, 1, D)")
    d = model.config.input_dim
    prompt, chosen, rejected = (one_row(t, d) for t in (prompt, chosen, rejected))
    if prior_logits is None:
        prior_logits = init_logits
    user = torch.zeros(np.shape(prompt)[0] if np.ndim(prompt) else 0, dtype=torch.long)
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
    it is exact and still fast; this is the constant-memory update. Returns (K,). Raises ValueError
    naming `logits` or `stiffness` when they are not K finite numbers or a positive number, and as
    `fit_user` does on the comparisons and `max_steps`."""
    logits = logits_row("logits", logits, model.config.k)
    stiffness = positive("stiffness", stiffness)
    return fit_user(model, prompt, chosen, rejected, init_logits=logits, prior_logits=logits,
                    prior_strength=stiffness, max_steps=max_steps)
