"""PAL trained for real on tiny synthetic data: it separates opposed groups and fits new users."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from pluralign.reward.pal import (
    PALConfig,
    PALPreference,
    PALTrainConfig,
    cluster_points,
    fit_user,
    train_pal,
    user_points,
)
from tests.pal_synthetic import DIM, opposed_groups, split

TINY = dict(input_dim=DIM, latent_dim=8, hidden=32)
FAST = PALTrainConfig(batch_size=64, max_epochs=40, patience=8, lr_shared=3e-3, lr_user=0.1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def accuracy(prob: np.ndarray | torch.Tensor) -> float:
    return float((torch.as_tensor(prob) > 0.5).float().mean())


@pytest.fixture(scope="module")
def trained_a():
    """PAL-A (k=2) trained once on the opposed groups for the module: the separation test's case `a` and the newcomers'
    test trained the same model on the same split each (one training, ~0.8 CPU-s, saved). Neither changes it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `one_torch_thread`, which is function-scoped
    try:
        train, val, test = split(opposed_groups())
        result = train_pal(train, val, PALConfig(variant="a", k=2, **TINY), FAST)
    finally:
        torch.set_num_threads(threads)
    return train, val, test, result


@pytest.mark.parametrize("variant", ["a", "b"])
def test_trained_model_separates_two_opposed_groups(variant, request):
    if variant == "a":
        train, val, test, result = request.getfixturevalue("trained_a")
    else:
        train, val, test = split(opposed_groups())
        result = train_pal(train, val, PALConfig(variant=variant, k=2, **TINY), FAST)
    model, weights = result.model, result.user_weights

    logits, is_prior = weights.stack(test.users)
    assert not is_prior.any()
    with torch.no_grad():
        prob = model.preference_prob(logits[test.user], test.prompt, test.chosen, test.rejected)
    for g in ("g0", "g1"):
        rows = [i for i, label in enumerate(test.group) if label == g]
        assert accuracy(prob[rows]) > 0.8, f"group {g} test accuracy {accuracy(prob[rows]):.2f}"
    # One reward for everyone would score ~0.5 on opposed groups; the users' points tell them apart.
    labels = cluster_points(user_points(model, logits), max_clusters=2)
    truth = [u.split("-")[1] for u in test.users]
    assert adjusted_rand_score(truth, labels) == 1.0
    assert result.metrics["val_acc"] > 0.85


def test_new_users_fit_from_few_comparisons_beat_the_prior(trained_a):
    result = trained_a[3]
    model, prior = result.model, result.user_weights.prior()
    newcomers = opposed_groups(users_per_group=3, pairs_per_user=30, seed=7, prefix="new")
    for u in range(len(newcomers.users)):
        rows = (newcomers.user == u).nonzero().squeeze(-1)
        support, query = rows[:10], rows[10:]
        logits = fit_user(model, newcomers.prompt[support], newcomers.chosen[support], newcomers.rejected[support],
                          prior_logits=prior)
        with torch.no_grad():
            fitted = model.preference_prob(logits, newcomers.prompt[query], newcomers.chosen[query], newcomers.rejected[query])
        assert accuracy(fitted) > 0.8, f"{newcomers.users[u]}: {accuracy(fitted):.2f} after 10 comparisons"


def test_preference_model_adapter_runs_the_eval_contract():
    train, val, test = split(opposed_groups())
    model = PALPreference(PALConfig(variant="a", k=3, **TINY), FAST)
    metrics = model.fit(train, val)
    assert metrics["pairs_per_second"] > 0 and metrics["best_epoch"] >= 1
    assert accuracy(model.prob_seen(test)) > 0.85
    newcomers = opposed_groups(users_per_group=3, pairs_per_user=30, seed=3, prefix="new")
    support, _, query = split(newcomers, fractions=(0.34, 0.0))
    assert accuracy(model.prob_new_users(support, query)) > 0.8
    clusters = model.user_clusters()
    assert set(clusters) == set(train.users)
    assert adjusted_rand_score([u.split("-")[1] for u in clusters], list(clusters.values())) == 1.0


def test_training_is_deterministic_under_a_seed():
    train, val, _ = split(opposed_groups(users_per_group=4, pairs_per_user=20))
    config = PALTrainConfig(batch_size=64, max_epochs=3, patience=3, seed=5)
    first = train_pal(train, val, PALConfig(variant="b", k=2, **TINY), config)
    second = train_pal(train, val, PALConfig(variant="b", k=2, **TINY), config)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(first.user_weights.stack(train.users)[0], second.user_weights.stack(train.users)[0])
