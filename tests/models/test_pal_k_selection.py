"""PAL chooses its number of prototypes from held-out likelihood on tiny populations with known groups."""

from __future__ import annotations

import pytest
from sklearn.metrics import adjusted_rand_score

from pluralign.reward.model_selection import KSearch, KSelected
from pluralign.reward.pal import PALConfig, PALPreference, PALTrainConfig
from tests.unit.test_em import opposed_population
from tests.unit.test_model_selection import _held_out

FAST = PALTrainConfig(batch_size=64, max_epochs=40, patience=8, lr_shared=3e-3, lr_user=0.1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("variant", "groups"),
    # the default suite runs one case, the cheapest (both variants run the same search: `KSelected`); `make test-cli` the
    # other three
    [pytest.param("a", 2, marks=pytest.mark.slow), ("a", 4), pytest.param("b", 2, marks=pytest.mark.slow),
     pytest.param("b", 4, marks=pytest.mark.slow)],
)
def test_pal_chooses_the_true_number_of_groups(variant, groups):
    # labels drawn from each group's Bradley-Terry model: some contradict the group, so a sharper
    # fit is not automatically a likelier one
    batch, truth = opposed_population(n_users=32, pairs_per_user=40, groups=groups, seed=2)
    train, val = _held_out(batch, 32, 40, 10)
    model = KSelected(
        f"pal-{variant}",
        lambda k: PALPreference(PALConfig(variant=variant, k=k, input_dim=16, latent_dim=8, hidden=32), FAST),
        KSearch(k_max=groups + 2),
    )
    metrics = model.fit(train, val)
    selection = model.selection
    assert metrics["k_selected"] == groups, selection.report()
    # the next smaller K (one prototype short) is worse by more than its standard error
    assert selection.criterion[groups - 1] < selection.criterion[groups] - selection.standard_error[groups - 1]
    assert model.model.config.k == groups
    clusters = model.user_clusters()
    assert adjusted_rand_score(truth, [clusters[u] for u in batch.users]) > 0.9
