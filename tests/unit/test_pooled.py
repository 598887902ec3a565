"""The empirical-Bayes pooled prior (`pluralign.user.pooled`) and a user model fitted under it."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.user import UserModel
from pluralign.user.pooled import RIDGE, pooled_prior
from tests.unit.test_user_model import _comparisons, _population


def _users(um, n_users: int, seed: int = 0):
    """`n_users` fitted users: half like shorter answers (the `_comparisons` rule), half longer."""
    rng = np.random.default_rng(seed)
    states = []
    for u in range(n_users):
        p, c, r, ct, rt = _comparisons(rng, 12)
        if u % 2:
            c, r, ct, rt = r, c, rt, ct
        states.append(um.fit_user(p, c, r, ct, rt, np.zeros(3))[1])
    return states


def test_the_prior_is_the_users_mean_and_their_spread_plus_room_for_what_each_left_open():
    um = UserModel(_population(), population="tiny")
    states = _users(um, 6)
    prior = pooled_prior(states, um.names, spread=0.2)
    means = np.stack([s.mean_array() for s in states])
    variances = np.stack([np.diag(s.cov_array()) for s in states])
    assert prior.users == 6 and prior.mean == pytest.approx(means.mean(0))
    assert prior.cov == pytest.approx(np.cov(means.T) + np.diag(0.2 * variances.mean(0) + RIDGE))
    length = um.names.index("length")
    # users split on length: the prior is wide there, and narrow where nobody's answers differed
    assert prior.cov[length, length] > 5 * prior.cov[um.names.index("exclamations"), um.names.index("exclamations")]
    with pytest.raises(ValueError, match="at least 2"):
        pooled_prior(states[:1], um.names)
    with pytest.raises(ValueError, match="same coefficients"):
        pooled_prior(states, [*um.names[:-1], "other"])
    with pytest.raises(ValueError, match="spread"):
        pooled_prior(states, um.names, spread=float("nan"))


def test_a_user_fitted_under_it_keeps_the_fit_under_the_models_prior_which_later_priors_read():
    """A refit under the pooled prior keeps the posterior under the model's own prior beside it, so a
    prior estimated from users fitted under an earlier one does not narrow with each refit."""
    um = UserModel(_population(), population="tiny")
    states = _users(um, 6)
    prior = pooled_prior(states, um.names)
    p, c, r, ct, rt = _comparisons(np.random.default_rng(9), 3)
    own = um.fit_user(p, c, r, ct, rt, np.zeros(3))[1]
    pooled = um.fit_user(p, c, r, ct, rt, np.zeros(3), pooled=prior)[1]
    assert pooled.pooled_users == 6 and own.pooled_users == 0 and own.unpooled_mean == []
    assert pooled.unpooled_mean == pytest.approx(own.mean) and pooled.unpooled_var == pytest.approx(np.diag(own.cov_array()))
    assert pooled.mean_array() != pytest.approx(own.mean_array())
    refitted = [um.fit_user(*_comparisons(np.random.default_rng(u), 12), np.zeros(3), pooled=prior)[1] for u in range(6)]
    again = pooled_prior(refitted, um.names)
    direct = pooled_prior([um.fit_user(*_comparisons(np.random.default_rng(u), 12), np.zeros(3))[1] for u in range(6)], um.names)
    assert again.cov == pytest.approx(direct.cov)  # read through the unpooled fits: the same as from users fitted without it


def test_stated_preferences_sit_on_top_of_the_pooled_prior():
    um = UserModel(_population(), population="tiny")
    prior = pooled_prior(_users(um, 6), um.names)
    mean, precision = um.prior_for({"list_items": -1}, prior)
    cov = np.linalg.inv(precision)
    i = um.names.index("list_items")
    assert mean[i] == pytest.approx(-um.prior.stated_weight) and cov[i, i] == pytest.approx(um.prior.stated_scale**2)
    assert np.delete(cov[i], i) == pytest.approx(0.0, abs=1e-9)  # uncorrelated with the rest
    rest = [j for j in range(um.dim) if j != i]
    assert mean[rest] == pytest.approx(prior.mean[rest])
    new_mean, new_cov = um.posterior(None, {"list_items": -1}, prior)
    assert new_mean == pytest.approx(mean) and new_cov == pytest.approx(cov)
    with pytest.raises(ValueError, match="other coefficients"):
        UserModel(_population(), population="tiny", prior=um.prior).prior_for(None, type(prior)(
            names=("x",), mean=np.zeros(1), cov=np.eye(1), users=2))
