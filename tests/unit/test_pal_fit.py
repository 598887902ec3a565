"""Few-shot fitting touches only a user's K logits, and fits each user from their own comparisons."""

from __future__ import annotations

import pytest
import torch

from pluralign.reward.pal import PALConfig, PALModel, fit_user, fit_users, update_user
from pluralign.reward.pal_fit import fit_users_from_terms

DIM = 8


def comparisons(n: int, direction: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randn(n, DIM, generator=gen)
    a, b = torch.randn(n, DIM, generator=gen), torch.randn(n, DIM, generator=gen)
    a_wins = ((a - b) @ direction > 0)[:, None]
    return prompt, torch.where(a_wins, a, b), torch.where(a_wins, b, a)


def log_likelihood(model, logits, prompt, chosen, rejected) -> float:
    with torch.no_grad():
        return float(torch.log(model.preference_prob(logits, prompt, chosen, rejected)).sum())


@pytest.fixture(params=["a", "b"])
def model(request) -> PALModel:
    torch.manual_seed(0)
    return PALModel(PALConfig(variant=request.param, k=4, input_dim=DIM, latent_dim=6, hidden=16)).eval()


def test_fit_user_moves_only_the_users_weights(model):
    before = {name: t.clone() for name, t in model.state_dict().items()}
    prompt, chosen, rejected = comparisons(20, torch.randn(DIM), seed=1)
    prior = torch.zeros(4)
    logits = fit_user(model, prompt, chosen, rejected, prior_logits=prior)

    assert logits.shape == (4,)
    assert not torch.equal(logits, prior)
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), f"shared parameter {name} changed"
    assert all(p.grad is None for p in model.parameters())
    # The fit explains the user's comparisons better than the prior does.
    assert log_likelihood(model, logits, prompt, chosen, rejected) > log_likelihood(model, prior, prompt, chosen, rejected)


def test_fit_user_reaches_the_optimum_of_its_objective(model):
    prompt, chosen, rejected = comparisons(20, torch.randn(DIM), seed=2)
    logits = fit_user(model, prompt, chosen, rejected, prior_logits=torch.zeros(4), prior_strength=0.5)

    def objective(theta):
        margin = model.margin(theta, model.pair_terms(prompt, chosen, rejected))
        return torch.nn.functional.softplus(-margin).sum() + 0.25 * (theta**2).sum()

    theta = logits.clone().requires_grad_()
    objective(theta).backward()
    assert theta.grad.abs().max() < 1e-2  # stationary: Gauss-Newton converged


def test_users_fitted_together_equal_users_fitted_alone(model):
    pairs = [comparisons(12, torch.randn(DIM, generator=torch.Generator().manual_seed(u)), seed=10 + u) for u in range(3)]
    prompt, chosen, rejected = (torch.cat(parts) for parts in zip(*pairs, strict=True))
    user = torch.arange(3).repeat_interleave(12)
    together = fit_users(model, prompt, chosen, rejected, user, n_users=4)  # user 3 has no comparisons
    for u, (p, c, r) in enumerate(pairs):
        alone = fit_user(model, p, c, r)
        torch.testing.assert_close(together[u], alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(together[3], torch.zeros(4))  # no comparisons: the prior


def test_update_user_moves_towards_the_new_comparison(model):
    prompt, chosen, rejected = comparisons(1, torch.randn(DIM), seed=3)
    logits = torch.zeros(4)
    updated = update_user(model, logits, prompt[0], chosen[0], rejected[0])
    assert updated.shape == (4,)
    assert log_likelihood(model, updated, prompt, chosen, rejected) > log_likelihood(model, logits, prompt, chosen, rejected)
    # A stiffer prior moves less.
    stiff = update_user(model, logits, prompt[0], chosen[0], rejected[0], stiffness=50.0)
    assert (stiff - logits).norm() < (updated - logits).norm()


def test_fitting_with_no_comparisons_returns_the_prior(model):
    prior = torch.tensor([0.5, -0.5, 0.0, 1.0])
    empty = torch.zeros(0, DIM)
    terms = model.pair_terms(empty, empty, empty)
    out = fit_users_from_terms(model, terms, torch.zeros(0, dtype=torch.long), 2, prior_logits=prior)
    assert torch.equal(out, prior.expand(2, 4))
