"""The per-user residual: exact Laplace fit, and a preference outside every prototype is learned."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from pluralign.reward.pal_model import PALConfig, PALModel
from pluralign.user import FEATURE_NAMES, ResidualPrior, UserModel, UserState, fit_posterior, response_features


def test_laplace_mode_and_covariance_match_a_reference_optimizer():
    rng = np.random.default_rng(0)
    design = rng.normal(size=(40, 5))
    design *= np.sign(design @ np.array([1.0, -2.0, 0.5, 0.0, 1.0]))[:, None]  # mostly consistent choices
    mean0, prec = np.array([1.0, 0, 0, 0, 0]), np.array([4.0, 1, 1, 2, 1])

    def neg_log_post(b):
        return np.logaddexp(0, -(design @ b)).sum() + 0.5 * ((b - mean0) ** 2 * prec).sum()

    ref = minimize(neg_log_post, mean0, method="BFGS", options={"gtol": 1e-10}).x
    mode, cov = fit_posterior(design, mean0, prec)
    assert mode == pytest.approx(ref, abs=1e-5)
    p = 1 / (1 + np.exp(-(design @ mode)))
    assert np.linalg.inv(cov) == pytest.approx((design.T * (p * (1 - p))) @ design + np.diag(prec), rel=1e-8)
    # no data: the prior itself
    mode, cov = fit_posterior(np.zeros((0, 5)), mean0, prec)
    assert mode == pytest.approx(mean0) and np.diag(cov) == pytest.approx(1 / prec)


def test_a_full_prior_precision_is_fitted_like_a_reference_optimizer():
    """A (D, D) prior precision (a population's spread, correlated across coordinates)."""
    rng = np.random.default_rng(1)
    design = rng.normal(size=(30, 4))
    design *= np.sign(design @ np.array([1.0, -1.0, 0.5, 0.0]))[:, None]
    a = rng.normal(size=(4, 4))
    mean0, prec = np.array([0.5, 0, 0, 0]), a @ a.T + 0.5 * np.eye(4)

    def neg_log_post(b):
        d = b - mean0
        return np.logaddexp(0, -(design @ b)).sum() + 0.5 * d @ prec @ d

    ref = minimize(neg_log_post, mean0, method="BFGS", options={"gtol": 1e-10}).x
    mode, cov = fit_posterior(design, mean0, prec)
    assert mode == pytest.approx(ref, abs=1e-5)
    p = 1 / (1 + np.exp(-(design @ mode)))
    assert np.linalg.inv(cov) == pytest.approx((design.T * (p * (1 - p))) @ design + prec, rel=1e-8)
    diagonal = np.array([4.0, 1, 1, 2])  # a diagonal matrix is the (D,) form
    assert fit_posterior(design, mean0, np.diag(diagonal))[0] == pytest.approx(fit_posterior(design, mean0, diagonal)[0])


def test_named_features_read_length_lists_and_register():
    short, long_, listed = "Yes.", "Well, there are many things one could say about this topic at length.", "- a\n- b\n- c"
    f = dict(zip(FEATURE_NAMES, response_features([short, long_, listed]).T, strict=True))
    assert f["length"][1] > f["length"][0]
    assert f["list_items"][1] == 0.0 < f["list_items"][2]
    two, five = response_features(["Ideas:\n- a\n- b", "Ideas:\n- a\n- b\n- c\n- d\n- e"])[:, FEATURE_NAMES.index("list_items")]
    aff = response_features(["Yes. It is.", "Nope, not really!", "Sure thing! Here are ideas:", "Oh yes, for sure!"])
    assert list(aff[:, FEATURE_NAMES.index("affirmation")]) == [1.0, -1.0, 0.0, 1.0]
    assert 0 < two < five  # a longer list is more of a list: the count, not the share of lines, is the feature
    casual, formal = response_features(["Hey, you'll love it! It's great!", "The committee recommends a comprehensive evaluation."])
    assert casual[FEATURE_NAMES.index("contractions")] > formal[FEATURE_NAMES.index("contractions")]
    assert casual[FEATURE_NAMES.index("exclamations")] > 0 == formal[FEATURE_NAMES.index("exclamations")]


def _population(seed: int = 0):
    torch.manual_seed(seed)
    return PALModel(PALConfig(variant="a", k=3, input_dim=16, latent_dim=8, hidden=16))


def _comparisons(rng, n):
    """Two answers per prompt with random embeddings and random lengths; the user likes shorter ones."""
    words = rng.integers(1, 60, size=(n, 2))
    texts = [[" ".join(["word"] * int(k)) + "." for k in row] for row in words]
    prompt, a, b = (rng.normal(size=(n, 16)).astype(np.float32) for _ in range(3))
    first_wins = words[:, 0] < words[:, 1]
    chosen = np.where(first_wins[:, None], a, b)
    rejected = np.where(first_wins[:, None], b, a)
    chosen_t = [t[0] if w else t[1] for t, w in zip(texts, first_wins, strict=True)]
    rejected_t = [t[1] if w else t[0] for t, w in zip(texts, first_wins, strict=True)]
    return prompt, chosen, rejected, chosen_t, rejected_t


def test_a_preference_no_prototype_covers_is_learned_by_the_residual_not_by_the_prototypes():
    """Length is invisible to the embeddings here, so no mix of prototypes can prefer short answers;
    the residual learns it from 30 comparisons (misses are mostly pairs of nearly equal length)."""
    um = UserModel(_population(), population="tiny", prior=ResidualPrior(feature_scale=1.0))
    rng = np.random.default_rng(1)
    train, test = _comparisons(rng, 30), _comparisons(rng, 200)
    prior = np.zeros(3)
    logits = um.fit_logits(*train[:3], prior_logits=prior)
    state = um.fit(logits, *train)

    def accuracy(state):
        p, c, r, ct, rt = test
        won = um.score(logits, state, um.candidates(p, c, ct))
        lost = um.score(logits, state, um.candidates(p, r, rt))
        return float((won > lost).mean())

    prototypes_only = accuracy(None)
    learned = accuracy(state)
    assert prototypes_only < 0.65  # chance, whatever the logits
    assert learned > 0.85 and learned - prototypes_only > 0.3
    weight, sd = state.coefficient("length")
    assert weight < -3 * sd  # "prefers shorter answers", confidently
    # the state round-trips through its stored form and says what it belongs to
    again = UserState.decode(state.encode())
    assert again == state and um.fits(again)
    assert not UserModel(_population(), population="other", prior=um.prior).fits(again)


def test_confidence_grows_with_more_comparisons():
    """The posterior standard deviation is kept with the weights: with more consistent comparisons
    the preference's sign becomes more certain (mean / sd grows)."""
    um = UserModel(_population(), population="tiny", prior=ResidualPrior(feature_scale=1.0))
    rng = np.random.default_rng(2)
    few, many = _comparisons(rng, 5), _comparisons(rng, 80)
    logits = np.zeros(3)
    mean_few, sd_few = um.fit(logits, *few).coefficient("length")
    mean_many, sd_many = um.fit(logits, *many).coefficient("length")
    assert sd_many < sd_few and -mean_many / sd_many > 2 * (-mean_few / sd_few)


@pytest.mark.parametrize("variant", ["a", "b"])
def test_one_pass_refit_equals_logits_then_residual(variant):
    torch.manual_seed(0)
    um = UserModel(PALModel(PALConfig(variant=variant, k=3, input_dim=16, latent_dim=8, hidden=16)), population="tiny")
    p, c, r, ct, rt = _comparisons(np.random.default_rng(3), 25)
    prior = np.array([0.2, -0.1, 0.0])
    logits, state = um.fit_user(p, c, r, ct, rt, prior_logits=prior)
    assert logits == pytest.approx(um.fit_logits(p, c, r, prior_logits=prior), abs=1e-5)
    assert state.mean == pytest.approx(um.fit(logits, p, c, r, ct, rt).mean, abs=1e-4)


def test_a_state_fitted_with_stated_preferences_holds_what_the_comparisons_alone_say():
    """The summary's `from_comparisons` is fitted with the state (a profile read fits nothing): it
    equals the same comparisons' fit without the stated prior, and a state lacking it does not fit."""
    um = UserModel(_population(), population="tiny", prior=ResidualPrior(feature_scale=1.0))
    train = _comparisons(np.random.default_rng(2), 30)  # the user likes shorter answers
    _, stated = um.fit_user(*train, prior_logits=np.zeros(3), stated={"length": 1})  # ... but said "longer"
    _, alone = um.fit_user(*train, prior_logits=np.zeros(3))
    assert set(stated.from_comparisons) == {"length"} and alone.from_comparisons == {}
    np.testing.assert_allclose(stated.from_comparisons["length"], alone.coefficient("length"), rtol=1e-9)
    assert stated.coefficient("length")[0] > alone.coefficient("length")[0]  # the stated prior pulls it up
    assert um.fits(stated, {"length": 1}) and um.fits(alone)
    older = UserState(**{**{f: getattr(stated, f) for f in stated.__struct_fields__}, "from_comparisons": {}})
    assert not um.fits(older, {"length": 1})
    _, no_comparisons = um.fit_user(*(x[:0] for x in train), prior_logits=np.zeros(3), stated={"length": 1})
    assert no_comparisons.from_comparisons == {} and um.fits(no_comparisons, {"length": 1})


def test_a_stated_preference_is_the_prior_a_user_without_comparisons_starts_from():
    """"More" or "less" of a feature sets its coefficient's prior to +-`stated_weight` with sd
    `stated_scale` (ResidualPrior); the features not stated keep the wide default around 0."""
    prior = ResidualPrior(stated_weight=1.5, stated_scale=0.5, feature_scale=5.0)
    um = UserModel(_population(), population="tiny", prior=prior)
    empty = [x[:0] for x in _comparisons(np.random.default_rng(2), 1)]
    _, state = um.fit_user(*empty, prior_logits=np.zeros(3), stated={"length": 1, "list_items": -1})
    assert state.n == 0 and state.stated == {"length": 1, "list_items": -1}
    assert state.coefficient("length") == pytest.approx((1.5, 0.5))
    assert state.coefficient("list_items") == pytest.approx((-1.5, 0.5))
    unstated = next(name for name in FEATURE_NAMES if name not in ("length", "list_items"))
    assert state.coefficient(unstated) == pytest.approx((0.0, 5.0))



def test_without_a_state_the_score_is_the_population_reward_at_the_users_logits():
    """A user with logits but no residual yet (`state` None) is scored by PAL's reward at their mixture
    weights softmax(logits): the same ranking, differing from PALModel.reward by one constant per prompt."""
    model = _population()
    um = UserModel(model, population="tiny")
    rng = np.random.default_rng(4)
    prompt, response = rng.normal(size=16).astype(np.float32), rng.normal(size=(5, 16)).astype(np.float32)
    texts = [" ".join(["word"] * n) + "." for n in (3, 8, 1, 20, 5)]
    logits = np.array([2.0, -1.0, 0.5])
    scores = um.score(logits, None, um.candidates(prompt, response, texts))  # (5,)
    with torch.no_grad():
        reward = model.reward(torch.tensor(logits, dtype=torch.float32), torch.from_numpy(np.tile(prompt, (5, 1))),
                              torch.from_numpy(response)).double().numpy()
    assert np.ptp(scores - reward) < 1e-4 * np.ptp(reward)

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_stated_preference_holds_against_a_few_contrary_comparisons_and_turns_after_thirty(seed):
    """The default prior's strength (ResidualPrior.stated_scale): a user who said "longer" but picks
    the shorter answer keeps a positive length weight after 3 such comparisons; 30 turn it."""
    um = UserModel(_population(), population="tiny")
    weights = {}
    for n in (3, 30):
        train = _comparisons(np.random.default_rng(seed), n)  # the user likes shorter answers
        weights[n] = um.fit_user(*train, prior_logits=np.zeros(3), stated={"length": 1})[1].coefficient("length")[0]
    assert weights[3] > 0.5 and weights[30] < 0
