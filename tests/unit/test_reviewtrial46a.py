"""Session reviewtrial46a: what a hostile review of trial46a's load-time checks found."""

from __future__ import annotations

import pytest
import torch

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize(("k", "posterior"), [
    (1, [[1.0], [1.0]]),  # K=1: every user's one weight
    (3, [[1 / 3] * 3, [0.5, 0.25, 0.25]]),  # saved as 0.333333 each: they sum to 0.999999
    (7, [[1 / 7] * 7, [0.9999996] + [0.4e-7] * 6]),  # 0.142857 x 7 = 0.999999; weights under 5e-7 saved as 0.0
])
def test_an_em_artifact_of_soft_posteriors_loads_as_it_was_saved(tmp_path, k, posterior):
    """`EMMixture.save` rounds each weight to 6 decimals, so a soft posterior comes back summing to 1 only within
    K x 5e-7: trial46a's check on load (K x POSTERIOR_ROUNDING) must take what save wrote. No test saved a posterior
    that rounding moves (K=2 halves are exact): the tolerance could be 0 and every test passed, while such an
    artifact (`train em --assignment soft`) was refused ("posterior [0.333333, ...] is not a distribution")."""
    from pluralign.reward.em import EMConfig, EMMixture

    weights = torch.tensor(posterior, dtype=torch.float64)  # (U, K)
    model = EMMixture.from_heads(torch.randn(k, 8), torch.log(torch.full((k,), 1 / k)), EMConfig(k=k, assignment="soft"))
    model.fit_result.responsibilities = weights
    model.users = ["u0", "u1"]
    loaded = EMMixture.load(model.save(tmp_path / "em", MINILM_ID), MINILM_ID, device="cpu")
    assert loaded.users == ["u0", "u1"]
    assert torch.allclose(loaded.fit_result.responsibilities, weights, atol=5e-7, rtol=0)
