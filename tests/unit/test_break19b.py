"""A hostile pass on the tenant's pooled prior (`pluralign.user.pooled`, its settings)."""

from __future__ import annotations

import pytest

from service.settings import Settings


@pytest.mark.parametrize(("env", "named"), [
    ({"PLURALIGN_POOLED_PRIOR_USERS": "1"}, "pooled_prior_users"),
    ({"PLURALIGN_POOLED_PRIOR_USERS": "-1"}, "pooled_prior_users"),
    # above the 128 users a prior is estimated from it could never be reached: silently off
    ({"PLURALIGN_POOLED_PRIOR_USERS": "129"}, "pooled_prior_users"),
    ({"PLURALIGN_POOLED_PRIOR_USERS": "99999999999999999999999"}, "pooled_prior_users"),
    ({"PLURALIGN_POOLED_PRIOR_SPREAD": "nan"}, "pooled_prior_spread"),
    ({"PLURALIGN_POOLED_PRIOR_SPREAD": "-1"}, "pooled_prior_spread"),
    # infinite: every pooled fit a LinAlgError (singular matrix); 1e200: NaN standard deviations
    ({"PLURALIGN_POOLED_PRIOR_SPREAD": "inf"}, "pooled_prior_spread"),
    ({"PLURALIGN_POOLED_PRIOR_SPREAD": "1e200"}, "pooled_prior_spread"),
    # 0: a direction every user's data left alone gets sd 1e-3 (the ridge), closed to every new user
    ({"PLURALIGN_POOLED_PRIOR_SPREAD": "0"}, "pooled_prior_spread"),
    ({"PLURALIGN_POOLED_PRIOR_TTL_S": "0"}, "pooled_prior_ttl_s"),
    ({"PLURALIGN_POOLED_PRIOR_TTL_S": "inf"}, "pooled_prior_ttl_s"),
    ({"PLURALIGN_POOLED_PRIOR_TTL_S": "nan"}, "pooled_prior_ttl_s"),
])
def test_a_bad_pooled_prior_setting_is_a_startup_error_naming_it_alone(env, named):
    with pytest.raises(ValueError) as err:
        Settings.load(env)
    message = str(err.value)
    assert named in message and "got" in message
    others = {"pooled_prior_users", "pooled_prior_spread", "pooled_prior_ttl_s"} - {named}
    assert not any(other in message for other in others), message  # not the setting next to it


def test_good_pooled_prior_settings_load():
    s = Settings.load({"PLURALIGN_POOLED_PRIOR_USERS": "128", "PLURALIGN_POOLED_PRIOR_SPREAD": "1e-3",
                       "PLURALIGN_POOLED_PRIOR_TTL_S": "3600"})
    assert (s.pooled_prior_users, s.pooled_prior_spread, s.pooled_prior_ttl_s) == (128, 1e-3, 3600)
    assert Settings.load({"PLURALIGN_POOLED_PRIOR_SPREAD": "100"}).pooled_prior_spread == 100


def test_the_library_refuses_an_infinite_spread():
    """`pooled_prior(spread=inf)` was taken: its covariance was infinite, and every fit under it a
    LinAlgError (singular matrix) far from the call that caused it."""
    import numpy as np

    from pluralign.user import UserModel
    from pluralign.user.pooled import pooled_prior
    from tests.unit.test_pooled import _users
    from tests.unit.test_user_model import _population

    um = UserModel(_population(), population="tiny")
    states = _users(um, 3)
    with pytest.raises(ValueError, match="spread"):
        pooled_prior(states, um.names, spread=float("inf"))
    assert np.isfinite(pooled_prior(states, um.names, spread=0.0).cov).all()  # the library still allows 0 (pure EB)
