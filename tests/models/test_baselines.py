"""Bradley-Terry baselines on a real persona population with two opposed groups."""

import pytest

from pluralign.data.persona import PersonaConfig, build_persona
from pluralign.evaluation import evaluate
from pluralign.reward.bt import PerUserBT, SingleBT


@pytest.fixture(scope="module")
def opposed(shared_data):
    return build_persona(
        PersonaConfig(groups=2, users_per_group=8, unseen_users_per_group=4, comparisons_per_user=40, seed=0),
        shared_data,
    )


def test_single_bt_cannot_fit_two_opposed_groups(opposed, minilm):
    report = evaluate(SingleBT(), opposed, minilm, shots=(5,))
    # one reward for everyone: whatever it learns, one of the two groups is served badly
    assert report["worst_group_acc"] < 0.6
    assert 0.35 < report["seen_pooled_acc"] < 0.65


def test_per_user_bt_fits_seen_users(opposed, minilm):
    report = evaluate(PerUserBT(), opposed, minilm, shots=(1, 20))
    assert report["seen_macro_acc"] > 0.8
    assert report["worst_group_acc"] > 0.75
    # with 20 shots a new user is learned far better than with 1
    assert report["unseen_acc_by_k"]["20"] > report["unseen_acc_by_k"]["1"]
    assert set(report) >= {"seen_macro_acc", "seen_pooled_acc", "unseen_acc_by_k", "group_acc", "worst_group_acc", "seconds"}


def test_per_user_accuracies_are_the_units_of_the_macro_figure(opposed, minilm):
    report = evaluate(PerUserBT(), opposed, minilm, shots=(), per_user=True)
    per_user = report["seen_user_acc"]
    assert set(per_user) == {r.user_id for r in opposed.seen.test}  # keyed by user id, every seen user
    assert sum(per_user.values()) / len(per_user) == pytest.approx(report["seen_macro_acc"])
    assert "seen_user_acc" not in evaluate(PerUserBT(), opposed, minilm, shots=())
