"""left30: PAL as a library agrees with the other preference models.

- `PALPreference.prob_seen` scored a user it was never trained on with the population prior, silently,
  where `PerUserBT` and `EMMixture` refuse naming the user (a typo in a user id gave plausible numbers).
- `fit_user` takes one comparison as (D,) embeddings, but `PALModel.reward` and `preference_prob`
  refused a (D,) prompt and response: now one row, (1, D), each, as `fit_user` reads them. (The
  baselines' `SingleBT.reward` keeps refusing (D,): test_library_inputs pins it, and they have no
  `fit_user` to agree with.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.reward.features import PairBatch
from pluralign.reward.pal import PALConfig, PALPreference, PALTrainConfig, fit_user
from tests.unit.test_library_inputs import DIM, pairs


@pytest.fixture(scope="module")
def pal() -> PALPreference:
    torch.manual_seed(0)
    model = PALPreference(PALConfig(variant="a", k=2, latent_dim=4, hidden=8), PALTrainConfig(max_epochs=2, batch_size=32))
    model.fit(pairs(0), pairs(1))
    return model


def test_prob_seen_refuses_a_user_pal_was_not_trained_on(pal):
    test = pairs(2)
    expected = pal.prob_seen(test)
    stranger = PairBatch(test.prompt[:2], test.chosen[:2], test.rejected[:2], torch.tensor([0, 1]), ["u0", "zoe"], ["even", "even"])
    with pytest.raises(ValueError, match=r"'zoe' is not one of its .* training users; score new users with prob_new_users"):
        pal.prob_seen(stranger)
    # a user listed without pairs is no stranger; known users are still scored by name
    listed = PairBatch(test.prompt[:1], test.chosen[:1], test.rejected[:1], torch.tensor([0]), ["u0", "zoe"], ["even"])
    assert np.allclose(pal.prob_seen(listed), expected[:1], atol=1e-6)


def test_one_comparison_as_d_vectors_is_read_as_one_row_everywhere(pal):
    model, weights = pal.model, pal.user_weights
    test = pairs(2)
    p, c, r = test.prompt[0], test.chosen[0], test.rejected[0]  # (D,) each, as fit_user takes them
    logits = fit_user(model, p, c, r, prior_logits=weights.prior())
    assert torch.allclose(model.reward(logits, p, c), model.reward(logits, p[None], c[None]))  # (1,)
    assert model.reward(logits, p.numpy(), c.numpy()).shape == (1,)
    assert torch.allclose(model.preference_prob(logits, p, c, r), model.preference_prob(logits, p[None], c[None], r[None]))
    with pytest.raises(ValueError, match=r"`response` has 3 rows, `prompt` has 1"):  # one row is one row: not broadcast
        model.reward(logits, p, test.chosen[:3])
    with pytest.raises(ValueError, match=r"`prompt` has shape \(3,\)"):  # another width is still named
        model.reward(logits, p[:3], c[:3])
    assert DIM > 3
