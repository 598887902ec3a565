"""EM over BT heads: monotone objective, recovery of opposed groups, new users, the artifact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from pluralign.reward.em import EMConfig, EMMixture, fit_em, pair_features
from pluralign.reward.features import PairBatch
from pluralign.reward.registry import build_model


def opposed_population(n_users=24, pairs_per_user=30, dim=16, seed=0, groups=2, noise=1.0, traits_seed=0):
    """Persona-like users: group g prefers the statement closer to its own ideal direction.

    Groups 0 and 1 hold opposite stances on one trait (ideal = +t and -t); labels are drawn from a BT
    model with that ideal, so some comparisons contradict the user's group."""
    trait = torch.nn.functional.normalize(torch.randn(2, dim, generator=torch.Generator().manual_seed(traits_seed)), dim=1)
    g = torch.Generator().manual_seed(seed)
    ideals = [trait[0], -trait[0], trait[1], -trait[1]][:groups]
    prompt_vec = torch.nn.functional.normalize(torch.ones(dim), dim=0)
    truth, rows = [], []
    for u in range(n_users):
        group = u % groups
        truth.append(group)
        a = torch.randn(pairs_per_user, dim, generator=g)
        b = torch.randn(pairs_per_user, dim, generator=g)
        p_a = torch.sigmoid((a - b) @ ideals[group] * 3.0 / noise)
        a_wins = torch.rand(pairs_per_user, generator=g) < p_a
        chosen = torch.where(a_wins[:, None], a, b)
        rejected = torch.where(a_wins[:, None], b, a)
        rows.append((chosen, rejected, torch.full((pairs_per_user,), u)))
    chosen = torch.cat([r[0] for r in rows])
    rejected = torch.cat([r[1] for r in rows])
    user = torch.cat([r[2] for r in rows])
    batch = PairBatch(
        prompt=prompt_vec.expand(len(user), dim).clone(), chosen=chosen, rejected=rejected, user=user,
        users=[f"u{i:02d}" for i in range(n_users)], group=[f"g{truth[i]}" for i in user.tolist()],
    )
    return batch, truth


@pytest.mark.parametrize("assignment", ["hard", "soft"])
def test_log_likelihood_never_decreases(assignment):
    batch, _ = opposed_population(n_users=20, pairs_per_user=12, noise=3.0, seed=1)
    config = EMConfig(k=3, assignment=assignment, init="random", restarts=2, max_iter=8, lbfgs_iter=5)
    fit = fit_em(pair_features(batch), batch.user, len(batch.users), config)
    assert len(fit.restarts) == 2
    assert any(len(c) > 2 for c in fit.restarts), "EM stopped at once everywhere: nothing was tested"
    for curve in fit.restarts:
        steps = np.diff(curve)
        assert (steps >= -1e-9 * np.abs(curve[:-1])).all(), f"log-likelihood decreased: {curve}"
    assert fit.log_likelihood[-1] == max(c[-1] for c in fit.restarts)


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_em_separates_two_opposed_groups(init):
    batch, truth = opposed_population(seed=2)
    model = EMMixture(EMConfig(k=2, init=init, restarts=4))
    model.fit(batch, batch.select([]))
    clusters = model.user_clusters()
    assert adjusted_rand_score(truth, [clusters[u] for u in batch.users]) == 1.0
    # each user's pairs are explained by its own group's head: far better than chance
    assert (model.prob_seen(batch) > 0.5).mean() > 0.85


def test_new_user_is_assigned_to_the_head_that_explains_its_support():
    batch, truth = opposed_population(seed=3)
    model = EMMixture(EMConfig(k=2))
    model.fit(batch, batch.select([]))
    fresh, fresh_truth = opposed_population(n_users=6, pairs_per_user=40, seed=4)
    support = fresh.select(np.concatenate([np.arange(u * 40, u * 40 + 10) for u in range(6)]))
    query = fresh.select(np.concatenate([np.arange(u * 40 + 10, u * 40 + 40) for u in range(6)]))
    post = model.posterior(support).argmax(1).tolist()  # from 10 support pairs each
    clusters = model.user_clusters()
    head_of_group = {truth[i]: clusters[u] for i, u in enumerate(batch.users)}
    assert post == [head_of_group[g] for g in fresh_truth]
    assert (model.prob_new_users(support, query) > 0.5).mean() > 0.85


def test_registry_builds_em_with_k():
    model = build_model("em", k=3, seed=1)
    assert model.name == "em" and model.config.k == 3 and model.config.seed == 1
    assert build_model("em").name == "em"  # without k: chosen from the data (tests/unit/test_model_selection.py)


def test_artifact_round_trips_and_refuses_another_encoder(tmp_path):
    batch, _ = opposed_population(seed=5)
    model = EMMixture(EMConfig(k=2, restarts=2))
    model.fit(batch, batch.select([]))
    model.save(tmp_path / "em", encoder_id="enc-A")
    loaded = EMMixture.load(tmp_path / "em", encoder_id="enc-A", dim=16)
    assert loaded.user_clusters() == model.user_clusters()
    np.testing.assert_allclose(loaded.prob_seen(batch), model.prob_seen(batch), atol=1e-5)
    with pytest.raises(ValueError, match="enc-B"):
        EMMixture.load(tmp_path / "em", encoder_id="enc-B")
    with pytest.raises(ValueError, match="16-d"):
        EMMixture.load(tmp_path / "em", encoder_id="enc-A", dim=384)


def test_mixing_weights_are_each_heads_share_of_the_users():
    """pi_k is a distribution (the M-step's exact maximizer: each head's share of the responsibility
    mass), not the mass itself: `mixing_weights` sums to 1 and matches the clusters' sizes."""
    batch, _ = opposed_population(n_users=8, pairs_per_user=12, seed=6)
    model = EMMixture(EMConfig(k=2, restarts=1, max_iter=10, lbfgs_iter=10))
    model.fit(batch, batch.select([]))
    weights = model.mixing_weights()
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1.0)
    clusters = model.user_clusters()
    shares = np.bincount([clusters[u] for u in batch.users], minlength=2) / len(batch.users)
    np.testing.assert_allclose(weights, shares, atol=0.02)


def test_a_new_users_posterior_is_a_distribution_over_heads_and_the_mixing_weights_without_support():
    """Soft EM: each new user's posterior (`posterior`) sums to 1 over the heads; a user with no
    support pairs gets the mixing weights themselves."""
    batch, _ = opposed_population(n_users=8, pairs_per_user=12, seed=7)
    model = EMMixture(EMConfig(k=2, assignment="soft", restarts=1, max_iter=10, lbfgs_iter=10))
    model.fit(batch, batch.select([]))
    fresh, _ = opposed_population(n_users=3, pairs_per_user=4, seed=8)
    support = fresh.select(np.arange(8))  # users 0 and 1 have 4 pairs each, user 2 none
    posterior = model.posterior(support)  # (3, K)
    assert posterior.shape == (3, 2)
    np.testing.assert_allclose(posterior.sum(1).numpy(), np.ones(3), atol=1e-9)
    np.testing.assert_allclose(posterior[2].numpy(), model.mixing_weights(), atol=1e-9)
